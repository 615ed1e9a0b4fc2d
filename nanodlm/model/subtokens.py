"""The sub-token code of partial masking (MDM-Prime; the forward process and the bound: prime.py).

Chao et al. 2025, "Beyond Masked and Unmasked: Discrete Diffusion Models via Partial Masking" (arXiv:2505.18495);
Chao et al. 2026, MDM-Prime-v2 (arXiv:2603.16077): binary encoding (bits = ceil(log2 V)) and index shuffling.

The code. A real token x in [0, V) is shuffled, c = perm[x] (a fixed random permutation, saved with the weights:
it spreads frequent tokens over the codes, so each digit carries more entropy), and written in base b:
digit j = (c // b^j) % b for j = 0 .. bits-1, with b^bits >= V > b^(bits-1). Codes >= V name no token.

The state of a position: one digit state s_j in [0, b] per digit, b meaning "this digit is masked". A canvas
stays a (B, T) long tensor of ids everywhere (samplers, caches, the model's forward):
- id < V: a token (every digit known); id == V: [MASK] (every digit masked; V = the model's mask_token_id);
- id > V: partly known, id = V + 1 + sum_j s_j (b + 1)^j.
``state_ids`` writes the canonical id of a state (a token, [MASK], or a partial id); ``state_digits`` reads any.

The model's part: ``SubTokenEmbedding`` embeds a position's digit states (a sum of one learned vector per digit
and state, so a partly known token is a point between masked and known) and holds the shuffle; ``restrict`` rules
out every token that contradicts a known digit (logit -inf: exactly zero probability).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


def code_size(vocab: int, base: int = 0, bits: int = 0) -> tuple[int, int]:
    """(base, bits) for ``vocab`` real tokens: 0 means automatic (base 2 and the fewest bits when both are 0; the
    smallest base for given bits; the fewest bits for a given base). ValueError naming the keys otherwise."""
    if vocab < 2 or base < 0 or bits < 0 or base == 1:
        raise ValueError(f"prime_base must be 0 (auto) or >= 2 and prime_bits >= 0, for a vocabulary of >= 2 tokens; "
                         f"got prime_base={base}, prime_bits={bits}, vocabulary {vocab}")
    if not bits:
        base = base or 2
        bits = max(1, math.ceil(math.log(vocab, base) - 1e-9))
        bits += base**bits < vocab  # float log rounding, either way
        bits -= bits > 1 and base ** (bits - 1) >= vocab
    elif not base:
        base = max(2, math.ceil(vocab ** (1 / bits) - 1e-9))
        base += base**bits < vocab
        base -= base > 2 and (base - 1) ** bits >= vocab
    if base**bits < vocab:
        fewest = code_size(vocab, base)[1]
        raise ValueError(f"prime_bits={bits} digits of base {base} write {base**bits} codes, fewer than the {vocab} "
                         f"tokens: raise prime_bits to {fewest} (or leave it 0, automatic)")
    if bits > 1 and base ** (bits - 1) >= vocab:
        fewest = code_size(vocab, base)[1]
        raise ValueError(f"prime_bits={bits} in base {base}: every token's top digit would be 0 ({vocab} tokens need "
                         f"{fewest}); lower prime_bits to {fewest} (or leave it 0, automatic)")
    return base, bits


def permutation_problem(perm: torch.Tensor, vocab: int) -> str | None:
    """Why ``perm`` is not a permutation of 0 .. vocab-1 (a checkpoint's saved shuffle), or None when it is."""
    if perm.dim() != 1 or perm.numel() != vocab:
        return f"it has shape {tuple(perm.shape)}, not ({vocab},)"
    if perm.dtype != torch.long:
        return f"it holds {perm.dtype}, not int64 ids"
    if not torch.equal(perm.sort().values, torch.arange(vocab, device=perm.device)):
        return f"it is not a permutation of 0..{vocab - 1} (repeated or out-of-range ids)"
    return None


@dataclass(frozen=True)
class Code:
    """The token <-> sub-token code: ``table`` (V, bits) long, digit j of each real token (after the shuffle)."""

    base: int
    table: torch.Tensor

    @property
    def vocab(self) -> int:
        return self.table.size(0)

    @property
    def bits(self) -> int:
        return self.table.size(1)

    def radix(self) -> torch.Tensor:
        """(bits,) long: (base + 1)^j, the place values of a partial id's digit states."""
        return (self.base + 1) ** torch.arange(self.bits, device=self.table.device)


def make_code(perm: torch.Tensor, base: int, bits: int) -> Code:
    """The code of a shuffle ``perm`` (V,): token x gets the base-``base`` digits of perm[x]."""
    place = base ** torch.arange(bits, device=perm.device)  # (bits,)
    return Code(base, (perm[:, None] // place) % base)


def decode(digits: torch.Tensor, perm: torch.Tensor, base: int) -> torch.Tensor:
    """Inverse of ``make_code(perm, ...).table[x]``: fully known digits (..., bits) -> tokens (...); -1 where the
    digits write a code that names no token."""
    place = base ** torch.arange(digits.size(-1), device=digits.device)
    code = (digits * place).sum(-1)  # (...)
    codes, tokens = perm.sort()
    i = torch.searchsorted(codes, code).clamp(max=codes.numel() - 1)
    return torch.where(codes[i] == code, tokens[i], torch.full_like(code, -1))


def state_ids(digits: torch.Tensor, tokens: torch.Tensor, code: Code) -> torch.Tensor:
    """The canonical ids (...) of digit states (..., bits) in [0, base] (base = masked). ``tokens`` (...) must be a
    token whose digits agree with the known ones; it is the id where every digit is known."""
    masked = digits == code.base
    partial = code.vocab + 1 + (digits * code.radix()).sum(-1)
    return torch.where(masked.all(-1), code.vocab, torch.where(masked.any(-1), partial, tokens))


def state_digits(ids: torch.Tensor, code: Code) -> torch.Tensor:
    """Digit states (..., bits) in [0, base] (base = masked) of any canvas ids (...) (see the module docstring)."""
    known = code.table[ids.clamp(max=code.vocab - 1)]  # (..., bits): read only where ids < vocab
    s = (ids - code.vocab - 1).clamp(min=0)
    partial = (s[..., None] // code.radix()) % (code.base + 1)
    partial = partial.masked_fill((ids == code.vocab)[..., None], code.base)
    return torch.where((ids < code.vocab)[..., None], known, partial)


def consistent(digits: torch.Tensor, code: Code) -> torch.Tensor:
    """(..., V) bool: the tokens whose digits agree with every known digit of states (..., bits)."""
    d = digits[..., None, :]  # (..., 1, bits) against the table (V, bits)
    return ((d == code.table) | (d == code.base)).all(-1)


def restrict(logits: torch.Tensor, digits: torch.Tensor, code: Code) -> torch.Tensor:
    """logits (..., V') with V' >= V (V' = V + 1: the [MASK] column) -> the same with every token that contradicts a
    known digit, and every column past the real tokens ([MASK]), at -inf: exactly zero probability."""
    allowed = consistent(digits, code)  # (..., V)
    pad = allowed.new_zeros(*allowed.shape[:-1], logits.size(-1) - code.vocab)
    return logits.masked_fill(~torch.cat((allowed, pad), dim=-1), float("-inf"))


def digit_log_marginals(log_probs: torch.Tensor, code: Code) -> torch.Tensor:
    """log P(digit j = c) (N, bits, base) under token log-probs (N, >= V): mass summed over the tokens with that
    digit. For ranking and display (float32 probabilities: masses below ~1e-38 read as -inf)."""
    onehot = F.one_hot(code.table, code.base).flatten(1).float()  # (V, bits * base)
    lp = log_probs[:, : code.vocab].float()
    top = lp.max(-1, keepdim=True).values  # (N, 1): shift so the largest mass is 1
    mass = (lp - top).exp() @ onehot  # (N, bits * base)
    return (mass.log() + top).view(-1, code.bits, code.base)


# ----------------------------------------------------------------------------- the model's part


PRIME_EMBEDS = ("candidates", "sum")  # a prime model's input embedding (``SubTokenEmbedding``)


class SubTokenEmbedding(nn.Module):
    """The input embedding of a prime model: ids (B, T) -> (B, T, C), the sum over digits j of a learned vector for
    (j, state of digit j), states 0..base-1 known and ``base`` masked (so a partly known token is a point between
    masked and known); with ``candidates`` (the default) plus the mean token embedding (the model's wte, the
    output layer's weights) of the tokens the position may still be, so a known token gets its own vector as in a
    plain model, where a digit sum alone is a linear code of its shuffled bits (``sum``: the digit vectors alone;
    a fully masked position gets the digit vectors alone either way). Holds the shuffle ``perm`` (V,) as a buffer:
    it is saved in the checkpoint with the weights."""

    def __init__(self, vocab: int, base: int, bits: int, n_embd: int, shuffle: bool, embed: str = "candidates"
                 ) -> None:
        super().__init__()
        if embed not in PRIME_EMBEDS:
            raise ValueError(f"prime_embed must be one of {', '.join(PRIME_EMBEDS)}; got {embed!r}")
        self.base, self.bits, self.candidates = base, bits, embed == "candidates"
        # global RNG: under the training seed, as the other initial weights
        self.register_buffer("perm", torch.randperm(vocab) if shuffle else torch.arange(vocab))
        # std 0.02 / sqrt(bits): the sum of bits vectors has the scale of a token embedding (GPT-2's 0.02)
        self.weight = nn.Parameter(torch.randn(bits * (base + 1), n_embd) * (0.02 / math.sqrt(bits)))

    def code(self) -> Code:
        return make_code(self.perm, self.base, self.bits)

    def forward(self, ids: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) -> (B, T, C); ``token_weight`` (>= V, C): the token embeddings the candidates average over."""
        code = self.code()
        digits = state_digits(ids, code)  # (B, T, bits)
        rows = digits + (self.base + 1) * torch.arange(self.bits, device=ids.device)  # row of (j, state)
        x = F.embedding(rows, self.weight).sum(-2)  # (B, T, bits, C) -> (B, T, C)
        if self.candidates:
            if token_weight is None:
                raise ValueError("prime_embed=candidates needs the token embeddings (token_weight)")
            # (B, T, V): the tokens still possible; none where every digit is masked (its digit vectors say it all)
            allowed = consistent(digits, code) & (digits != self.base).any(-1, keepdim=True)
            share = allowed.to(x.dtype) / allowed.sum(-1, keepdim=True).clamp(min=1)  # a known token: one-hot
            x = x + share @ token_weight[: code.vocab]
        return x

    def restrict(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        code = self.code()
        return restrict(logits, state_digits(ids, code), code)


def model_code(model: nn.Module) -> Code | None:
    """The sub-token code of a prime model (None for any other); unwraps DDP, torch.compile and sampler wrappers."""
    inner = model
    for attr in ("module", "_orig_mod", "model"):
        inner = getattr(inner, attr, inner)
    emb = getattr(getattr(inner, "transformer", None), "wse", None)
    return emb.code() if isinstance(emb, SubTokenEmbedding) else None
