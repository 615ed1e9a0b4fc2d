"""TiDAR in one model: the clean text is read causally (an AR model), blocks of [MASK] draft the text after it.

TiDAR ("Think in Diffusion, Talk in Autoregression", Liu et al. 2025, arXiv:2511.08923). A TiDAR model is a gpt2
model with ``draft_len = k > 0``: its embedding table has one more row, [MASK] (``mask_token_id = vocab_size``,
in the padding, so no logit ever predicts it). Training (``objective=tidar``) runs two streams in one pass:

- the clean text x (B, T) at positions 0..T-1 with causal attention, trained on next-token cross-entropy (L_AR);
- T [MASK] tokens at the same positions 0..T-1 in blocks of k; the mask at position i predicts x_i; a block sees
  the clean text before its first position and itself (bidirectionally), never another block (L_diff).

loss = (alpha * L_AR + L_diff) / (1 + alpha). The clean stream never sees a mask, so its logits are exactly those
of a plain AR model: ``--sampler=ar`` samples the checkpoint as one. ``speculative.py`` drafts with the mask
stream and verifies with the AR stream in the same forward (``draft_pass``).
The attention masks are ``attention.tidar_train_mask`` / ``tidar_pass_mask``; training runs ``GPT.forward(x,
drafts=True)``, a decoding pass ``GPT._trunk`` / ``GPT._head`` with the KV cache.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..model.attention import KVCache, tidar_pass_mask
from ..model.model import GPT


def check_tidar(model: GPT) -> int:
    """The model's draft length k; ValueError for a model not trained with objective=tidar."""
    inner = getattr(model, "module", getattr(model, "_orig_mod", model))  # DDP / torch.compile wrap the GPT
    k = int(getattr(getattr(inner, "config", None), "draft_len", 0) or 0)
    if not k:
        raise ValueError("this model has no draft stream (draft_len = 0): train one with objective=tidar")
    return k


def two_stream_logits(model: GPT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T) clean ids -> (AR logits (B, T, V): position i predicts x_{i+1}; draft logits (B, T, V): the mask
    at position i predicts x_i from the clean text before its block)."""
    check_tidar(model)
    logits, _ = model(x, drafts=True)  # (B, 2T, V)
    return logits[:, :x.size(1)], logits[:, x.size(1):]


def tidar_losses(model: GPT, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_AR, L_diff), fp32 mean cross-entropies (nats/token). y (B, T): next-token targets (default: x shifted,
    T - 1 positions scored)."""
    ar, draft = two_stream_logits(model, x)
    if y is None:
        ar, y = ar[:, :-1], x[:, 1:]
    l_ar = F.cross_entropy(ar.float().reshape(-1, ar.size(-1)), y.reshape(-1))
    l_diff = F.cross_entropy(draft.float().reshape(-1, draft.size(-1)), x.reshape(-1))
    return l_ar, l_diff


def tidar_loss(model: GPT, x: torch.Tensor, y: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """(alpha * L_AR + L_diff) / (1 + alpha): alpha = 1 weighs both streams equally."""
    l_ar, l_diff = tidar_losses(model, x, y)
    return (alpha * l_ar + l_diff) / (1.0 + alpha)


def draft_pass(model: GPT, clean: torch.Tensor, n_masks: int, cache: KVCache, blocks: int = 1
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding pass: clean (B, c) at positions cache.pos .. + c - 1, then ``blocks`` blocks of n_masks [MASK].

    Block b sees the clean tokens up to c - blocks + b (``attention.tidar_pass_mask``) and sits right after them:
    with the last blocks - 1 clean tokens being drafts, block b drafts for the case that the first b of them are
    accepted (blocks = 1: after all of them). Returns (AR logits (B, c, V): clean token j predicts position
    cache.pos + j + 1; draft logits (B, blocks, n_masks, V): mask j of block b predicts position
    cache.pos + c - blocks + 1 + b + j). Keys and values of every position are written after the cache's kept ones
    but none is kept: the caller keeps the verified ones with ``cache.advance(n)``; the clean ones are exactly
    what a plain AR pass computes (causal, the cache before them), the masks are overwritten later.
    """
    B, c = clean.shape
    start, m = cache.pos, n_masks
    model._check_length(start + c + blocks * m)  # positions stay within start + c + m; cache slots do not
    first = start + c - blocks + 1  # the position of block 0's first mask
    # one small tensor per pass (a decoding pass is short: its fixed costs count)
    pos = torch.tensor([*range(start, start + c), *(first + b + j for b in range(blocks) for j in range(m))],
                       device=clean.device) + cache.offset  # (c + blocks * m,): absolute (a rolling cache's offset)
    idx = torch.cat((clean, clean.new_full((B, blocks * m), model.config.mask_token_id)), dim=1)
    h = model._trunk(idx, pos, tidar_pass_mask(start, c, m, clean.device, blocks), cache)
    logits = model._head(h, True)  # (B, c + blocks * m, V)
    return logits[:, :c], logits[:, c:].reshape(B, blocks, m, logits.size(-1))
