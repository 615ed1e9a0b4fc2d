"""The out_dir of a training run: what may be written there, by whom, and how it is kept consistent.

``open_run_dir`` is called once, on the master process, before any compute: it makes sure out_dir is a
writable folder, refuses a scratch run over a trained model (unless ``overwrite``), takes a lock so two
trainings never write one out_dir, removes temp files a killed save left behind, and makes the
``ckpt.json`` / ``best.json`` sidecars agree with their checkpoints again after a crash between the two writes.

The lock is ``fcntl.flock`` on ``out_dir/.lock``: the kernel drops it when the process dies (even on
kill -9), so a stale lock never blocks; the file also records the holder's pid for the message.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.fileio import atomic_write, parse_json, read_json
from ..model.config import ModelArgs
from .checkpoint import load_checkpoint

CHECKPOINTS = ("ckpt.pt", "best.pt")
PROBE_BYTES = 64 * 1024  # what the start-up write test writes (and removes)
RUN_FILES = ("ckpt.pt", "ckpt.json", "best.pt", "best.json", "metrics.jsonl", "loss.png")
# the model keys that fix the weights (all but the dropouts): on resume they come from the checkpoint, a
# contradicting flag is an error
DROPOUT_KEYS = ("dropout", "attn_dropout")
SHAPE_KEYS = tuple(f.name for f in fields(ModelArgs) if f.name not in DROPOUT_KEYS)


class RunDir:
    """A locked out_dir; ``close()`` (or the context manager) releases the lock."""

    def __init__(self, path: Path, lock_fd: int | None, made: Path | None = None, lock_made: bool = False) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.made = made  # the outermost folder open_run_dir created, or None
        self.lock_made = lock_made  # the lock file is this run's own (there was none)

    def discard_if_empty(self) -> None:
        """After a run that failed before writing anything: remove the folders ``open_run_dir`` made (nothing but
        the lock file in them) or the lock file it made, so a failing command leaves nothing behind."""
        if self.lock_made and self.made is None:
            (self.path / ".lock").unlink(missing_ok=True)  # while still held: no one else took it in between
        self.close()
        if self.made is None:
            return
        left = [p for p in self.path.rglob("*") if p.name != ".lock"] if self.path.is_dir() else []
        if not left:
            (self.path / ".lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                for folder in [self.path, *self.path.parents]:
                    folder.rmdir()
                    if folder == self.made:
                        break

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _os_reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def ensure_writable_dir(path: Path, what: str, flag: str) -> None:
    """Create ``path`` if needed and prove a file can be written there; a one-line UserError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        try:  # real bytes, flushed: an empty file is created even on a full disk, which then fails mid-run
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UserError(f"{what} {path} is not writable ({_os_reason(e)}); choose another {flag}") from None


def _take_lock(out_dir: Path) -> int:
    import fcntl

    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UserError(f"out_dir {out_dir} is in use by another training (pid {holder}); wait for it to finish, "
                        "or train into another --out_dir") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:  # a disk that filled up since the write test
        os.close(fd)
        raise UserError(f"out_dir {out_dir} is not writable ({_os_reason(e)}); free space or choose another "
                        "--out_dir") from None
    return fd


def remove_orphaned_temps(out_dir: Path) -> list[Path]:
    """Temp files of saves that a crash interrupted (``.ckpt.pt.XXXX.tmp``, each a full model); needs the lock."""
    removed = []
    for name in (*CHECKPOINTS, "ckpt.json", "best.json", "metrics.jsonl"):
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def sync_sidecars(out_dir: Path) -> None:
    """Rewrite ``ckpt.json``/``best.json`` from their checkpoint when a crash left them behind (they are written
    second, so a kill between the two writes leaves the sidecar one save behind)."""
    for name in CHECKPOINTS:
        ckpt_path = out_dir / name
        if not ckpt_path.exists():
            continue
        side = ckpt_path.with_suffix(".json")
        try:
            meta = load_checkpoint(ckpt_path)["meta"]
        except UserError:
            continue  # a damaged checkpoint: resume (or sample) says so when it reads it

        text = json.dumps(meta, indent=2, default=str)
        try:
            current = side.read_text()
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            atomic_write(side, text.encode())


def saved_iter(out_dir: Path) -> int | None:
    """The iteration a run's ``ckpt.json`` sidecar records, None without one (never saved, or a kill between the
    checkpoint and its sidecar); a damaged sidecar is a one-line error naming it."""
    path = out_dir / "ckpt.json"
    if not path.exists():
        return None
    hint = "; delete it and run again: the run resumes from ckpt.pt, which writes it anew"
    it = read_json(path, "run sidecar", dict, hint).get("iter_num", 0)
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise UserError(f"run sidecar {path} says iter_num {it!r}, not a count of iterations{hint}")
    return it


def open_run_dir(out_dir: str | Path, init_from: str, overwrite: bool) -> RunDir:
    """Check, lock and tidy out_dir before training (master process only). See the module docstring."""
    path = Path(out_dir)
    if init_from == "resume" and not (path / "ckpt.pt").is_file():  # before creating anything
        raise UserError(f"no checkpoint at {path / 'ckpt.pt'}: train a model first or check --out_dir")
    made = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)  # the outermost one to make
    lock_made = not (path / ".lock").exists()
    ensure_writable_dir(path, "out_dir", "--out_dir")
    fd = _take_lock(path)
    try:
        trained = [n for n in CHECKPOINTS if (path / n).exists()]
        if init_from != "resume" and trained:  # scratch, or a new run from other weights
            if not overwrite:
                raise UserError(f"{path} already holds a trained model ({', '.join(trained)}): continue it with "
                                "--init_from=resume, train into another --out_dir, or replace it with --overwrite=True")
            for name in RUN_FILES:  # a fresh run: nothing of the old one may be mixed into it
                (path / name).unlink(missing_ok=True)
        remove_orphaned_temps(path)
        sync_sidecars(path)
    except BaseException:
        os.close(fd)
        raise
    return RunDir(path, fd, made, lock_made)


def truncate_metrics(metrics_path: Path, iter_num: int) -> None:
    """On resume at ``iter_num``: drop log rows from iterations the resumed run will log again (no duplicates)."""
    if not metrics_path.exists():
        return
    try:  # a damaged byte (not UTF-8) loses its line, not the run
        lines = metrics_path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"cannot read {metrics_path} ({e.strerror or type(e).__name__}); move it away to resume"
                        ) from None
    keep = []
    for line in lines:
        try:
            row = parse_json(line, str(metrics_path), object)
        except UserError:
            continue  # a line a crash cut short: the resumed run logs that iteration again
        it = row.get("iter") if isinstance(row, dict) else None
        if isinstance(it, int | float) and it < iter_num:
            keep.append(line)
    if len(keep) != len(lines):
        try:
            atomic_write(metrics_path, "".join(line + "\n" for line in keep).encode())
        except OSError as e:
            raise UserError(f"could not rewrite {metrics_path} ({e.strerror or type(e).__name__}): free space or fix "
                            "permissions, then resume again") from None


def check_resume(cfg: Any, model_args: dict[str, Any], ckpt_meta: dict[str, Any], data_meta: dict[str, Any],
                 out_dir: Path) -> dict[str, Any]:
    """A resumed run must have the checkpoint's architecture and vocabulary; one-line errors naming both values.
    Returns the model to build: the checkpoint's ``model_args`` with the keys a resume may change (DROPOUT_KEYS:
    no weights depend on them) taken from ``cfg``."""
    configured = ckpt_meta.get("config") or {}
    for key in SHAPE_KEYS:
        if key not in model_args:  # load_checkpoint fills the keys older checkpoints lack
            continue
        saved = model_args[key]
        wanted = cfg.resolved_pos_emb if key == "pos_emb" else getattr(cfg, key)
        if wanted is None or wanted == saved:  # None: a key left to its automatic choice
            continue
        if key in configured and getattr(cfg, key) == configured[key]:
            continue  # the run's own setting, which its weights overrode (init_from adapted another architecture)
        raise UserError(f"--{key}={wanted} contradicts the checkpoint in {out_dir} ({key}={saved}): on resume the "
                        "model comes from the checkpoint; drop the flag, or train from scratch elsewhere")
    saved_data = ckpt_meta.get("dataset_meta") or {}
    saved_vocab = saved_data.get("vocab_size")
    if saved_vocab is None:
        saved_vocab = model_args.get("vocab_size", 0) - int(model_args.get("model_type") == "diffusion")
    same_itos = ckpt_meta.get("itos") is None or data_meta.get("itos") is None or ckpt_meta["itos"] == data_meta["itos"]
    if int(data_meta["vocab_size"]) != int(saved_vocab) or not same_itos:
        was = saved_data.get("dataset", "?")
        raise UserError(f"dataset '{cfg.dataset}' has a different vocabulary (vocab_size {data_meta['vocab_size']}) "
                        f"than the checkpoint in {out_dir} (trained on '{was}', vocab_size {saved_vocab}); resume "
                        f"with the dataset it was trained on (--dataset={was})")
    return {**model_args, **{k: getattr(cfg, k) for k in DROPOUT_KEYS}}


def nothing_to_resume(cfg: Any, done: int, master: bool) -> dict[str, Any]:
    """A resume with nothing left to train: refused below the run's iteration (a typo would otherwise re-evaluate
    and re-save the checkpoint), a no-op with a message at it (the run is finished)."""
    if done > cfg.max_iters:
        raise UserError(f"max_iters={cfg.max_iters} is below the iteration of the run in {cfg.out_dir} ({done}): "
                        f"to train on, raise --max_iters above {done}; to evaluate it, add --eval_only=True")
    if master:
        print(f"nothing to train: the run in {cfg.out_dir} is at iter {done} = max_iters; raise --max_iters to "
              "continue it (nothing was written)", flush=True)
    return {"interrupted": False, "iter_num": done}


def load_optimizer(ckpt: dict[str, Any], optimizer: Any, scaler: Any, path: Path, master: bool) -> None:
    """The optimizer (and grad scaler) state of a resumed run. A checkpoint without one (a hand-made or trimmed
    file) resumes with fresh AdamW moments, said once; one that does not fit the model is a one-line error."""
    if "optimizer" not in ckpt:
        if master:
            print(f"warning: {path} has no optimizer state: AdamW restarts from zero moments", file=sys.stderr)
        return
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
        raise UserError(f"{path}: its optimizer state does not fit the model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''}); the file was altered") from None
