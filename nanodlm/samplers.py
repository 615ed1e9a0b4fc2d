"""Samplers for the masked-diffusion model: turn a canvas with [MASK] holes into text.

Every sampler has the same signature and is picked by name from ``SAMPLERS`` / ``get_sampler``::

    tokens, info = fn(model, canvas, *, mask_token_id, steps, temperature=1.0, top_k=None, top_p=None,
                      generator, fixed=None, on_step=None, **sampler_opts)

- canvas (B, L) long: ``mask_token_id`` where text is to be generated, given tokens elsewhere.
- fixed (B, L) bool: positions that never change (default: those not masked in the canvas).
  A fixed position must hold a token. Non-fixed tokens in the canvas are a draft that ``remask`` may edit.
- on_step(step, tokens (B, L), revealed (B, L) bool, remasked (B, L) bool): called after every canvas update.
- info: ``committed_per_step`` (positions revealed per update, summed over the batch), ``remasked_per_step``,
  ``steps_used`` (denoising steps run, <= steps) and ``forward_passes``.

The model is called as ``logits, _ = model(tokens)`` with logits (B, L, V) for every position. The logits of
the last forward are cached and reused while the canvas is unchanged (MDLM's caching sampler).
Token sampling (temperature / top-k / top-p, vectorised over the batch) is ``sample_logits``, shared with
the autoregressive ``generate_ar``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .ar_sampling import Model, check_sampling_args, generate_ar, inference_mode, sample_logits, sample_with_logprobs

__all__ = ["ORDERS", "SAMPLERS", "generate_ar", "get_sampler", "sample_ancestral", "sample_confidence",
           "sample_logits", "sample_remask", "sample_seed"]

OnStep = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
SamplerFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
SCHEDULES = ("linear", "cosine")
# Reveal order of confidence / remask. Ranking by the sampled token's own probability (``sampled``, MaskGIT)
# keeps draws that happened to be likely and redraws the rest: a selection bias towards frequent tokens that
# lowers the text's entropy. ``entropy`` and ``margin`` rank by the position's distribution alone.
# ``prior_weight`` = w > 0 corrects ``sampled`` for that bias: the confidence becomes
# log p(drawn | x_t) - w * log p(drawn | the canvas at the start), and at w = 1 it is the draw's pointwise
# mutual information with what has been revealed since: support from the context, not mere frequency.
ORDERS = ("sampled", "entropy", "margin")


# --- shared machinery -------------------------------------------------------------------------------------

class _Forward:
    """Calls the model, reusing the last logits while the canvas is unchanged; counts real forward passes."""

    def __init__(self, model: Model) -> None:
        self.model, self.passes = model, 0
        self.tokens: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.tokens is None or not torch.equal(tokens, self.tokens):
            self.logits, _ = self.model(tokens)  # (B, L, V)
            self.tokens = tokens.clone()
            self.passes += 1
        return self.logits


def _prepare(canvas: torch.Tensor, mask_token_id: int, steps: int, fixed: torch.Tensor | None,
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


def _sample_fill(logits: torch.Tensor, mask_token_id: int, temperature: float, top_k: int | None,
                 top_p: float | None, generator: torch.Generator | None,
                 order: str = "sampled") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample tokens with [MASK] forbidden: logits (N, V) -> ids (N,), a confidence per row (N,), log p(ids) (N,).

    Confidence (higher = reveal sooner), by ``order``: ``sampled`` = log p(sampled id) (MaskGIT);
    ``entropy`` = -H(p); ``margin`` = log p(top1) - log p(top2). The last two do not look at the sampled
    id, so ranking by them does not favour lucky draws of frequent tokens (see ORDERS).
    """
    _check_order(order)
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


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def _top_k_mask(scores: torch.Tensor, k: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """scores (B, L), k (B,) -> bool (B, L) marking the k[b] highest scores of each row (stable on ties).
    ``first`` (B, L) bool: those positions rank ahead of all others, each group in score order."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, L)
    if first is not None:
        order = order.gather(-1, torch.sort(first.gather(-1, order).to(torch.uint8), dim=-1, descending=True,
                                            stable=True).indices)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.size(-1), device=scores.device).expand_as(order))
    return ranks < k[:, None]


def _gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # float64: float32 Gumbel noise is too coarse in the tail and skews the ranking (LLaDA, Nie et al. 2025)
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    u = u.clamp(torch.finfo(torch.float64).tiny, 1.0 - 1e-16)
    return -torch.log(-torch.log(u))


def _masked_fraction(schedule: str, r: float) -> float:
    """Fraction of the masks still hidden after a fraction r of the steps (MaskGIT, Chang et al. 2022)."""
    if schedule == "linear":
        return 1.0 - r
    if schedule == "cosine":
        return math.cos(math.pi / 2 * r)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _confident_fill(logits: torch.Tensor, tokens: torch.Tensor, k: torch.Tensor, mask_token_id: int,
                    temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None,
                    noise: float, order: str = "sampled", prior: torch.Tensor | None = None,
                    parallel_threshold: float = 0.0, max_per_pass: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reveal the k[b] most confident masked positions of each row -> (new tokens, revealed), both (B, L).

    Confidence as ``order`` says (see ``_sample_fill``), minus prior[drawn id] when a ``prior`` (B, L, V)
    is given (``_prior``), + ``noise`` x Gumbel when noise > 0.
    ``parallel_threshold`` = tau > 0 (threshold parallel decoding, Fast-dLLM, Wu et al. 2025): also reveal
    every masked position whose drawn token has probability > tau under the distribution it was drawn from,
    at least one per row that has a mask, at most ``max_per_pass`` (0 = no cap; the most confident by the
    ranking above). k[b] stays a floor, so the sampler still ends within its steps.
    """
    masked = tokens == mask_token_id
    ids, conf, logp = _sample_fill(logits[masked], mask_token_id, temperature, top_k, top_p, generator, order)
    if prior is not None:
        conf = conf - prior[masked].gather(-1, ids[:, None]).squeeze(-1)
    scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
    scores[masked] = conf.double()  # log-confidence
    if noise > 0:
        scores = scores + noise * _gumbel(tokens.shape, generator, tokens.device)
    above = None
    if parallel_threshold > 0:
        above = torch.zeros_like(masked)
        above[masked] = logp > math.log(parallel_threshold)  # (B, L)
        n = above.sum(-1).clamp(min=1)  # (B,): at least one per pass
        if max_per_pass:
            n = n.clamp(max=max_per_pass)
        k = torch.maximum(k, n * masked.any(-1))
    revealed = _top_k_mask(scores, k, above) & masked
    proposal = tokens.clone()
    proposal[masked] = ids
    return torch.where(revealed, proposal, tokens), revealed


def _prior(logits: torch.Tensor, prior_weight: float, mask_token_id: int) -> torch.Tensor | None:
    """prior_weight x the first pass's log-probabilities, [MASK] excluded: (B, L, V) fp32, or None if 0."""
    if prior_weight == 0:
        return None
    logits = logits.float().clone()
    logits[..., mask_token_id] = float("-inf")
    return prior_weight * torch.log_softmax(logits, dim=-1).clamp(min=torch.finfo(torch.float32).min)


def _check_parallel(parallel_threshold: float, max_per_pass: int) -> None:
    if not 0.0 <= parallel_threshold < 1.0 or max_per_pass < 0:
        raise ValueError(f"parallel_threshold must be in [0, 1) (0 = off) and max_per_pass >= 0 (0 = no cap); "
                         f"got {parallel_threshold} and {max_per_pass}")


def _count_pass(info: dict[str, Any], forward: _Forward, passes_before: int, active: torch.Tensor) -> None:
    """Add one to ``passes_per_sample`` of the rows still being written (active (B,) bool) if the model ran."""
    if forward.passes > passes_before:
        count = info["passes_per_sample"]
        info["passes_per_sample"] = [c + int(a) for c, a in zip(count or [0] * len(active), active.tolist())]


def _check_prior_weight(prior_weight: float, order: str) -> None:
    if prior_weight < 0 or (prior_weight > 0 and order != "sampled"):
        raise ValueError(f"prior_weight must be >= 0 and needs order='sampled'; got {prior_weight} with {order!r}")


def _report(info: dict[str, Any], on_step: OnStep | None, step: int, tokens: torch.Tensor,
            revealed: torch.Tensor, remasked: torch.Tensor | None = None) -> None:
    remasked = torch.zeros_like(revealed) if remasked is None else remasked
    info["committed_per_step"].append(int(revealed.sum()))
    info["remasked_per_step"].append(int(remasked.sum()))
    if on_step is not None:
        on_step(step, tokens, revealed, remasked)


def new_info() -> dict[str, Any]:
    """``passes_per_sample``: per row, the forward passes that ran while the row still changed (its count at
    batch 1 with the same draws); filled by confidence and remask."""
    return {"committed_per_step": [], "remasked_per_step": [], "steps_used": 0, "forward_passes": 0,
            "passes_per_sample": []}


# --- samplers ---------------------------------------------------------------------------------------------

def sample_seed(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None,
                fixed: torch.Tensor | None = None, on_step: OnStep | None = None) -> tuple[torch.Tensor, dict]:
    """The user's spec (SPEC.md 2.3): for up to ``steps`` steps sample EVERY position from the model
    (temperature / top-k / top-p) and overwrite only positions that are still [MASK] -- a sampled [MASK]
    leaves the position masked. Stop early once no [MASK] remains. If masks remain after the loop, one
    final pass resamples them with [MASK] forbidden (info["final_pass"]; reported as step steps_used + 1),
    with the same temperature / top-k / top-p ([MASK] is removed first, so top-k keeps k real tokens).
    """
    tokens, _ = _prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)  # fills only masks
    info, forward = new_info(), _Forward(model)
    info["final_pass"] = False
    with inference_mode(model):
        for step in range(1, steps + 1):
            masked = tokens == mask_token_id  # (B, L)
            if not masked.any():
                break
            sampled = sample_logits(forward(tokens), temperature, top_k, top_p, generator)  # (B, L), every position
            tokens = torch.where(masked, sampled, tokens)  # fixed/given positions are never [MASK], never touched
            info["steps_used"] = step
            _report(info, on_step, step, tokens, masked & (tokens != mask_token_id))
        masked = tokens == mask_token_id
        if masked.any():
            ids = _sample_fill(forward(tokens)[masked], mask_token_id, temperature, top_k, top_p, generator)[0]
            tokens = tokens.clone()
            tokens[masked] = ids
            info["final_pass"] = True
            _report(info, on_step, info["steps_used"] + 1, tokens, masked)
    info["forward_passes"] = forward.passes
    return tokens, info


def sample_ancestral(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int,
                     temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                     generator: torch.Generator | None, fixed: torch.Tensor | None = None,
                     on_step: OnStep | None = None) -> tuple[torch.Tensor, dict]:
    """MDLM ancestral sampling (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models").

    Time runs t = 1 -> 0 on a uniform grid of ``steps`` steps. Going from t to s, each masked position is
    revealed with probability (t - s) / t (the reverse posterior for alpha_t = 1 - t), its token drawn from
    the model's distribution with [MASK] excluded; revealed tokens stay. At s = 0 the probability is 1, so
    every mask is revealed. The forward pass is skipped while the canvas is unchanged (cached logits).
    """
    tokens, _ = _prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)  # fills only masks
    info, forward = new_info(), _Forward(model)
    with inference_mode(model):
        for step in range(1, steps + 1):
            masked = tokens == mask_token_id  # (B, L)
            if not masked.any():
                break
            t, s = 1.0 - (step - 1) / steps, 1.0 - step / steps
            p_reveal = 1.0 if step == steps else (t - s) / t  # = 1 / (steps - step + 1)
            u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
            revealed = masked & (u < p_reveal)
            if revealed.any():
                ids = _sample_fill(forward(tokens)[revealed], mask_token_id, temperature, top_k, top_p, generator)[0]
                tokens = tokens.clone()
                tokens[revealed] = ids
            info["steps_used"] = step
            _report(info, on_step, step, tokens, revealed)
    info["forward_passes"] = forward.passes
    return tokens, info


def sample_confidence(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int,
                      temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                      generator: torch.Generator | None, fixed: torch.Tensor | None = None,
                      on_step: OnStep | None = None, schedule: str = "linear",
                      noise: float = 0.0, order: str = "sampled", noise_decay: float = 1.0,
                      prior_weight: float = 0.0, parallel_threshold: float = 0.0,
                      max_per_pass: int = 0) -> tuple[torch.Tensor, dict]:
    """Confidence-ordered unmasking: MaskGIT (Chang et al. 2022), LLaDA low-confidence remasking (Nie et al. 2025).

    Each step samples a token for every masked position ([MASK] excluded) and keeps the k most confident
    (probability of the sampled token). With N masks at the start, after step i at most
    floor(N * gamma(i / steps)) stay masked, gamma(r) = 1 - r (``linear``) or cos(pi r / 2) (``cosine``),
    so all are revealed after ``steps``. ``noise`` > 0 adds noise x (1 - i/steps)^noise_decay x Gumbel (float64)
    to the log-confidences, MaskGIT's annealed randomised ordering (noise_decay 1 is MaskGIT's linear decay).
    ``prior_weight`` w > 0 subtracts w x log p(drawn | the canvas at the first pass) from each confidence (see
    ORDERS): at w = 0.7 the remask sampler keeps the text's character entropy (BENCHMARKS.md, section 8).
    ``parallel_threshold`` tau > 0 also reveals every mask whose draw has probability > tau, at least one per
    pass, at most ``max_per_pass`` (``_confident_fill``): few passes where the model is sure, one where not.
    """
    tokens, _ = _prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)  # fills only masks
    _masked_fraction(schedule, 0.0)  # validate the names up front
    _check_order(order)
    _check_prior_weight(prior_weight, order)
    _check_parallel(parallel_threshold, max_per_pass)
    info, forward = new_info(), _Forward(model)
    n_start = (tokens == mask_token_id).sum(-1)  # (B,)
    prior = None  # (B, L, V): prior_weight x log-probs of the first pass
    with inference_mode(model):
        for step in range(1, steps + 1):
            masked = tokens == mask_token_id
            if not masked.any():
                break
            keep = 0.0 if step == steps else _masked_fraction(schedule, step / steps)
            k = (masked.sum(-1) - torch.floor(n_start * keep).long()).clamp(min=0)  # (B,) to reveal now
            revealed, passes = torch.zeros_like(masked), forward.passes
            if k.any() or parallel_threshold > 0:
                logits = forward(tokens)
                prior = _prior(logits, prior_weight, mask_token_id) if prior is None else prior
                tokens, revealed = _confident_fill(logits, tokens, k, mask_token_id, temperature, top_k, top_p,
                                                   generator, noise * (1 - step / steps) ** noise_decay, order, prior,
                                                   parallel_threshold, max_per_pass)
            _count_pass(info, forward, passes, masked.any(-1))
            info["steps_used"] = step
            _report(info, on_step, step, tokens, revealed)
    info["forward_passes"] = forward.passes
    return tokens, info


def sample_remask(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  generator: torch.Generator | None, fixed: torch.Tensor | None = None,
                  on_step: OnStep | None = None, schedule: str = "linear", noise: float = 0.0,
                  remask_frac: float = 0.2, threshold: float = 0.5,
                  order: str = "sampled", noise_decay: float = 1.0, prior_weight: float = 0.0,
                  parallel_threshold: float = 0.0, max_per_pass: int = 0) -> tuple[torch.Tensor, dict]:
    """Fill by confidence and correct: re-mask tokens the model itself flags as wrong.

    The model is trained to predict [MASK] on tokens that were randomly corrupted (SPEC.md 2.2), so
    P([MASK] | x) at a position holding a token is its estimate that the token is wrong. Each step i:
    1. one forward on the current canvas x;
    2. fill: reveal masked positions by confidence (as ``confidence``, with its ``order``, ``noise``,
       ``noise_decay``, ``prior_weight`` and ``parallel_threshold`` / ``max_per_pass``) until at most
       floor(E * gamma(i / steps)) masks remain, E = number of non-fixed positions; re-masked positions count
       as masks again, so they are refilled at the schedule's pace;
    3. re-mask (not on the last step): among non-fixed positions that held a token in x, those with
       P([MASK] | x) > ``threshold`` are candidates; the most suspicious
       budget = floor(remask_frac * R * (1 - i / steps)) of them become [MASK] (R = such positions in the row).
       The budget shrinks to 0, and the last step fills every mask and re-masks nothing, so the sampler
       always ends within ``steps`` steps with no masks. It stops early at a fixed point (no mask, nothing
       flagged). P([MASK] | x) is the untempered softmax; tokens revealed in this step are judged next step.
    """
    tokens, fixed = _prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)
    _masked_fraction(schedule, 0.0)
    _check_order(order)
    _check_prior_weight(prior_weight, order)
    _check_parallel(parallel_threshold, max_per_pass)
    if not 0.0 <= remask_frac <= 1.0:
        raise ValueError(f"remask_frac must be in [0, 1], got {remask_frac}")
    info, forward = new_info(), _Forward(model)
    editable = ~fixed  # (B, L)
    n_edit = editable.sum(-1)  # (B,)
    prior = None  # (B, L, V): prior_weight x log-probs of the first pass
    with inference_mode(model):
        for step in range(1, steps + 1):
            last, passes = step == steps, forward.passes
            logits = forward(tokens)  # (B, L, V), judged on the canvas before this step's changes
            prior = _prior(logits, prior_weight, mask_token_id) if prior is None else prior
            masked = tokens == mask_token_id
            keep = 0.0 if last else _masked_fraction(schedule, step / steps)
            k = (masked.sum(-1) - torch.floor(n_edit * keep).long()).clamp(min=0)  # (B,)
            new, revealed = tokens, torch.zeros_like(masked)
            if k.any() or (parallel_threshold > 0 and masked.any()):
                new, revealed = _confident_fill(logits, tokens, k, mask_token_id, temperature, top_k, top_p,
                                                generator, noise * (1 - step / steps) ** noise_decay, order, prior,
                                                parallel_threshold, max_per_pass)
            remasked = torch.zeros_like(masked)
            if not last:
                # P([MASK] | x) = exp(logit_mask - logsumexp): no (B, L, V) softmax needed
                logits32 = logits.float()
                p_mask = (logits32[..., mask_token_id] - torch.logsumexp(logits32, dim=-1)).exp()  # (B, L)
                candidates = editable & ~masked & (p_mask > threshold)
                budget = torch.floor(remask_frac * (editable & ~masked).sum(-1) * (1 - step / steps)).long()
                scores = torch.where(candidates, p_mask.double(), float("-inf"))
                remasked = _top_k_mask(scores, budget) & candidates
                new = new.masked_fill(remasked, mask_token_id)
            _count_pass(info, forward, passes, masked.any(-1) | remasked.any(-1))
            if not masked.any() and not remasked.any():
                break  # fixed point: nothing to fill, nothing flagged; later steps would change nothing
            tokens = new
            info["steps_used"] = step
            _report(info, on_step, step, tokens, revealed, remasked)
    info["forward_passes"] = forward.passes
    return tokens, info


SAMPLERS: dict[str, SamplerFn] = {
    "seed": sample_seed,
    "ancestral": sample_ancestral,
    "confidence": sample_confidence,
    "remask": sample_remask,
}


def get_sampler(name: str) -> SamplerFn:
    """The diffusion sampler called ``name``; ValueError listing the choices otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
