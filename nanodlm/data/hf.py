"""Corpora from Hugging Face ``datasets`` (optional extra: ``pip install 'nanodlm[hf]'``), GPT-2 BPE into memmaps.

``prepare_hf`` loads a dataset by name (``openwebtext``, ``roneneldan/TinyStories`` ...) or a local file through
a builder (``name="json", data_files="corpus.jsonl"``; also parquet, csv, text), tokenises each document with
tiktoken's GPT-2 BPE in parallel (``datasets.map`` with ``num_proc`` processes), appends the end-of-text token
(50256) after every document as nanoGPT's ``openwebtext/prepare.py`` does, and writes ``train.bin`` / ``val.bin``
(uint16) + ``meta.json`` with a progress bar. When the dataset has no validation split a random
``val_fraction`` of its documents becomes one (nanoGPT: 0.0005 of OpenWebText, seed 2357).

Every file is written to a temporary name and renamed when complete; ``meta.json`` comes last, so a folder
with a ``meta.json`` holds complete bins.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.fileio import atomic_write

EOT = 50256  # GPT-2's <|endoftext|>, the document separator
OPENWEBTEXT = dict(name="openwebtext", split="train", text_field="text", val_fraction=0.0005, seed=2357)
_ENCODER = None  # one tiktoken encoder per worker process


def _encode_batch(batch: dict[str, list], text_field: str) -> dict[str, list]:
    global _ENCODER
    if _ENCODER is None:
        import tiktoken

        _ENCODER = tiktoken.get_encoding("gpt2")
    ids = _ENCODER.encode_ordinary_batch(batch[text_field])
    ids = [doc + [EOT] for doc in ids]
    return {"ids": ids, "len": [len(doc) for doc in ids]}


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise UserError("prepare hf / openwebtext needs datasets: pip install 'nanodlm[hf]'") from None
    return datasets


def default_out_name(name: str, data_files: str | None) -> str:
    """A folder name for a dataset: the file's stem for a local file, else the name with / replaced."""
    base = Path(data_files).stem if data_files else name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "hf"


def _load(name: str, split: str, config: str | None, data_files: str | None, num_proc: int):
    datasets = _import_datasets()
    kwargs: dict[str, Any] = {"data_files": data_files} if data_files else {}
    try:
        return datasets.load_dataset(name, config, split=split, num_proc=num_proc if not data_files else None,
                                     **kwargs)
    except FileNotFoundError as e:
        raise UserError(f"dataset {name!r} not found ({str(e).splitlines()[0][:160]}): check --name / --data_files, "
                        "or the network for a hub dataset") from None
    except ValueError as e:  # e.g. an unknown split: datasets names the ones there are
        raise UserError(f"dataset {name!r}: {str(e).splitlines()[0][:200]}") from None
    except ConnectionError as e:
        raise UserError(f"could not reach the Hugging Face hub for {name!r} ({e}); it is cached under $HF_HOME "
                        "once downloaded") from None


def write_bin(ds, path: Path, desc: str, shards: int = 64) -> int:
    """Concatenate the ``ids`` column of ``ds`` into a uint16 file at ``path`` (atomically); returns tokens."""
    from tqdm.auto import tqdm

    total = int(np.sum(ds["len"], dtype=np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    arr = np.memmap(tmp, dtype=np.uint16, mode="w+", shape=(max(total, 1),))
    shards = max(1, min(shards, len(ds)))
    at = 0
    for i in tqdm(range(shards), desc=f"writing {desc}"):
        chunk = ds.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
        ids = np.concatenate(list(chunk["ids"])) if len(chunk) else np.zeros(0, dtype=np.uint16)
        arr[at:at + len(ids)] = ids
        at += len(ids)
    arr.flush()
    del arr
    os.replace(tmp, path)
    return total


def prepare_hf(name: str, *, split: str = "train", text_field: str = "text", config: str | None = None,
               data_files: str | None = None, data_dir: str = "data", out_name: str | None = None,
               val_fraction: float = 0.0005, num_proc: int | None = None, seed: int = 2357) -> dict:
    """Tokenise a Hugging Face dataset into ``<data_dir>/<out_name>/{train,val}.bin`` + ``meta.json``."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    num_proc = max(1, num_proc or (os.cpu_count() or 2) // 2)
    out_name = out_name or default_out_name(name, data_files)
    ds = _load(name, split, config, data_files, num_proc)
    if text_field not in ds.column_names:
        raise UserError(f"dataset {name!r} has no column {text_field!r}; its columns: {', '.join(ds.column_names)} "
                        "(choose one with --text_field)")
    if len(ds) < 2:
        raise UserError(f"dataset {name!r} split {split!r} has {len(ds)} document(s); need at least 2 to split")
    parts = ds.train_test_split(test_size=val_fraction, seed=seed, shuffle=True)
    meta: dict[str, Any] = {"dataset": out_name, "vocab_size": 50257, "tokenizer": "gpt2", "dtype": "uint16",
                            "source": f"hf:{name}" + (f"/{config}" if config else "") + f"[{split}]"
                            + (f" files {data_files}" if data_files else ""),
                            "text_field": text_field, "val_fraction": val_fraction, "seed": seed}
    out = Path(data_dir) / out_name
    for part, key in (("train", "train"), ("val", "test")):
        tokenized = parts[key].map(_encode_batch, batched=True, fn_kwargs={"text_field": text_field},
                                   remove_columns=parts[key].column_names, num_proc=min(num_proc, len(parts[key])),
                                   desc=f"tokenizing {part}")
        meta[f"{part}_tokens"] = write_bin(tokenized, out / f"{part}.bin", part)
        meta[f"{part}_documents"] = len(parts[key])
    atomic_write(out / "meta.json", (json.dumps(meta, indent=1) + "\n").encode("utf-8"))
    return meta
