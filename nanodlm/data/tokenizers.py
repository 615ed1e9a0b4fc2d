"""Tokenizers: text <-> ids for one prepared dataset, as its ``meta.json`` describes (``load_tokenizer``).

``char``: one id per character of the corpus (``itos`` in meta.json); ``gpt2``: GPT-2's BPE via tiktoken.
The data vocabulary never contains ``[MASK]``; a diffusion model adds it as id ``vocab_size``, which
``Tokenizer.decode`` renders as ``mask_glyph``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import UserError

TOKENIZERS = ("char", "gpt2")
MASK_GLYPH = "█"  # how decode shows the [MASK] id, so unfinished diffusion samples stay readable
UNK_GLYPH = "\ufffd"  # any other id outside the vocabulary


class Tokenizer:
    """Text <-> ids for one dataset. ``vocab_size`` is the data vocabulary, without [MASK]."""

    name: str = ""
    vocab_size: int = 0
    mask_glyph: str = MASK_GLYPH
    unk_glyph: str = UNK_GLYPH

    @property
    def mask_id(self) -> int:
        return self.vocab_size  # a diffusion model appends [MASK] after the data vocabulary

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    name = "char"

    def __init__(self, itos: list[str]) -> None:
        self.itos = list(itos)
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}
        self.vocab_size = len(self.itos)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[ch] for ch in text]
        except KeyError:
            unknown = sorted({ch for ch in text if ch not in stoi})
            shown = ", ".join(repr(ch) for ch in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise UserError(
                f"characters not in the vocabulary of this dataset: {shown}; "
                "remove them from the text (or prepare a dataset whose text contains them)"
            ) from None

    def decode(self, ids) -> str:
        itos, n = self.itos, self.vocab_size
        out = []
        for i in _as_int_list(ids):
            out.append(itos[i] if 0 <= i < n else self.mask_glyph if i == n else self.unk_glyph)
        return "".join(out)


class GPT2Tokenizer(Tokenizer):
    name = "gpt2"

    def __init__(self) -> None:
        self.enc = _tiktoken_gpt2()
        self.vocab_size = self.enc.n_vocab  # 50257

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)  # special tokens in the text are plain text, never an error

    def decode(self, ids) -> str:
        # tiktoken raises on unknown ids, so decode runs of valid ids and put glyphs between them
        parts: list[str] = []
        run: list[int] = []
        for i in _as_int_list(ids):
            if 0 <= i < self.vocab_size:
                run.append(i)
                continue
            if run:
                parts.append(self.enc.decode(run))
                run = []
            parts.append(self.mask_glyph if i == self.vocab_size else self.unk_glyph)
        if run:
            parts.append(self.enc.decode(run))
        return "".join(parts)


def _as_int_list(ids) -> list[int]:
    if isinstance(ids, torch.Tensor):
        return ids.reshape(-1).tolist()
    if isinstance(ids, np.ndarray):
        return ids.reshape(-1).astype(np.int64).tolist()
    return [int(i) for i in ids]


def _tiktoken_gpt2():
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken downloads its files on first use; offline it fails with various errors
        raise UserError(
            f"could not load the GPT-2 tokenizer ({type(e).__name__}: {e}); "
            "connect to the internet once or set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's gpt2 files"
        ) from None


def load_tokenizer(meta: dict) -> Tokenizer:
    """The tokenizer that ``meta`` (from ``load_meta`` or ``prepare``) describes."""
    kind = meta.get("tokenizer")
    if kind == "char":
        itos = meta.get("itos")
        if not isinstance(itos, list) or not itos:
            raise UserError("meta.json of a char dataset has no 'itos' list; prepare the dataset again")
        tok = CharTokenizer(itos)
        if "vocab_size" in meta and meta["vocab_size"] != tok.vocab_size:
            raise UserError(
                f"meta.json says vocab_size {meta['vocab_size']} but itos has {tok.vocab_size} entries; "
                "prepare the dataset again"
            )
        return tok
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise UserError(
        f"unknown tokenizer {kind!r} in meta.json (expected one of {TOKENIZERS}); prepare the dataset again"
    )
