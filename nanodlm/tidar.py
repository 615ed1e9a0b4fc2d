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

from .attention import tidar_pass_mask
from .model import GPT, KVCache


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


def draft_pass(model: GPT, clean: torch.Tensor, n_masks: int, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding pass: clean (B, c) at positions cache.pos .. + c - 1, then n_masks [MASK] after them.

    Returns (AR logits (B, c, V): clean token j predicts position cache.pos + j + 1; draft logits (B, n_masks, V):
    mask j predicts position cache.pos + c + j). Keys and values of all c + n_masks positions are written after the
    cache's kept positions but none is kept: the caller keeps the verified ones with ``cache.advance(n)``; the clean
    ones are exactly what a plain AR pass computes (causal, the cache before them), the masks are overwritten later.
    """
    B, c = clean.shape
    start = cache.pos
    model._check_length(start + c + n_masks)
    masks = torch.full((B, n_masks), model.config.mask_token_id, dtype=clean.dtype, device=clean.device)
    pos = torch.arange(start, start + c + n_masks, device=clean.device)
    h = model._trunk(torch.cat((clean, masks), dim=1), pos, tidar_pass_mask(start, c, n_masks, clean.device), cache)
    logits = model._head(h, True)  # (B, c + n_masks, V)
    return logits[:, :c], logits[:, c:]
