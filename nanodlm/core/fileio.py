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


def read_text_file(path: Path, what: str) -> str:
    """A user's UTF-8 text file (a prompt, samples): one-line UserError naming ``what`` when it is missing, a folder,
    not a regular file (a device, a pipe), unreadable or not UTF-8."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; give a text file")
    if path.exists() and not path.is_file():
        raise UserError(f"{what} {path} is not a regular file (a device, pipe or socket); give a text file")
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {what} {path} ({e.strerror or type(e).__name__})") from None
    # universal newlines, as Path.read_text gives them: \r\n and \r read as \n
    return decode_text(raw, f"{what} {path}").replace("\r\n", "\n").replace("\r", "\n")


def decode_text(raw: bytes, where: str) -> str:
    """UTF-8 bytes -> text; a one-line UserError naming ``where`` when they are not UTF-8, or hold a NUL byte
    (text never does: UTF-16 without a byte-order mark decodes as UTF-8 with a NUL beside every ASCII letter)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{where} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise UserError(f"{where} holds a NUL character (at character {nul}), which text does not: is it UTF-16 or "
                        "binary? convert it to UTF-8 text")
    return text


def read_json(path: Path, what: str, kind: type = dict, hint: str = "") -> Any:
    """A JSON file the project reads back (a run's sidecar, a cached run, a result, a dataset's meta.json): its
    value, a ``kind``; every problem (missing, not UTF-8, truncated, the wrong type) is a one-line UserError that
    names ``what`` and the file and ends with ``hint``. The one reader for them all (tests/test_fileio.py)."""
    return parse_json(_read(path, what, hint), f"{what} {path}", kind, hint)


def _read(path: Path, what: str, hint: str) -> str:
    try:
        return read_text_file(path, what)
    except UserError as e:
        raise UserError(f"{e}{hint}") from None


def read_jsonl(path: Path, what: str, kind: type = dict, hint: str = "") -> list[Any]:
    """A JSON-lines file read back (a metrics log, samples): one ``kind`` per non-blank line; a broken line (a
    crash cut it short) is a one-line UserError naming the file and the line."""
    lines = _read(path, what, hint).splitlines()
    return [parse_json(line, f"{what} {path} line {n}", kind, hint) for n, line in enumerate(lines, 1) if line.strip()]


def parse_json(text: str, where: str, kind: type, hint: str = "") -> Any:
    """``json.loads(text)``, which must give a ``kind`` (dict, str, ...); otherwise a UserError naming ``where``
    (e.g. "config file 'x.json'", "out.jsonl line 3") and ending with ``hint``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg}){hint}") from None
    except (RecursionError, ValueError) as e:  # nested too deeply; an integer of over 4,300 digits
        raise UserError(f"{where} is not valid JSON ({type(e).__name__}: {str(e)[:80]}){hint}") from None
    if not isinstance(value, kind):
        raise UserError(f"{where} holds a {type(value).__name__}, not a JSON {kind.__name__}{hint}")
    return value


# --- outputs: never over a checkpoint, a dataset, a run's own files or a file of another kind ----------------

PROTECTED_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".npy", ".npz")  # weights and token files
RUN_FILE_NAMES = ("ckpt.pt", "best.pt", "ckpt.json", "best.json", "metrics.jsonl", "meta.json", "train.bin",
                  "val.bin", ".lock")  # a training run's and a dataset's own files
BINARY_MAGIC = {b"PK\x03\x04": "a zip archive (a torch checkpoint?)", b"\x80": "a pickle (a checkpoint?)",
                b"GIF8": "a GIF image", b"\x89PNG": "a PNG image", b"\x7fELF": "a program"}


def _existing_kind(target: Path) -> str | None:
    """What an existing file holds when it is binary (by its first bytes), else None (text)."""
    try:
        with open(target, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for magic, kind in BINARY_MAGIC.items():
        if head.startswith(magic):
            return kind
    return "binary data" if b"\x00" in head else None


def check_output_path(path: str | Path, flag: str, suffixes: tuple[str, ...] = (".json", ""),
                      binary_ok: tuple[str, ...] = (), make_folder: bool = False) -> None:
    """Fail before any work when ``path`` must not or cannot be written (one-line UserError):

    a folder; a checkpoint, token file or a run's/dataset's own file (``ckpt.pt``, ``ckpt.json``, ``meta.json``
    ...), existing or not; an existing file of another kind (a suffix outside ``suffixes``, or binary content
    other than the ``binary_ok`` kinds); a folder that does not exist (unless the writer makes it:
    ``make_folder``) or is not writable. ``-`` (stdout) passes.
    """
    if str(path) == "-":
        return
    try:
        _check_output(Path(path), str(path), flag, suffixes, binary_ok, make_folder)
    except OSError as e:  # a name too long, a path through a file, no permission to look
        raise UserError(f"{flag}={str(path)[:80]}: {e.strerror or type(e).__name__}; choose another path") from None


def _check_output(target: Path, path: str, flag: str, suffixes: tuple[str, ...], binary_ok: tuple[str, ...],
                  make_folder: bool) -> None:
    folder = target.parent
    if path == "" or target.is_dir():
        raise UserError(f"{flag}={path} is a folder (or empty); give a file name ending in {suffixes[0]}")
    suffix = target.suffix.lower()
    if suffix in PROTECTED_SUFFIXES or target.name in RUN_FILE_NAMES:
        raise UserError(f"{flag}={path} would be written over a checkpoint, dataset or run file; give a file "
                        f"name ending in {suffixes[0]}")
    if target.exists():
        if not target.is_file():
            raise UserError(f"{flag}={path} exists and is not a regular file; choose another path")
        kind = _existing_kind(target)
        if kind is not None and kind not in binary_ok:
            raise UserError(f"{flag}={path} exists and holds {kind}; it is not replaced: choose another path")
        if suffix not in suffixes:
            raise UserError(f"{flag}={path} exists and is not a {'/'.join(suffixes)} file; it is not replaced: "
                            "choose another path")
    if make_folder:
        return
    if not folder.is_dir():
        raise UserError(f"{flag}={path}: folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{flag}={path}: folder {folder} is not writable; choose another path")
