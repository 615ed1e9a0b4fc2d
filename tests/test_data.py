"""prepare / tokenizers / memmapped splits / get_batch. Never touches the network."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHAKESPEARE, TIKTOKEN_CACHE

from nanodlm.core.errors import UserError
from nanodlm.data import dataset
from nanodlm.data.dataset import SHAKESPEARE_SHA256, dtype_for, get_batch, load_meta, open_split, prepare
from nanodlm.data.tokenizers import load_tokenizer

needs_shakespeare = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} absent")
needs_tiktoken = pytest.mark.skipif(not TIKTOKEN_CACHE.is_dir(), reason=f"{TIKTOKEN_CACHE} absent")
HELLO = "Hello world, to be or not to be."


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, an empty private cache, no mirror, and tiktoken's files from the shared folder."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("NANODLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NANODLM_DATA_MIRROR", raising=False)
    if TIKTOKEN_CACHE.is_dir():
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_CACHE))


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANODLM_DATA_MIRROR", str(SHAKESPEARE.parent))


def write_text(tmp_path: Path, text: str, name: str = "in.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- canonical datasets ----------------------------------------------------------------------------


@needs_shakespeare
def test_prepare_shakespeare_char(tmp_path: Path, mirror: None) -> None:
    meta = prepare("shakespeare_char", data_dir=str(tmp_path))
    assert meta["vocab_size"] == 65 and meta["tokenizer"] == "char" and meta["dtype"] == "uint16"
    assert (meta["train_tokens"], meta["val_tokens"]) == (1_003_854, 111_540)
    assert meta["source_sha256"] == SHAKESPEARE_SHA256
    assert len(meta["itos"]) == 65 and meta["itos"][0] == "\n"
    assert load_meta(str(tmp_path), "shakespeare_char") == json.loads(json.dumps(meta))
    train = open_split(str(tmp_path), "shakespeare_char", "train")
    val = open_split(str(tmp_path), "shakespeare_char", "val")
    assert train.dtype == np.uint16 and (len(train), len(val)) == (1_003_854, 111_540)
    tok = load_tokenizer(meta)
    assert tok.decode(train[:14]) == "First Citizen:"
    # the bins hold exactly the file: decoding both splits gives the text back
    assert tok.decode(train) + tok.decode(val) == SHAKESPEARE.read_text(encoding="utf-8")
    assert not [p for p in (tmp_path / "shakespeare_char").iterdir() if p.name.startswith(".")]  # no temp files


@needs_shakespeare
@needs_tiktoken
def test_prepare_shakespeare_bpe(tmp_path: Path, mirror: None) -> None:
    meta = prepare("shakespeare", data_dir=str(tmp_path))
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257 and meta["dtype"] == "uint16"
    assert meta["train_tokens"] + meta["val_tokens"] == 338_025
    assert "itos" not in meta
    assert len(open_split(str(tmp_path), "shakespeare", "val")) == meta["val_tokens"]


@needs_tiktoken
def test_gpt2_tokenizer_roundtrip_and_mask() -> None:
    tok = load_tokenizer({"tokenizer": "gpt2", "vocab_size": 50257})
    ids = tok.encode(HELLO)
    assert ids == [15496, 995, 11, 284, 307, 393, 407, 284, 307, 13]
    assert tok.decode(ids) == HELLO
    assert tok.vocab_size == tok.mask_id == 50257
    assert tok.decode([15496, tok.mask_id, 995]) == f"Hello{tok.mask_glyph} world"
    assert tok.decode([15496, 10**6]) == f"Hello{tok.unk_glyph}"  # never crashes on unknown ids
    assert tok.encode("<|endoftext|>") != [50256]  # special tokens in data are plain text


def test_shakespeare_mirror_sha_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "mirror"
    fake.mkdir()
    (fake / "tinyshakespeare.txt").write_text("not shakespeare\n" * 100)
    monkeypatch.setenv("NANODLM_DATA_MIRROR", str(fake))
    with pytest.raises(UserError, match="sha256"):
        prepare("shakespeare_char", data_dir=str(tmp_path / "data"))
    assert not (tmp_path / "data").exists()


def test_shakespeare_mirror_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANODLM_DATA_MIRROR", str(tmp_path))
    with pytest.raises(UserError, match="NANODLM_DATA_MIRROR"):
        prepare("shakespeare_char", data_dir=str(tmp_path / "data"))


def test_download_failure_suggests_input_or_mirror(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--input") as e:
        prepare("shakespeare_char", data_dir=str(tmp_path / "data"))
    assert "NANODLM_DATA_MIRROR" in str(e.value) and "\n" not in str(e.value)


class FakeResponse:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def read(self) -> bytes:
        return self.body

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc) -> None:
        return None


def test_download_wrong_content_is_rejected_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(b"<html>rate limited</html>"))
    with pytest.raises(UserError, match="sha256"):
        prepare("shakespeare_char", data_dir=str(tmp_path / "data"))
    assert not (tmp_path / "cache" / "tinyshakespeare.txt").exists()


@needs_shakespeare
def test_download_is_verified_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(SHAKESPEARE.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    raw, source = dataset.fetch_shakespeare()
    assert calls == [dataset.SHAKESPEARE_URL] and source == dataset.SHAKESPEARE_URL
    cached = tmp_path / "cache" / "tinyshakespeare.txt"
    assert cached.read_bytes() == raw
    raw2, source2 = dataset.fetch_shakespeare()  # second time from the cache, no download
    assert raw2 == raw and source2 == str(cached) and len(calls) == 1
    cached.write_bytes(b"corrupt")  # a corrupt cache is downloaded again
    assert dataset.fetch_shakespeare()[0] == raw and len(calls) == 2


# --- prepare text ----------------------------------------------------------------------------------


def test_prepare_text_char(tmp_path: Path) -> None:
    text = "hello there, general kenobi!\n" * 10  # 290 characters
    meta = prepare("text", input_path=write_text(tmp_path, text), data_dir=str(tmp_path), out_name="mine")
    assert meta["itos"] == sorted(set(text)) and meta["vocab_size"] == len(set(text))
    assert meta["dtype"] == "uint16"
    assert (meta["train_tokens"], meta["val_tokens"]) == (261, 29)  # int(290 * 0.9) = 261
    train = np.fromfile(tmp_path / "mine" / "train.bin", dtype=np.uint16)
    tok = load_tokenizer(load_meta(str(tmp_path), "mine"))
    assert tok.decode(train) == text[:261]


@needs_tiktoken
def test_prepare_text_gpt2(tmp_path: Path) -> None:
    text = (HELLO + " ") * 20
    meta = prepare("text", input_path=write_text(tmp_path, text), data_dir=str(tmp_path), out_name="bpe",
                   tokenizer="gpt2", val_fraction=0.25)
    split = int(len(text) * 0.75)
    tok = load_tokenizer(meta)
    assert meta["train_tokens"] == len(tok.encode(text[:split]))
    assert meta["val_tokens"] == len(tok.encode(text[split:]))
    assert tok.decode(open_split(str(tmp_path), "bpe", "val")) == text[split:]


def test_prepare_text_bad_arguments(tmp_path: Path) -> None:
    path = write_text(tmp_path, "some text " * 10)
    with pytest.raises(UserError, match="--name"):
        prepare("text", input_path=path, data_dir=str(tmp_path))
    with pytest.raises(UserError, match="--input"):
        prepare("text", data_dir=str(tmp_path), out_name="x")
    with pytest.raises(UserError, match="does not exist"):
        prepare("text", input_path=str(tmp_path / "nope.txt"), data_dir=str(tmp_path), out_name="x")
    with pytest.raises(UserError, match="unknown tokenizer"):
        prepare("text", input_path=path, data_dir=str(tmp_path), out_name="x", tokenizer="bytes")
    with pytest.raises(UserError, match="val_fraction"):
        prepare("text", input_path=path, data_dir=str(tmp_path), out_name="x", val_fraction=1.0)
    with pytest.raises(UserError, match="unknown dataset"):
        prepare("wikitext", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="too few"):
        prepare("text", input_path=write_text(tmp_path, "a", "short.txt"), data_dir=str(tmp_path), out_name="x")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 10)
    with pytest.raises(UserError, match="UTF-8"):
        prepare("text", input_path=str(tmp_path / "latin1.txt"), data_dir=str(tmp_path), out_name="x")


def test_dtype_for() -> None:
    assert dtype_for(65) == "uint16" and dtype_for(50257) == "uint16" and dtype_for(65535) == "uint16"
    assert dtype_for(65536) == "uint32" and dtype_for(200_000) == "uint32"


# --- char tokenizer ---------------------------------------------------------------------------------


def test_char_tokenizer_mask_and_unknown() -> None:
    tok = load_tokenizer({"tokenizer": "char", "vocab_size": 3, "itos": ["a", "b", "c"]})
    assert tok.encode("cab") == [2, 0, 1] and tok.decode([2, 0, 1]) == "cab"
    assert tok.mask_id == 3
    assert tok.decode(torch.tensor([0, 3, 3, 1])) == f"a{tok.mask_glyph * 2}b"
    assert tok.decode([0, 99, -1]) == f"a{tok.unk_glyph}{tok.unk_glyph}"
    with pytest.raises(UserError, match="not in the vocabulary") as e:
        tok.encode("abz!")
    assert "'z'" in str(e.value) and "'!'" in str(e.value)


def test_load_tokenizer_bad_meta() -> None:
    with pytest.raises(UserError, match="unknown tokenizer"):
        load_tokenizer({"tokenizer": "sentencepiece", "vocab_size": 3})
    with pytest.raises(UserError, match="itos"):
        load_tokenizer({"tokenizer": "char", "vocab_size": 3})
    with pytest.raises(UserError, match="vocab_size"):
        load_tokenizer({"tokenizer": "char", "vocab_size": 4, "itos": ["a", "b", "c"]})


# --- loading and batches ----------------------------------------------------------------------------


def test_missing_dataset_says_run_prepare(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nanodlm prepare shakespeare_char"):
        load_meta(str(tmp_path), "shakespeare_char")
    with pytest.raises(UserError, match="nanodlm prepare shakespeare_char"):
        open_split(str(tmp_path), "shakespeare_char", "train")
    (tmp_path / "half").mkdir()
    with pytest.raises(UserError, match="meta.json is missing"):
        load_meta(str(tmp_path), "half")


def test_missing_bin_and_bad_split(tmp_path: Path) -> None:
    prepare("text", input_path=write_text(tmp_path, "abcdefghij" * 5), data_dir=str(tmp_path), out_name="d")
    with pytest.raises(UserError, match="unknown split"):
        open_split(str(tmp_path), "d", "test")
    os.remove(tmp_path / "d" / "val.bin")
    with pytest.raises(UserError, match="nanodlm prepare"):
        open_split(str(tmp_path), "d", "val")


def test_get_batch_shapes_shift_and_determinism() -> None:
    corpus = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(corpus, 4, 16, torch.Generator().manual_seed(0), "cpu")
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    x2, y2 = get_batch(corpus, 4, 16, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # offsets are exactly torch.randint(len - T, (B,)) from the generator
    ix = torch.randint(1000 - 16, (4,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 0], ix)
    x3, _ = get_batch(corpus, 4, 16, torch.Generator().manual_seed(1), "cpu")
    assert not torch.equal(x, x3)


def test_get_batch_uses_whole_corpus_edge(tmp_path: Path) -> None:
    prepare("text", input_path=write_text(tmp_path, "abcdefghij" * 5), data_dir=str(tmp_path), out_name="d")
    val = open_split(str(tmp_path), "d", "val")  # 5 tokens: "fghij"
    x, y = get_batch(val, 3, 4, torch.Generator().manual_seed(0), "cpu")  # only offset 0 fits
    assert x.tolist() == [[5, 6, 7, 8]] * 3 and y.tolist() == [[6, 7, 8, 9]] * 3


def test_get_batch_short_corpus() -> None:
    with pytest.raises(UserError, match="5 tokens.*block_size 8"):
        get_batch(np.arange(5, dtype=np.uint16), 2, 8, torch.Generator(), "cpu")
    with pytest.raises(UserError, match="block_size 5 needs at least 6"):
        get_batch(np.arange(5, dtype=np.uint16), 2, 5, torch.Generator(), "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_get_batch_cuda() -> None:
    x, y = get_batch(np.arange(100, dtype=np.uint16), 2, 8, torch.Generator().manual_seed(0), "cuda")
    assert x.is_cuda and y.is_cuda and torch.equal(y[:, :-1].cpu(), x[:, 1:].cpu())


@pytest.mark.parametrize("dataset, prepare_with", [("heldout", "nanodlm prepare text --input FILE --name heldout"),
                                                   ("shakespeare_char", "nanodlm prepare shakespeare_char")])
def test_a_dataset_prepared_elsewhere_names_data_dir_and_a_command_that_exists(tmp_path, dataset, prepare_with):
    with pytest.raises(UserError) as e:
        load_meta(str(tmp_path / "d"), dataset)
    message = str(e.value)
    assert "give --data_dir=" in message and f"`{prepare_with} --data_dir={tmp_path / 'd'}`" in message
    assert "nanodlm prepare heldout" not in message  # no such command for a dataset of your own text
