"""The parts diffusion samplers are built from (``samplers.py`` assembles them into samplers).

- ``CachedForward``: calls the model, reusing the logits while the canvas is unchanged (MDLM's caching sampler).
- ``prepare``: validates a sampler's arguments; ``sample_fill``: draws tokens with [MASK] forbidden and a
  confidence per draw; ``confident_fill``: reveals the k most confident masked positions of each row.
- ``masked_fraction``: the reveal schedules; ``prior``: the first pass's log-probabilities for ``prior_weight``.
- ``report`` / ``new_info``: the ``info`` dict and the ``on_step`` callback every sampler shares.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .ar_sampling import Model, check_sampling_args, sample_with_logprobs

OnStep = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
SamplerFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
# "threshold": no schedule floor, the parallel threshold alone decides each pass (Fast-dLLM); the last step fills
# what is left
SCHEDULES = ("linear", "cosine", "threshold")
# Reveal order of confidence / remask. Ranking by the sampled token's own probability (``sampled``, MaskGIT)
# keeps draws that happened to be likely and redraws the rest: a selection bias towards frequent tokens that
# lowers the text's entropy. ``entropy`` and ``margin`` rank by the position's distribution alone.
# ``prior_weight`` = w > 0 corrects ``sampled`` for that bias: the confidence becomes
# log p(drawn | x_t) - w * log p(drawn | the canvas at the start), and at w = 1 it is the draw's pointwise
# mutual information with what has been revealed since: support from the context, not mere frequency.
ORDERS = ("sampled", "entropy", "margin")


# --- shared machinery -------------------------------------------------------------------------------------

class CachedForward:
    """Calls the model, reusing the last logits while the canvas is unchanged; counts real forward passes.

    ``passes``: batched forward calls. ``row_passes`` (B,): per row, the passes that row would have cost alone
    (batch 1, the same draws): a pass counts for a row that needed logits (``need``, default every row) and whose
    own canvas changed since its last counted pass; at batch 1 it equals ``passes``."""

    def __init__(self, model: Model) -> None:
        self.model, self.passes = model, 0
        self.tokens: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.row_seen: torch.Tensor | None = None  # (B, L): each row's canvas at its last counted pass
        self.row_passes: torch.Tensor | None = None  # (B,) long

    def __call__(self, tokens: torch.Tensor, need: torch.Tensor | None = None) -> torch.Tensor:
        if self.row_seen is None:
            self.row_seen = torch.full_like(tokens, -1)
            self.row_passes = torch.zeros(tokens.size(0), dtype=torch.long, device=tokens.device)
        fresh = (tokens != self.row_seen).any(-1)  # (B,)
        if need is not None:
            fresh &= need
        self.row_passes += fresh
        self.row_seen[fresh] = tokens[fresh]
        if self.tokens is None or not torch.equal(tokens, self.tokens):
            self.logits, _ = self.model(tokens)  # (B, L, V)
            self.tokens = tokens.clone()
            self.passes += 1
        return self.logits

    def per_sample(self) -> list[int]:
        return [] if self.row_passes is None else self.row_passes.tolist()


def prepare(canvas: torch.Tensor, mask_token_id: int, steps: int, fixed: torch.Tensor | None,
             temperature: float, top_k: int | None, top_p: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the arguments; return a copy of the canvas and the fixed mask, both (B, L)."""
    if canvas.dim() != 2:
        raise ValueError(f"canvas must be (B, L), got shape {tuple(canvas.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    check_sampling_args(temperature, top_k, top_p)
    tokens = canvas.clone()
    masked = tokens == mask_token_id
    if fixed is None:
        return tokens, ~masked
    fixed = fixed.to(device=tokens.device, dtype=torch.bool)
    if fixed.shape != tokens.shape:
        raise ValueError(f"fixed has shape {tuple(fixed.shape)}, the canvas {tuple(tokens.shape)}")
    if (fixed & masked).any():
        raise ValueError("a fixed position holds [MASK]; fixed positions must hold given tokens")
    return tokens, fixed


def sample_fill(logits: torch.Tensor, mask_token_id: int, temperature: float, top_k: int | None,
                 top_p: float | None, generator: torch.Generator | None,
                 order: str = "sampled") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample tokens with [MASK] forbidden: logits (N, V) -> ids (N,), a confidence per row (N,), log p(ids) (N,).

    Confidence (higher = reveal sooner), by ``order``: ``sampled`` = log p(sampled id) (MaskGIT);
    ``entropy`` = -H(p); ``margin`` = log p(top1) - log p(top2). The last two do not look at the sampled
    id, so ranking by them does not favour lucky draws of frequent tokens (see ORDERS).
    """
    check_order(order)
    logits = logits.float().clone()
    logits[:, mask_token_id] = float("-inf")  # before top-k/top-p, so those pick among real tokens
    ids, logprobs = sample_with_logprobs(logits, temperature, top_k, top_p, generator)
    # log p(id) = -log1p(sum_{j != id} p_j / p_id): keeps near-certain tokens apart, where float32
    # log_softmax rounds them all to 0 and the confidence ranking would turn into ties
    ratio = (logprobs - logprobs.gather(-1, ids[:, None])).exp()  # (N, V)
    ratio.scatter_(-1, ids[:, None], 0.0)
    logp = -torch.log1p(ratio.sum(-1))  # (N,)
    if order == "entropy":
        probs = logprobs.exp()
        return ids, (probs * logprobs.clamp(min=torch.finfo(logprobs.dtype).min)).sum(-1), logp  # -H(p) (N,)
    if order == "margin":
        top2 = logprobs.topk(2, dim=-1).values  # (N, 2)
        return ids, top2[:, 0] - top2[:, 1], logp
    return ids, logp, logp


def check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def top_k_mask(scores: torch.Tensor, k: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """scores (B, L), k (B,) -> bool (B, L) marking the k[b] highest scores of each row (stable on ties).
    ``first`` (B, L) bool: those positions rank ahead of all others, each group in score order."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, L)
    if first is not None:
        order = order.gather(-1, torch.sort(first.gather(-1, order).to(torch.uint8), dim=-1, descending=True,
                                            stable=True).indices)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.size(-1), device=scores.device).expand_as(order))
    return ranks < k[:, None]


def gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # float64: float32 Gumbel noise is too coarse in the tail and skews the ranking (LLaDA, Nie et al. 2025)
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    u = u.clamp(torch.finfo(torch.float64).tiny, 1.0 - 1e-16)
    return -torch.log(-torch.log(u))


def masked_fraction(schedule: str, r: float) -> float:
    """Fraction of the masks still hidden after a fraction r of the steps (MaskGIT, Chang et al. 2022)."""
    if schedule == "linear":
        return 1.0 - r
    if schedule == "cosine":
        return math.cos(math.pi / 2 * r)
    if schedule == "threshold":
        return 1.0 if r < 1 else 0.0
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def confident_fill(logits: torch.Tensor, tokens: torch.Tensor, k: torch.Tensor, mask_token_id: int,
                    temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None,
                    noise: float, order: str = "sampled", prior: torch.Tensor | None = None,
                    parallel_threshold: float = 0.0, max_per_pass: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reveal the k[b] most confident masked positions of each row -> (new tokens, revealed), both (B, L).

    Confidence as ``order`` says (see ``sample_fill``), minus prior[drawn id] when a ``prior`` (B, L, V)
    is given (``first_pass_prior``), + ``noise`` x Gumbel when noise > 0.
    ``parallel_threshold`` = tau > 0 (threshold parallel decoding, Fast-dLLM, Wu et al. 2025): also reveal
    every masked position whose drawn token has probability > tau under the distribution it was drawn from,
    at least one per row that has a mask. k[b] is a floor. ``max_per_pass`` > 0 caps the reveals of a pass,
    floor included (the most confident by the ranking above): a sampler whose floor it cuts runs extra passes
    after its last step until the canvas is full.
    """
    masked = tokens == mask_token_id
    ids, conf, logp = sample_fill(logits[masked], mask_token_id, temperature, top_k, top_p, generator, order)
    if prior is not None:
        conf = conf - prior[masked].gather(-1, ids[:, None]).squeeze(-1)
    scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
    scores[masked] = conf.double()  # log-confidence
    if noise > 0:
        scores = scores + noise * gumbel(tokens.shape, generator, tokens.device)
    above = None
    if parallel_threshold > 0:
        above = torch.zeros_like(masked)
        above[masked] = logp > math.log(parallel_threshold)  # (B, L)
        n = above.sum(-1).clamp(min=1)  # (B,): at least one per pass
        k = torch.maximum(k, n * masked.any(-1))
    if max_per_pass:
        k = k.clamp(max=max_per_pass)
    revealed = top_k_mask(scores, k, above) & masked
    proposal = tokens.clone()
    proposal[masked] = ids
    return torch.where(revealed, proposal, tokens), revealed


def first_pass_prior(logits: torch.Tensor, prior_weight: float, mask_token_id: int) -> torch.Tensor | None:
    """prior_weight x the first pass's log-probabilities, [MASK] excluded: (B, L, V) fp32, or None if 0."""
    if prior_weight == 0:
        return None
    logits = logits.float().clone()
    logits[..., mask_token_id] = float("-inf")
    return prior_weight * torch.log_softmax(logits, dim=-1).clamp(min=torch.finfo(torch.float32).min)


def check_parallel(parallel_threshold: float, max_per_pass: int, schedule: str = "cosine") -> None:
    if not 0.0 <= parallel_threshold < 1.0 or max_per_pass < 0:
        raise ValueError(f"parallel_threshold must be in [0, 1) (0 = off) and max_per_pass >= 0 (0 = no cap); "
                         f"got {parallel_threshold} and {max_per_pass}")
    if schedule == "threshold" and parallel_threshold == 0:
        raise ValueError("schedule='threshold' lets the parallel threshold alone decide: set parallel_threshold > 0")


def check_prior_weight(prior_weight: float, order: str) -> None:
    if prior_weight < 0 or (prior_weight > 0 and order != "sampled"):
        raise ValueError(f"prior_weight must be >= 0 and needs order='sampled'; got {prior_weight} with {order!r}")


def report(info: dict[str, Any], on_step: OnStep | None, step: int, tokens: torch.Tensor,
            revealed: torch.Tensor, remasked: torch.Tensor | None = None) -> None:
    remasked = torch.zeros_like(revealed) if remasked is None else remasked
    info["committed_per_step"].append(int(revealed.sum()))
    info["remasked_per_step"].append(int(remasked.sum()))
    if on_step is not None:
        on_step(step, tokens, revealed, remasked)


def new_info() -> dict[str, Any]:
    """``passes_per_sample``: per row, the forward passes that row cost (its count at batch 1 with the same
    draws; ``CachedForward.row_passes``); every sampler fills it."""
    return {"committed_per_step": [], "remasked_per_step": [], "steps_used": 0, "forward_passes": 0,
            "passes_per_sample": []}
