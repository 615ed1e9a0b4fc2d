"""prepare hf / openwebtext through HF datasets, on a local JSON file (no network): GPT-2 BPE into uint16 bins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.data.dataset import load_meta, open_split
from nanodlm.data.tokenizers import GPT2Tokenizer

datasets = pytest.importorskip("datasets")


@pytest.fixture
def gpt2_tok():
    try:
        return GPT2Tokenizer()
    except UserError as e:
        pytest.skip(f"GPT-2 BPE files unavailable offline: {e}")


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, list[str]]:
    docs = [f"Document {i}: the quick brown fox jumps over {i} lazy dogs.\nSecond line {i * i}." for i in range(200)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path, docs


def test_prepare_hf_local_json(tmp_path: Path, corpus, gpt2_tok, capsys) -> None:
    path, docs = corpus
    data_dir = tmp_path / "data"
    assert main(["prepare", "hf", "--name=json", f"--data_files={path}", "--text_field=body", "--val_fraction=0.05",
                 f"--data_dir={data_dir}", "--num_proc=2"]) == 0
    assert "data/corpus: vocab 50257" in capsys.readouterr().out
    meta = load_meta(str(data_dir), "corpus")
    assert meta["tokenizer"] == "gpt2" and meta["train_documents"] == 190 and meta["val_documents"] == 10
    train, val = open_split(str(data_dir), "corpus", "train"), open_split(str(data_dir), "corpus", "val")
    assert train.dtype == np.uint16 and len(train) == meta["train_tokens"] and len(val) == meta["val_tokens"]
    # every document is its BPE tokens followed by <|endoftext|>; together they are the whole corpus
    assert (np.asarray(train) == 50256).sum() == 190 and (np.asarray(val) == 50256).sum() == 10
    expected = sum(len(gpt2_tok.encode(d)) + 1 for d in docs)
    assert len(train) + len(val) == expected
    texts = gpt2_tok.decode(np.asarray(val)).split("<|endoftext|>")[:-1]
    assert len(texts) == 10 and all(t in docs for t in texts)


def test_prepare_hf_errors(tmp_path: Path, corpus, capsys) -> None:
    path, _ = corpus
    assert main(["prepare", "hf", "--name=json", f"--data_files={path}", "--text_field=text",
                 f"--data_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    line = err.splitlines()[-1]  # datasets' progress bars come before it
    assert line.startswith("error: ") and "no column 'text'" in line and "body" in line
    assert main(["prepare", "hf", f"--data_dir={tmp_path}"]) == 1
    assert "needs --name" in capsys.readouterr().err
