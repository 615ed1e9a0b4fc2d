"""What ``bench infill`` measures of a filled hole: the likelihood of the true middle under each kind of model,
the characters a fill gets right, and what the judge thinks of the window with the fill (and of the seam).

Each function takes token ids as lists or tensors and returns plain numbers; every model is called in eval mode.
What each likelihood conditions on:
- ``fim``: the FIM model's exact -log p(middle | prefix, suffix, the middle's length) (sampling/fim.py);
- ``diffusion_hole_nll``: the masked-diffusion bound on -log p(middle | prefix, suffix, length) with only the
  hole ever masked (the window's other tokens always visible): an upper bound;
- ``diffusion_hole_nll_l2r``: the diffusion model's exact -log p(middle | prefix, suffix, length) under one
  decoder, the hole revealed left to right one token per pass (a distribution over middles of its own: exact for
  it, L passes; the bound averages over random reveal orders instead);
- ``ar_prefix_nll``: a plain AR model's exact -log p(middle | prefix): no suffix (what the suffix is worth).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion.diffusion import denoise, masked_nll, nelbo
from ..sampling.ar_sampling import inference_mode, model_device


def hole_starts(n_windows: int, window: int, length: int, generator: torch.Generator) -> list[int]:
    """One hole of ``length`` per window at a uniform position: its start in [0, window - length]."""
    if not 1 <= length <= window:
        raise ValueError(f"a hole of {length} does not fit a window of {window}")
    return torch.randint(0, window - length + 1, (n_windows,), generator=generator).tolist()


def hole_mask(n_windows: int, window: int, starts: list[int], length: int) -> torch.Tensor:
    """(N, W) bool: True on each window's hole."""
    pos = torch.arange(window)[None, :]  # (1, W)
    s = torch.tensor(starts)[:, None]  # (N, 1)
    return (pos >= s) & (pos < s + length)


def diffusion_hole_nll(model: torch.nn.Module, windows: torch.Tensor, hole: torch.Tensor, generator: torch.Generator,
                       batch_size: int = 32, n_draws: int = 4) -> torch.Tensor:
    """(N,) the masked-diffusion bound on each window's hole, in nats per hole token: ``diffusion.nelbo`` with
    only ``hole`` (N, W) ever masked. ``generator`` lives on the model's device; the draws follow the row order,
    so a hole covering the whole window gives ``eval``'s bound with the same generator."""
    device = model_device(model)
    out = []
    with inference_mode(model):
        for i in range(0, windows.size(0), batch_size):
            x, m = windows[i:i + batch_size].to(device), hole[i:i + batch_size].to(device)
            terms = nelbo(model, x, model.config.mask_token_id, generator, n_draws, maskable=m)  # (B, draws)
            out.append(terms.mean(dim=1).cpu())
    return torch.cat(out)


def diffusion_hole_nll_l2r(model: torch.nn.Module, windows: torch.Tensor, hole: torch.Tensor,
                           batch_size: int = 32) -> torch.Tensor:
    """(N,) -log p(middle | the rest) per hole token, exact for the decoder that reveals each window's hole ``hole``
    (N, W) left to right, one token per pass: pass i scores the hole's i-th token with the tokens before it (the
    true ones) visible and the rest of the hole [MASK]. As many passes as the longest hole in a batch."""
    device, mask_id = model_device(model), model.config.mask_token_id
    out = []
    with inference_mode(model):
        for i in range(0, windows.size(0), batch_size):
            x, m = windows[i:i + batch_size].to(device), hole[i:i + batch_size].to(device)
            rank = torch.where(m, m.long().cumsum(dim=1) - 1, torch.full_like(x, -1))  # (B, W): order in the hole
            total = torch.zeros(x.size(0), device=device)
            for step in range(int(m.sum(dim=1).max())):
                logits = denoise(model, x.masked_fill(rank >= step, mask_id), x, 0)  # (B, W, V)
                total += masked_nll(logits, x, rank == step, mask_id).sum(dim=1)
            out.append((total / m.sum(dim=1).clamp_min(1)).cpu())
    return torch.cat(out)


def ar_prefix_nll(model: torch.nn.Module, prefix: list[int], middle: list[int]) -> float:
    """Exact -log p(middle | prefix) in nats (a sum) under a plain AR model; an empty prefix starts from the
    middle's first token unconditioned on nothing but itself (scored from position 1 on, as ``judge_nll``)."""
    seq = prefix + middle
    x = torch.tensor([seq[:-1]], dtype=torch.long, device=model_device(model))
    with inference_mode(model):
        logits, _ = model(x, all_logits=True)  # (1, n - 1, V)
    first = max(len(prefix), 1)  # targets seq[first:]: the middle (its first token needs a context token)
    pred = logits[0, first - 1:].float()
    target = torch.tensor(seq[first:], dtype=torch.long, device=pred.device)
    return float(F.cross_entropy(pred, target, reduction="sum"))


def char_accuracy(fill: list[int], truth: list[int]) -> float:
    """Share of positions where the fill has the true token (a fill of another length is compared position by
    position up to the truth's length; missing positions count as wrong)."""
    if not truth:
        raise ValueError("no true middle to compare with")
    return sum(a == b for a, b in zip(fill, truth, strict=False)) / len(truth)


def judge_window(judge: torch.nn.Module, ids: list[int], hole_end: int, seam: int = 32) -> dict[str, float]:
    """The judge's view of one window with its fill (ids, the hole ending at ``hole_end``): ``nll`` the sum and
    ``tokens`` the count of next-token NLLs over the window (from its second token), ``seam_nll`` / ``seam_tokens``
    over the first ``seam`` tokens after the hole, given everything before them."""
    x = torch.tensor([ids], dtype=torch.long, device=model_device(judge))
    with inference_mode(judge):
        logits, _ = judge(x[:, :-1], all_logits=True)  # (1, W - 1, V)
    nll = F.cross_entropy(logits[0].float(), x[0, 1:], reduction="none")  # (W - 1,): token j + 1 given 0..j
    seam_lo, seam_hi = max(hole_end, 1), min(hole_end + seam, len(ids))
    seam_part = nll[seam_lo - 1:seam_hi - 1]
    return {"nll": float(nll.sum()), "tokens": nll.numel(), "seam_nll": float(seam_part.sum()),
            "seam_tokens": seam_part.numel()}
