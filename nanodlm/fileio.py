"""Files: written all or nothing (checkpoints, datasets, reports), and JSON read with a one-line error."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UserError


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


def parse_json(text: str, where: str, kind: type, hint: str = "") -> Any:
    """``json.loads(text)``, which must give a ``kind`` (dict, str, ...); otherwise a UserError naming ``where``
    (e.g. "config file 'x.json'", "out.jsonl line 3") and ending with ``hint``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg}){hint}") from None
    if not isinstance(value, kind):
        raise UserError(f"{where} holds a {type(value).__name__}, not a JSON {kind.__name__}{hint}")
    return value
