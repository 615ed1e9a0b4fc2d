"""Diagnostics of a masked-diffusion denoiser: does it use context, and does it flag wrong tokens?

Pure functions over a model and clean text x (B, T); ``train`` logs them at every eval, ``nanodlm eval``
prints them. Conventions as in ``diffusion.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .diffusion import denoise, masked_nll, model_block, permutation_corrupt, subs_log_probs

# one line per number, for `nanodlm eval`'s table and the README (masked_ce@k / masked_acc@k share a line per k)
MEANINGS = {
    "masked_ce": "cross-entropy (nats) at masked positions with k% of the window masked; near unigram_entropy "
                 "means the model ignores context",
    "masked_acc": "share of masked positions (k% masked) whose most likely token is right",
    "p_mask@masked": "mean P([MASK]) the model gives masked positions (50% masked)",
    "detect_rate": "share of planted wrong tokens the model flags as [MASK] (repair/seed objectives learn this)",
    "false_alarm": "share of clean visible tokens wrongly flagged as [MASK]",
    "copy_acc": "share of clean visible tokens the model predicts as themselves",
    "unigram_entropy": "entropy (nats) of the split's token frequencies: the loss of a model that ignores context",
    "bits_per_token": "the headline loss in bits per token",
    "bits_per_char": "total bits over the characters scored: comparable across char and BPE models",
    "draft_loss": "TiDAR: CE (nats/token) of the [MASK] blocks, each predicting its draft_len tokens from the text "
                  "before it (what speculative decoding drafts with)",
    "draft_stderr": "standard error of draft_loss across windows",
    "prime_bits": "partial masking: sub-tokens per token (the NELBO is over them, per token all the same)",
    "prime_base": "partial masking: the sub-tokens' base",
}


def meaning(key: str) -> str:
    """What a diagnostic or eval key means ('' when unknown); masked_ce@15 -> masked_ce's line."""
    return MEANINGS.get(key) or MEANINGS.get(key.split("@")[0], "")


def _frac(hit: torch.Tensor, where: torch.Tensor) -> float:
    """Fraction of ``where`` positions that are ``hit``; nan if there are none."""
    n = where.sum()
    return (hit & where).sum().item() / n.item() if n > 0 else float("nan")


@torch.no_grad()
def diagnostics(model: nn.Module, x: torch.Tensor, mask_token_id: int, generator: torch.Generator) -> dict[str, float]:
    """Numbers that reveal whether a denoiser uses context (the literal seed objective can collapse to
    letter frequencies: then masked_ce@k ~ textstats.unigram_entropy for every k). Exact counts via permutation.

    - masked_ce@k, masked_acc@k (k = 15, 50, 100 % masked): mean CE / argmax accuracy at masked positions
      under the SUBS distribution ([MASK] excluded), the one samplers unmask with.
    - p_mask@masked: mean P([MASK]) under the full softmax at masked positions (50 % masked).
    - With 50 % masked and round(10 %) of the rest (at least 1) flipped to random wrong tokens:
      detect_rate = P(argmax == [MASK]) at flipped positions, false_alarm = same at clean visible positions,
      copy_acc = P(argmax == input) at clean visible positions (full softmax).
    Call with the model in eval mode. Empty position sets give nan.
    """
    B, T = x.shape
    block = model_block(model)  # block diffusion: earlier blocks are seen clean, as in training
    out: dict[str, float] = {}
    for pct in (15, 50, 100):
        n_mask = torch.full((B,), round(pct / 100 * T), dtype=torch.long, device=x.device)
        x_in, is_mask, _ = permutation_corrupt(x, n_mask, torch.zeros_like(n_mask), mask_token_id, generator)
        logits = denoise(model, x_in, x, block)
        out[f"masked_ce@{pct}"] = (masked_nll(logits, x, is_mask, mask_token_id).sum() / is_mask.sum()).item()
        out[f"masked_acc@{pct}"] = _frac(subs_log_probs(logits, mask_token_id).argmax(-1) == x, is_mask)
        if pct == 50:
            p_mask = logits.float().softmax(-1)[..., mask_token_id]  # (B, T)
            out["p_mask@masked"] = (p_mask * is_mask).sum().item() / is_mask.sum().item()
    n_mask = round(0.5 * T)
    n_rand = max(1, round(0.1 * (T - n_mask))) if T > n_mask else 0
    full = torch.full((B,), n_mask, dtype=torch.long, device=x.device)
    x_in, is_mask, is_rand = permutation_corrupt(x, full, torch.full_like(full, n_rand), mask_token_id, generator)
    logits = denoise(model, x_in, x, block)
    pred = logits.argmax(-1)  # (B, T), full softmax
    clean = ~is_mask & ~is_rand
    out["detect_rate"] = _frac(pred == mask_token_id, is_rand)
    out["false_alarm"] = _frac(pred == mask_token_id, clean)
    out["copy_acc"] = _frac(pred == x_in, clean)
    return out
