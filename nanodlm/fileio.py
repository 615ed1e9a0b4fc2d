"""Writing files all or nothing: the one helper checkpoints, datasets and reports share."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` (bytes, or a function of the open binary file) to ``path`` all or nothing.

    A temp file in the same directory, fsync, then rename: a reader (or a crash, even kill -9 mid-save)
    only ever sees the old file or the complete new one. The file gets the mode ``open()`` would give it
    (0666 minus the umask), not mkstemp's private 0600.
    """
    write = data if callable(data) else (lambda f: f.write(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask
