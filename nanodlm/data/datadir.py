"""A dataset folder written all at once.

The files go into a fresh folder beside the dataset (.NAME.new-PID-XXXX), which then takes the dataset's place
in one atomic exchange of the two folders (Linux renameat2). Where that call is missing, two renames: a crash
between them leaves the old dataset as .NAME.old-PID-XXXX, which the next prepare or load puts back. Either
way a reader (or a kill -9, or a full disk) sees the old dataset or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from pathlib import Path

from ..core.errors import UserError
from ..core.fileio import current_umask

DATASET_FILES = ("train.bin", "val.bin", "meta.json")  # what a prepared dataset folder holds (and may be replaced)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recover_dataset(folder: Path) -> None:
    """Tidy what an interrupted prepare of ``folder`` left beside it: put a displaced old dataset back if the
    dataset is missing, and delete staging folders whose process is gone."""
    parent = folder.parent
    if not parent.is_dir():
        return
    for kind in ("old", "new"):
        for left in sorted(parent.glob(f".{folder.name}.{kind}-*")):
            pid = left.name.split(f".{kind}-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
                continue  # another prepare is writing it now
            with contextlib.suppress(OSError):
                if kind == "old" and not folder.exists() and (left / "meta.json").is_file():
                    os.rename(left, folder)
                else:
                    shutil.rmtree(left)


def write_dataset(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` as the dataset ``folder``, all or nothing (see the banner above)."""
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        recover_dataset(folder)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} exists and is not a dataset folder; remove it or choose another --name")
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in DATASET_FILES) if folder.is_dir() else []
        if foreign:  # the swap below would delete them: a training run, someone's notes, ...
            raise UserError(f"{folder} holds files that are not a dataset's ({', '.join(foreign[:4])}); it is not "
                            "replaced: choose another --name or --data_dir")
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise UserError(f"cannot write to data_dir {parent} ({e.strerror or type(e).__name__}); choose a writable "
                        "--data_dir") from None
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700: give the folder the usual mode
        for name, data in files.items():
            with open(staging / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(staging)
        if not folder.exists():
            os.rename(staging, folder)
        elif _exchange(staging, folder):
            shutil.rmtree(staging)  # after the exchange it holds the old dataset
        else:
            old = parent / f".{folder.name}.old-{os.getpid()}-{staging.name.rsplit('-', 1)[-1]}"
            os.rename(folder, old)
            os.rename(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(parent)
    except OSError as e:  # full disk, read-only file system ...: the old dataset (if any) is untouched
        shutil.rmtree(staging, ignore_errors=True)
        kept = "the old dataset is unchanged" if (folder / "meta.json").is_file() else "nothing was written"
        raise UserError(f"could not write dataset {folder} ({e.strerror or type(e).__name__}); {kept}: free space "
                        "or choose another --data_dir") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
