"""Datasets on disk: prepare, memmapped splits and random batches (the tokenizers: ``tokenizers.py``).

A prepared dataset is a folder ``<data_dir>/<name>/`` holding ``train.bin`` and ``val.bin`` (flat token ids,
uint16, or uint32 when the vocabulary does not fit) and ``meta.json`` (vocab_size, tokenizer, itos for char,
dtype, token counts, sha256 of the source text). The split follows nanoGPT: the first 90% of the characters
train, the last 10% validate; BPE encodes each part separately with ``encode_ordinary``.

The data vocabulary never contains ``[MASK]``; a diffusion model adds it as id ``vocab_size``, which
``Tokenizer.decode`` renders as ``mask_glyph``.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from ..core.fileio import atomic_write, decode_text, read_json
from .datadir import recover_dataset, write_dataset
from .tokenizers import TOKENIZERS, CharTokenizer, GPT2Tokenizer, Tokenizer

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
DATASETS = ("shakespeare_char", "shakespeare", "text")
SPLITS = ("train", "val")


# --- fetching the canonical corpus ------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_dir() -> Path:
    """``$NANODLM_CACHE_DIR`` or ``~/.cache/nanodlm``."""
    env = os.environ.get("NANODLM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nanodlm"


def fetch_shakespeare() -> tuple[bytes, str]:
    """The canonical tiny-shakespeare bytes and where they came from: mirror (``$NANODLM_DATA_MIRROR``),
    else the cache, else a download (then cached). The sha256 is always checked."""
    mirror = os.environ.get("NANODLM_DATA_MIRROR")
    if mirror:
        path = Path(mirror).expanduser() / SHAKESPEARE_FILE
        if not path.is_file():
            raise UserError(f"NANODLM_DATA_MIRROR is set but {path} does not exist; put {SHAKESPEARE_FILE} there "
                            "or unset NANODLM_DATA_MIRROR")
        data = path.read_bytes()
        _check_sha(data, str(path), "replace it with the canonical file or unset NANODLM_DATA_MIRROR")
        return data, str(path)

    cached = cache_dir() / SHAKESPEARE_FILE
    if cached.is_file():
        data = cached.read_bytes()
        if _sha256(data) == SHAKESPEARE_SHA256:
            return data, str(cached)
        # a corrupt cache is not the user's fault: fall through and download again

    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=60) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"could not download tiny shakespeare from {SHAKESPEARE_URL} ({reason}); "
            f"pass --input FILE or set NANODLM_DATA_MIRROR to a folder holding {SHAKESPEARE_FILE}"
        ) from None
    _check_sha(data, SHAKESPEARE_URL, "pass --input FILE or set NANODLM_DATA_MIRROR to a folder with the right file")
    atomic_write(cached, data)
    return data, SHAKESPEARE_URL


def _check_sha(data: bytes, where: str, fix: str) -> None:
    got = _sha256(data)
    if got != SHAKESPEARE_SHA256:
        raise UserError(f"sha256 of {where} is {got[:12]}..., expected {SHAKESPEARE_SHA256[:12]}... "
                        f"(not the canonical tiny shakespeare); {fix}")


# --- prepare ----------------------------------------------------------------------------------------


def dtype_for(vocab_size: int) -> str:
    """uint16 holds ids up to 65535; bigger vocabularies need uint32."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def prepare(name: str, *, input_path: str | None = None, data_dir: str = "data", out_name: str | None = None,
            tokenizer: str = "char", val_fraction: float = 0.1) -> dict:
    """Tokenize a corpus into ``<data_dir>/<out_name or name>/{train,val}.bin`` + ``meta.json``; return meta.

    ``shakespeare_char`` (char) and ``shakespeare`` (gpt2) use the canonical file unless ``input_path`` is
    given; ``text`` needs ``input_path`` and ``out_name`` and uses ``tokenizer`` (char | gpt2).
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if tokenizer not in TOKENIZERS:
        raise UserError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if name == "text":
        if not input_path or not out_name:
            raise UserError("dataset 'text' needs --input FILE and --name NAME")
    elif name == "shakespeare_char" and tokenizer != "char":
        raise UserError("shakespeare_char is character-level; use `nanodlm prepare shakespeare` for GPT-2 BPE")
    kind = "gpt2" if name == "shakespeare" else tokenizer  # shakespeare is BPE by definition
    out_name = out_name or name
    if out_name in ("", ".", "..") or "/" in out_name or os.sep in out_name:
        raise UserError(f"--name must be a plain folder name, got {out_name!r}")

    if input_path:
        path = Path(input_path).expanduser()
        if path.is_dir():
            raise UserError(f"--input {path} is a folder; give a text file")
        if path.exists() and not path.is_file():
            raise UserError(f"--input {path} is not a regular file (a device, pipe or socket); give a text file")
        if not path.is_file():
            raise UserError(f"input file {path} does not exist; check the --input path")
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read --input {path} ({e.strerror or type(e).__name__})") from None
        source = str(path)
    else:
        raw, source = fetch_shakespeare()
    text = decode_text(raw, source)  # UTF-8 without NUL: a UTF-16 file without a byte-order mark is refused

    n = len(text)
    split = int(n * (1.0 - val_fraction))  # nanoGPT: first 90% of the characters train
    if split == 0 or split == n:
        raise UserError(f"{source} has {n} characters, too few to split with val_fraction={val_fraction}; "
                        "use a longer text")
    train_text, val_text = text[:split], text[split:]

    if kind == "char":
        tok: Tokenizer = CharTokenizer(sorted(set(text)))
    else:
        tok = GPT2Tokenizer()
    dtype = dtype_for(tok.vocab_size)
    train_ids = np.array(tok.encode(train_text), dtype=dtype)
    val_ids = np.array(tok.encode(val_text), dtype=dtype)

    meta: dict = {
        "dataset": out_name,
        "vocab_size": tok.vocab_size,
        "tokenizer": kind,
        "dtype": dtype,
        "train_tokens": int(train_ids.size),
        "val_tokens": int(val_ids.size),
        "val_fraction": val_fraction,
        "source": source,
        "source_sha256": _sha256(raw),
    }
    if isinstance(tok, CharTokenizer):
        meta["itos"] = tok.itos

    write_dataset(Path(data_dir) / out_name, {
        "train.bin": train_ids.tobytes(),
        "val.bin": val_ids.tobytes(),
        "meta.json": (json.dumps(meta, indent=1) + "\n").encode("utf-8"),
    })
    return meta


# --- loading ----------------------------------------------------------------------------------------


def _prepare_hint(dataset: str, data_dir: str | None = None) -> str:
    """The command that prepares ``dataset`` (again): its own for the built-in ones, ``prepare text`` otherwise."""
    where = f" --data_dir={data_dir}" if data_dir not in (None, "data") else ""
    if dataset in DATASETS and dataset != "text":
        return f"run `nanodlm prepare {dataset}{where}`"
    return f"prepare it from its text: `nanodlm prepare text --input FILE --name {dataset}{where}`"


TOKEN_DTYPES = {"uint16": 65536, "uint32": 2**32}  # the dtypes prepare writes, and the vocabulary each holds
FULL_SCAN = 2**27  # a split of up to this many ids is checked against the vocabulary whole when opened
ID_SAMPLE = 1 << 16  # a larger one: this many ids, spread over the file


def load_meta(data_dir: str, dataset: str) -> dict:
    """``<data_dir>/<dataset>/meta.json`` as a dict, checked: vocab_size an int in [2, 2**32), dtype one that
    prepare writes and wide enough for the vocabulary, token counts (when recorded) non-negative ints."""
    folder = Path(data_dir) / dataset
    if not folder.is_dir():
        recover_dataset(folder)  # a prepare killed between its two renames left the old dataset beside it
    if not folder.is_dir():  # prepared in another folder (the run's data_dir was relative, or moved), or never
        raise UserError(f"dataset {dataset!r} not found: {folder} does not exist; if it was prepared elsewhere, "
                        f"give --data_dir=THAT_FOLDER, else {_prepare_hint(dataset, data_dir)}")
    path = folder / "meta.json"
    if not path.is_file():
        raise UserError(f"{path} is missing (dataset not prepared or preparation interrupted); "
                        f"{_prepare_hint(dataset)}")
    meta = read_json(path, "dataset meta", dict, f"; {_prepare_hint(dataset)}")
    if "vocab_size" not in meta:
        raise UserError(f"{path} has no vocab_size; {_prepare_hint(dataset)}")
    check_meta(meta, path, _prepare_hint(dataset))
    return meta


def check_meta(meta: dict, path: Path | str, hint: str) -> None:
    """The boundary check of a dataset's meta.json (one-line UserError naming the key and ``hint``)."""
    vocab = meta["vocab_size"]
    if isinstance(vocab, bool) or not isinstance(vocab, int) or not 2 <= vocab < 2**32:
        raise UserError(f"{path}: vocab_size must be an integer >= 2; got {vocab!r}; {hint}")
    dtype = meta.get("dtype", "uint16")
    if dtype not in TOKEN_DTYPES:
        raise UserError(f"{path}: dtype must be one of {', '.join(TOKEN_DTYPES)} (token ids); got {dtype!r}; {hint}")
    if vocab > TOKEN_DTYPES[dtype]:
        raise UserError(f"{path}: dtype {dtype} cannot hold vocab_size {vocab}; {hint}")
    for key in ("train_tokens", "val_tokens"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UserError(f"{path}: {key} must be a count of tokens; got {value!r}; {hint}")
    tokenizer = meta.get("tokenizer")
    if tokenizer is not None and tokenizer not in TOKENIZERS:
        raise UserError(f"{path}: unknown tokenizer {tokenizer!r} (expected one of {TOKENIZERS}); {hint}")


def open_split(data_dir: str, dataset: str, split: str) -> np.memmap:
    """The token ids of one split, memory-mapped read-only (1D, dtype from meta.json), checked on open: the file
    size agrees with the dtype and the recorded token count, and a sample of ids lies inside the vocabulary."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    meta = load_meta(data_dir, dataset)
    hint = _prepare_hint(dataset)
    dtype = np.dtype(meta.get("dtype", "uint16"))
    path = Path(data_dir) / dataset / f"{split}.bin"
    if not path.is_file():
        raise UserError(f"{path} is missing; {hint}")
    size = path.stat().st_size
    if size == 0 or size % dtype.itemsize:
        raise UserError(f"{path} has {size} bytes, not a whole number of {dtype} tokens; {hint}")
    expected = meta.get(f"{split}_tokens")
    if expected is not None and size != expected * dtype.itemsize:
        raise UserError(f"{path} has {size} bytes but meta.json records {expected:,} {dtype} tokens "
                        f"({expected * dtype.itemsize:,} bytes): its dtype or the file is wrong; {hint}")
    data = np.memmap(path, dtype=dtype, mode="r")
    # every id of a file up to FULL_SCAN ids (a fraction of a second), else ids spread evenly over it (ends
    # included): a wrong dtype or a corrupted file shows up here, not as an index error mid-run
    if len(data) <= FULL_SCAN:
        top = int(data.max())
    else:
        top = int(np.asarray(data[np.linspace(0, len(data) - 1, ID_SAMPLE).astype(np.int64)]).max())
    if top >= meta["vocab_size"]:
        raise UserError(f"{path} holds token id {top}, outside the vocabulary of {meta['vocab_size']} in meta.json: "
                        f"the file or its meta.json is corrupt; {hint}")
    return data


def get_batch(data: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator,
              device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """B random windows of ``data``: x (B, T) int64 and y = x shifted left by one (next tokens)."""
    if batch_size < 1 or block_size < 1:
        raise UserError(f"batch_size and block_size must be positive, got {batch_size} and {block_size}")
    if len(data) < block_size + 1:
        raise UserError(f"corpus has {len(data)} tokens but block_size {block_size} needs at least "
                        f"{block_size + 1}; use a smaller block_size or more text")
    # offsets from the (CPU) generator so a seed fixes the batch sequence, as in nanoGPT
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
    rows = ix[:, None] + np.arange(block_size + 1)  # (B, T+1) indices into data
    chunk = torch.from_numpy(np.asarray(data[rows]).astype(np.int64))  # (B, T+1)
    x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
    if torch.device(device).type == "cuda":
        # pinned host memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
