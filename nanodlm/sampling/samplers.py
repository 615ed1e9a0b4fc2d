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

import inspect
import itertools
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch.nn import functional as F

from ..core.errors import UserError, check_finite
from .ar_sampling import Model, filter_logits, inference_mode
from .reveal import (
    ORDERS,
    SCHEDULES,
    CachedForward,
    OnStep,
    SamplerFn,
    check_order,
    check_parallel,
    check_prior_weight,
    confident_fill,
    first_pass_prior,
    masked_fraction,
    new_info,
    prepare,
    report,
    sample_fill,
    top_k_mask,
)
from .speculative import sample_ar, sample_speculative

__all__ = ["APPROX_CACHES", "CAUSAL_SAMPLERS", "DIFFUSION_SAMPLERS", "ORDERS", "SAMPLERS", "SCHEDULES",
           "SamplerOptions", "get_sampler", "new_info", "sample_ancestral", "sample_confidence", "sample_remask",
           "sample_seed", "sampler_keys"]


APPROX_CACHES = ("none", "prefix", "dual")  # semi-autoregressive decoding of a bidirectional model (blockwise.py)


# --- the options: one declaration, one set of defaults --------------------------------------------------

@dataclass
class SamplerOptions:
    """Every sampling option, for every model type. A sampler receives the fields its signature names
    (``sampler_keys``); the samplers' own keyword defaults are these (``SamplerOptions.noise`` ...)."""

    sampler: str = "remask"  # diffusion: remask (default) | confidence | ancestral | seed; AR: ar | speculative (TiDAR)
    steps: int = 64  # diffusion denoising steps (alias max_steps, the spec's name); block diffusion: over all blocks
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None  # keep the k most likely tokens (None = all)
    top_p: float | None = None  # nucleus: keep the most likely tokens up to this mass (None = all)
    schedule: str = "cosine"  # confidence / remask: masks left after step i, linear | cosine | threshold (no floor)
    noise: float = 1.0  # confidence / remask: Gumbel noise on the reveal order (0 = greedy by confidence)
    noise_decay: float = 1.0  # step i of n uses noise * (1 - i/n) ** noise_decay (1 = MaskGIT's linear annealing)
    order: str = "sampled"  # confidence / remask reveal order: sampled (MaskGIT) | entropy | margin
    prior_weight: float = 0.7  # confidence / remask, order sampled: rank by log p(x|ctx) - w log p(x|start)
    remask_frac: float = 0.2  # remask: most of the revealed tokens re-masked per step (shrinks to 0)
    threshold: float = 0.5  # remask: re-mask only tokens with P([MASK] | x) above this
    parallel_threshold: float = 0.0  # confidence / remask: also reveal every draw with p > this (Fast-dLLM; 0 = off)
    max_per_pass: int = 0  # confidence / remask: most reveals per pass, the schedule's included (0 = no cap)
    use_kv_cache: bool = True  # gpt2 and block diffusion: cache keys/values of the text so far
    semi_ar_block: int = 0  # bidirectional diffusion: fill the canvas left to right in blocks of this size (0 = off)
    approx_cache: str = "none"  # with semi_ar_block: Fast-dLLM's approximate KV cache, none | prefix | dual
    new_block: int | None = None  # diffusion text longer than block_size: new tokens per window (block_size // 2)
    draft_len: int | None = None  # speculative: [MASK] per pass, k (None = the model's); a pass writes 1..k tokens
    predraft: bool = False  # speculative: draft for every outcome of the verification (TiDAR), not only all-accepted
    rolling_cache: bool = False  # rope gpt2 past block_size: evict old keys, keep drafting (approximate, not AR)

    def __post_init__(self) -> None:
        def bad(key: str, rule: str) -> UserError:
            return UserError(f"sampler option '{key}' {rule}; got {getattr(self, key)!r}")

        check_finite(self, "sampler option")  # nan and inf first: they pass every `x < 0` below
        for key, allowed in (("sampler", tuple(SAMPLERS)), ("schedule", SCHEDULES), ("order", ORDERS),
                             ("approx_cache", APPROX_CACHES)):
            if getattr(self, key) not in allowed:
                raise bad(key, f"must be one of {', '.join(allowed)}")
        if self.steps < 1:
            raise bad("steps", "must be >= 1")
        if self.temperature < 0:
            raise bad("temperature", "must be >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise bad("top_k", "must be >= 1 (None disables it)")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "must be in (0, 1] (None disables it)")
        if self.noise < 0 or self.noise_decay < 0:
            raise bad("noise" if self.noise < 0 else "noise_decay", "must be >= 0")
        if self.prior_weight < 0:
            raise bad("prior_weight", "must be >= 0 (0 = MaskGIT's ranking)")
        if self.prior_weight > 0 and self.order != "sampled" and "prior_weight" in sampler_keys(self.sampler):
            raise bad("prior_weight", f"needs order=sampled; with order={self.order} set prior_weight=0")
        if not 0.0 <= self.remask_frac <= 1.0:
            raise bad("remask_frac", "must be in [0, 1]")
        if not 0.0 <= self.threshold <= 1.0:
            raise bad("threshold", "must be in [0, 1] (a probability)")
        if not 0.0 <= self.parallel_threshold < 1.0:
            raise bad("parallel_threshold", "must be in [0, 1) (0 = off)")
        if self.max_per_pass < 0:
            raise bad("max_per_pass", "must be >= 0 (0 = no cap)")
        if self.schedule == "threshold" and self.parallel_threshold == 0 and self.sampler in ("confidence", "remask"):
            raise bad("schedule", "'threshold' lets --parallel_threshold alone decide each pass: set it > 0")
        if self.semi_ar_block < 0:
            raise bad("semi_ar_block", "must be >= 0 (0 = the whole canvas at once)")
        if self.new_block is not None and self.new_block < 1:
            raise bad("new_block", "must be >= 1 (None = block_size // 2)")
        if self.draft_len is not None and self.draft_len < 1:
            raise bad("draft_len", "must be >= 1 (None = the model's)")

    def sampler_kwargs(self) -> dict[str, Any]:
        """The options ``self.sampler`` takes, by name, ready for ``get_sampler(self.sampler)(..., **kwargs)``."""
        return {key: getattr(self, key) for key in sampler_keys(self.sampler)}


# --- samplers ---------------------------------------------------------------------------------------------

def sample_seed(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int = SamplerOptions.steps,
                temperature: float = SamplerOptions.temperature, top_k: int | None = SamplerOptions.top_k,
                top_p: float | None = SamplerOptions.top_p, generator: torch.Generator | None,
                fixed: torch.Tensor | None = None, on_step: OnStep | None = None) -> tuple[torch.Tensor, dict]:
    """The specification's sampler (its ``generate_diffusion``), draw for draw.

    For up to ``steps`` steps: sample EVERY position from softmax(top-k/top-p filtered logits / temperature)
    and overwrite only positions that are still [MASK] (a sampled [MASK] leaves the position masked); stop
    early once no [MASK] remains. If masks remain after the loop, one final pass samples every position from
    softmax(logits / temperature) with [MASK] forbidden and NO top-k / top-p, and fills the masked ones
    (info["final_pass"]; reported as step steps_used + 1). Each pass is one multinomial over all B x L
    positions, as in the specification, so the same generator gives the same tokens. temperature 0 = argmax.
    """
    tokens, _ = prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)  # fills only masks
    info, forward = new_info(), CachedForward(model)
    info["final_pass"] = False

    def draw(logits: torch.Tensor) -> torch.Tensor:  # (B, L, V) filtered float32 logits -> (B, L) ids
        if temperature == 0:
            return logits.argmax(-1)
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs.view(-1, probs.size(-1)), 1, generator=generator).view(tokens.shape)

    with inference_mode(model):
        for step in range(1, steps + 1):
            masked = tokens == mask_token_id  # (B, L)
            if not masked.any():
                break
            sampled = draw(filter_logits(forward(tokens, masked.any(-1)), temperature, top_k, top_p))  # (B, L)
            tokens = torch.where(masked, sampled, tokens)  # fixed/given positions are never [MASK], never touched
            info["steps_used"] = step
            report(info, on_step, step, tokens, masked & (tokens != mask_token_id))
        masked = tokens == mask_token_id
        if masked.any():
            logits = filter_logits(forward(tokens, masked.any(-1)), temperature)  # / temperature only
            logits[..., mask_token_id] = float("-inf")  # forbid [MASK]
            tokens = torch.where(masked, draw(logits), tokens)
            info["final_pass"] = True
            report(info, on_step, info["steps_used"] + 1, tokens, masked)
    info["forward_passes"], info["passes_per_sample"] = forward.passes, forward.per_sample()
    return tokens, info


def sample_ancestral(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int = SamplerOptions.steps,
                     temperature: float = SamplerOptions.temperature, top_k: int | None = SamplerOptions.top_k,
                     top_p: float | None = SamplerOptions.top_p,
                     generator: torch.Generator | None, fixed: torch.Tensor | None = None,
                     on_step: OnStep | None = None) -> tuple[torch.Tensor, dict]:
    """MDLM ancestral sampling (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models").

    Time runs t = 1 -> 0 on a uniform grid of ``steps`` steps. Going from t to s, each masked position is
    revealed with probability (t - s) / t (the reverse posterior for alpha_t = 1 - t), its token drawn from
    the model's distribution with [MASK] excluded; revealed tokens stay. At s = 0 the probability is 1, so
    every mask is revealed. The forward pass is skipped while the canvas is unchanged (cached logits).
    """
    tokens, _ = prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)  # fills only masks
    info, forward = new_info(), CachedForward(model)
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
                logits = forward(tokens, revealed.any(-1))
                ids = sample_fill(logits[revealed], mask_token_id, temperature, top_k, top_p, generator)[0]
                tokens = tokens.clone()
                tokens[revealed] = ids
            info["steps_used"] = step
            report(info, on_step, step, tokens, revealed)
    info["forward_passes"], info["passes_per_sample"] = forward.passes, forward.per_sample()
    return tokens, info


def sample_confidence(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int = SamplerOptions.steps,
                      temperature: float = SamplerOptions.temperature, top_k: int | None = SamplerOptions.top_k,
                      top_p: float | None = SamplerOptions.top_p, generator: torch.Generator | None,
                      fixed: torch.Tensor | None = None, on_step: OnStep | None = None,
                      schedule: str = SamplerOptions.schedule, noise: float = SamplerOptions.noise,
                      order: str = SamplerOptions.order, noise_decay: float = SamplerOptions.noise_decay,
                      prior_weight: float = SamplerOptions.prior_weight,
                      parallel_threshold: float = SamplerOptions.parallel_threshold,
                      max_per_pass: int = SamplerOptions.max_per_pass) -> tuple[torch.Tensor, dict]:
    """Confidence-ordered unmasking: MaskGIT (Chang et al. 2022), LLaDA low-confidence remasking (Nie et al. 2025).

    Each step samples a token for every masked position ([MASK] excluded) and keeps the k most confident
    (probability of the sampled token). With N masks at the start, after step i at most
    floor(N * gamma(i / steps)) stay masked, gamma(r) = 1 - r (``linear``) or cos(pi r / 2) (``cosine``),
    so all are revealed after ``steps``. ``noise`` > 0 adds noise x (1 - i/steps)^noise_decay x Gumbel (float64)
    to the log-confidences, MaskGIT's annealed randomised ordering (noise_decay 1 is MaskGIT's linear decay).
    ``prior_weight`` w > 0 subtracts w x log p(drawn | the canvas at the first pass) from each confidence (see
    ORDERS): at w = 0.7 the remask sampler keeps the text's character entropy (BENCHMARKS.md, section 8).
    ``parallel_threshold`` tau > 0 also reveals every mask whose draw has probability > tau, at least one per
    pass (``confident_fill``): few passes where the model is sure, one where not. The schedule's count stays a
    floor; ``schedule="threshold"`` drops it, so tau alone decides until the last step (Fast-dLLM).
    ``max_per_pass`` > 0 caps every pass's reveals; where it cuts the floor, passes continue after ``steps``.
    """
    tokens, _ = prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)  # fills only masks
    masked_fraction(schedule, 0.0)  # validate the names up front
    check_order(order)
    check_prior_weight(prior_weight, order)
    check_parallel(parallel_threshold, max_per_pass, schedule)
    info, forward = new_info(), CachedForward(model)
    n_start = (tokens == mask_token_id).sum(-1)  # (B,)
    prior = None  # (B, L, V): prior_weight x log-probs of the first pass
    with inference_mode(model):
        for step in itertools.count(1):  # ends within `steps` unless max_per_pass cuts the floor
            masked = tokens == mask_token_id
            if not masked.any():
                break
            r = min(step / steps, 1.0)
            keep = 0.0 if r == 1 else masked_fraction(schedule, r)
            k = (masked.sum(-1) - torch.floor(n_start * keep).long()).clamp(min=0)  # (B,) to reveal now
            revealed = torch.zeros_like(masked)
            need = (k > 0) | (masked.any(-1) if parallel_threshold > 0 else torch.zeros_like(k, dtype=torch.bool))
            if need.any():
                logits = forward(tokens, need)
                prior = first_pass_prior(logits, prior_weight, mask_token_id) if prior is None else prior
                tokens, revealed = confident_fill(logits, tokens, k, mask_token_id, temperature, top_k, top_p,
                                                   generator, noise * (1 - r) ** noise_decay, order, prior,
                                                   parallel_threshold, max_per_pass)
            info["steps_used"] = step
            report(info, on_step, step, tokens, revealed)
    info["forward_passes"], info["passes_per_sample"] = forward.passes, forward.per_sample()
    return tokens, info


def sample_remask(model: Model, canvas: torch.Tensor, *, mask_token_id: int, steps: int = SamplerOptions.steps,
                  temperature: float = SamplerOptions.temperature, top_k: int | None = SamplerOptions.top_k,
                  top_p: float | None = SamplerOptions.top_p, generator: torch.Generator | None,
                  fixed: torch.Tensor | None = None, on_step: OnStep | None = None,
                  schedule: str = SamplerOptions.schedule, noise: float = SamplerOptions.noise,
                  remask_frac: float = SamplerOptions.remask_frac, threshold: float = SamplerOptions.threshold,
                  order: str = SamplerOptions.order, noise_decay: float = SamplerOptions.noise_decay,
                  prior_weight: float = SamplerOptions.prior_weight,
                  parallel_threshold: float = SamplerOptions.parallel_threshold,
                  max_per_pass: int = SamplerOptions.max_per_pass) -> tuple[torch.Tensor, dict]:
    """Fill by confidence and correct: re-mask tokens the model itself flags as wrong.

    The model is trained to predict [MASK] on tokens that were randomly corrupted (the specification's training), so
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
    tokens, fixed = prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)
    masked_fraction(schedule, 0.0)
    check_order(order)
    check_prior_weight(prior_weight, order)
    check_parallel(parallel_threshold, max_per_pass, schedule)
    if not 0.0 <= remask_frac <= 1.0:
        raise ValueError(f"remask_frac must be in [0, 1], got {remask_frac}")
    info, forward = new_info(), CachedForward(model)
    editable = ~fixed  # (B, L)
    n_edit = editable.sum(-1)  # (B,)
    prior = None  # (B, L, V): prior_weight x log-probs of the first pass
    with inference_mode(model):
        for step in itertools.count(1):  # ends within `steps` unless max_per_pass cuts the floor
            last, r = step >= steps, min(step / steps, 1.0)
            if last and not (tokens == mask_token_id).any():
                break  # a full canvas at the last step: no fill, no re-mask, no pass to run
            logits = forward(tokens)  # (B, L, V), judged on the canvas before this step's changes
            prior = first_pass_prior(logits, prior_weight, mask_token_id) if prior is None else prior
            masked = tokens == mask_token_id
            keep = 0.0 if last else masked_fraction(schedule, r)
            k = (masked.sum(-1) - torch.floor(n_edit * keep).long()).clamp(min=0)  # (B,)
            new, revealed = tokens, torch.zeros_like(masked)
            if k.any() or (parallel_threshold > 0 and masked.any()):
                new, revealed = confident_fill(logits, tokens, k, mask_token_id, temperature, top_k, top_p,
                                                generator, noise * (1 - r) ** noise_decay, order, prior,
                                                parallel_threshold, max_per_pass)
            remasked = torch.zeros_like(masked)
            if not last:
                # P([MASK] | x) = exp(logit_mask - logsumexp): no (B, L, V) softmax needed
                logits32 = logits.float()
                p_mask = (logits32[..., mask_token_id] - torch.logsumexp(logits32, dim=-1)).exp()  # (B, L)
                candidates = editable & ~masked & (p_mask > threshold)
                budget = torch.floor(remask_frac * (editable & ~masked).sum(-1) * (1 - r)).long()
                scores = torch.where(candidates, p_mask.double(), float("-inf"))
                remasked = top_k_mask(scores, budget) & candidates
                new = new.masked_fill(remasked, mask_token_id)
            if not masked.any() and not remasked.any():
                break  # fixed point: nothing to fill, nothing flagged (this judging pass counted; it ran)
            tokens = new
            info["steps_used"] = step
            report(info, on_step, step, tokens, revealed, remasked)
            if last and not (tokens == mask_token_id).any():
                break
    info["forward_passes"], info["passes_per_sample"] = forward.passes, forward.per_sample()
    return tokens, info


# The registry: name -> sampler. Which options a sampler takes is its signature (``sampler_keys``), so a new
# sampler is one entry here and each option reaches it without being repacked.
SAMPLERS: dict[str, SamplerFn] = {
    "seed": sample_seed,
    "ancestral": sample_ancestral,
    "confidence": sample_confidence,
    "remask": sample_remask,
    "ar": sample_ar,  # AR models (gpt2, a TiDAR model's AR stream): one token per pass, KV cache
    "speculative": sample_speculative,  # TiDAR models (objective=tidar): mask drafts verified by the AR stream
}
CAUSAL_SAMPLERS = ("ar", "speculative")  # for AR models only: they continue a prompt left to right
DIFFUSION_SAMPLERS = tuple(name for name in SAMPLERS if name not in CAUSAL_SAMPLERS)
OPTION_KEYS = tuple(f.name for f in fields(SamplerOptions))


def get_sampler(name: str) -> SamplerFn:
    """The diffusion sampler called ``name``; ValueError listing the choices otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def sampler_keys(name: str) -> tuple[str, ...]:
    """The SamplerOptions fields sampler ``name`` takes: the keyword parameters of its function that are options."""
    params = inspect.signature(get_sampler(name)).parameters
    return tuple(key for key in OPTION_KEYS if key in params)
