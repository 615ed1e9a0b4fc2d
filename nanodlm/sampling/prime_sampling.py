"""Samplers for prime models (partial masking, subtokens.py): they reveal sub-tokens, so a step may fix some digits of a
character and leave the others masked (MDM-Prime, Chao et al. 2025, arXiv:2505.18495).

Same signature and ``info`` as the samplers in ``samplers.py`` (``generate`` swaps these in for a prime model by
name, ``PRIME_SAMPLERS``); the canvas holds tokens, [MASK] and partial ids (``subtokens.state_ids``) while it fills, and
only tokens when it returns. A position's token is always drawn from the model's distribution over the tokens
consistent with its known digits (``subtokens.restrict``), and a step writes some of that token's digits: so every
state stays consistent with a real token, and a finished position holds a token id < mask_token_id.
The other samplers (``remask``, ``seed``) work on a prime model too, a whole token at a time.

``committed_per_step`` counts positions with a digit revealed in the step, ``digits_per_step`` the digits.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..model.subtokens import Code, digit_log_marginals, model_code, restrict, state_digits, state_ids
from .ar_sampling import Model, inference_mode, sample_with_logprobs
from .reveal import (
    CachedForward,
    OnStep,
    SamplerFn,
    check_order,
    check_parallel,
    check_prior_weight,
    gumbel,
    masked_fraction,
    new_info,
    prepare,
    report,
    top_k_mask,
)
from .samplers import SamplerOptions

__all__ = ["PRIME_SAMPLERS", "sample_prime_ancestral", "sample_prime_confidence"]


def _start(model: Model, canvas: torch.Tensor, mask_token_id: int, steps: int, fixed: torch.Tensor | None,
           temperature: float, top_k: int | None, top_p: float | None) -> tuple[Code, torch.Tensor, torch.Tensor]:
    """(the model's code, a copy of the canvas (B, L), its digit states (B, L, bits)) after the usual checks."""
    code = model_code(model)
    if code is None:
        raise ValueError("the prime samplers need a prime model (trained with objective=prime)")
    if mask_token_id != code.vocab:
        raise ValueError(f"mask_token_id {mask_token_id} is not the prime model's [MASK] ({code.vocab})")
    tokens, _ = prepare(canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)
    if (tokens < 0).any() or (tokens > mask_token_id).any():
        raise ValueError(f"the canvas must hold token ids and [MASK] ({mask_token_id}) only")
    return code, tokens, state_digits(tokens, code)


def _draw(logits: torch.Tensor, digits: torch.Tensor, code: Code, temperature: float, top_k: int | None,
          top_p: float | None, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row, from the tokens consistent with the row's digit states: logits (N, V'), digits (N, bits)
    -> (ids (N,), log-probs (N, V') of the filtered distribution they were drawn from). The consistency mask (and
    [MASK]'s) comes before top-k / top-p, so those choose among allowed tokens."""
    return sample_with_logprobs(restrict(logits.float(), digits, code), temperature, top_k, top_p, generator)


def _write(tokens: torch.Tensor, digits: torch.Tensor, pos: torch.Tensor, new: torch.Tensor, ids: torch.Tensor,
           code: Code) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``pos`` (B, L) get digit states ``new`` (N, bits), consistent with their drawn tokens ``ids``."""
    digits, tokens = digits.clone(), tokens.clone()
    digits[pos] = new
    tokens[pos] = state_ids(new, ids, code)
    return tokens, digits


def sample_prime_ancestral(model: Model, canvas: torch.Tensor, *, mask_token_id: int,
                           steps: int = SamplerOptions.steps, temperature: float = SamplerOptions.temperature,
                           top_k: int | None = SamplerOptions.top_k, top_p: float | None = SamplerOptions.top_p,
                           generator: torch.Generator | None, fixed: torch.Tensor | None = None,
                           on_step: OnStep | None = None) -> tuple[torch.Tensor, dict]:
    """Ancestral sampling over sub-tokens: ``samplers.sample_ancestral`` with digits in place of tokens.

    On the grid t = 1 -> 0 of ``steps`` steps, each masked digit is revealed with probability (t - s) / t (all at
    the last step). A position with a digit to reveal draws one token from the model's distribution over the
    tokens consistent with its known digits, and writes that token's digits where they are revealed: the joint
    reverse step of MDM-Prime. The forward pass is skipped while the canvas is unchanged. With one digit per
    token (prime_bits 1) it draws exactly what ``sample_ancestral`` draws (tested).
    """
    code, tokens, digits = _start(model, canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)
    info, forward = new_info(), CachedForward(model)
    info["digits_per_step"] = []
    with inference_mode(model):
        for step in range(1, steps + 1):
            hidden = digits == code.base  # (B, L, bits): masked digits
            if not hidden.any():
                break
            t, s = 1.0 - (step - 1) / steps, 1.0 - step / steps
            p_reveal = 1.0 if step == steps else (t - s) / t
            u = torch.rand(hidden.shape, generator=generator, device=tokens.device)
            revealed = hidden & (u < p_reveal)  # (B, L, bits)
            pos = revealed.any(-1)  # (B, L)
            if pos.any():
                logits = forward(tokens, pos.any(-1))
                ids, _ = _draw(logits[pos], digits[pos], code, temperature, top_k, top_p, generator)
                new = torch.where(revealed[pos], code.table[ids], digits[pos])  # (N, bits)
                tokens, digits = _write(tokens, digits, pos, new, ids, code)
            info["steps_used"] = step
            info["digits_per_step"].append(int(revealed.sum()))
            report(info, on_step, step, tokens, pos)
    info["forward_passes"], info["passes_per_sample"] = forward.passes, forward.per_sample()
    return tokens, info


def _digit_confidence(log_marg: torch.Tensor, drawn: torch.Tensor, order: str) -> tuple[torch.Tensor, torch.Tensor]:
    """log_marg (N, bits, base) digit log-marginals, drawn (N, bits) the drawn token's digits -> (confidence,
    log P(drawn digit)) both (N, bits). Confidence as ``reveal.ORDERS`` says, per digit: sampled = log P(drawn),
    entropy = -H(digit), margin = log P(top1) - log P(top2)."""
    logp = log_marg.gather(-1, drawn[..., None]).squeeze(-1)
    if order == "entropy":
        return (log_marg.exp() * log_marg.clamp(min=torch.finfo(log_marg.dtype).min)).sum(-1), logp
    if order == "margin":
        top2 = log_marg.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1], logp
    return logp, logp


def sample_prime_confidence(model: Model, canvas: torch.Tensor, *, mask_token_id: int,
                            steps: int = SamplerOptions.steps, temperature: float = SamplerOptions.temperature,
                            top_k: int | None = SamplerOptions.top_k, top_p: float | None = SamplerOptions.top_p,
                            generator: torch.Generator | None, fixed: torch.Tensor | None = None,
                            on_step: OnStep | None = None, schedule: str = SamplerOptions.schedule,
                            noise: float = SamplerOptions.noise, order: str = SamplerOptions.order,
                            noise_decay: float = SamplerOptions.noise_decay,
                            prior_weight: float = SamplerOptions.prior_weight,
                            parallel_threshold: float = SamplerOptions.parallel_threshold,
                            max_per_pass: int = SamplerOptions.max_per_pass) -> tuple[torch.Tensor, dict]:
    """Confidence-ordered unmasking over sub-tokens: ``samplers.sample_confidence`` with digits in place of tokens.

    Each step draws a token for every position with a masked digit (from the tokens consistent with its known
    digits) and reveals the most confident masked digits of the canvas, each with its drawn token's value, until
    at most floor(N * gamma(i / steps)) digits stay masked (N: masked digits at the start; ``schedule``). A digit's
    confidence is read from its marginal under the distribution the token was drawn from (``order``: the drawn
    value's log-probability, -entropy, or the margin), minus ``prior_weight`` x the drawn value's log-marginal at
    the first pass (``order`` sampled), plus annealed Gumbel ``noise``. ``parallel_threshold`` tau > 0 also reveals
    every masked digit whose drawn value has probability > tau; ``max_per_pass`` caps the digits of a pass.
    """
    code, tokens, digits = _start(model, canvas, mask_token_id, steps, fixed, temperature, top_k, top_p)
    masked_fraction(schedule, 0.0)  # validate the names up front
    check_order(order)
    check_prior_weight(prior_weight, order)
    check_parallel(parallel_threshold, max_per_pass, schedule)
    info, forward = new_info(), CachedForward(model)
    info["digits_per_step"] = []
    B, L, bits = digits.shape
    n_start = (digits == code.base).sum((1, 2))  # (B,)
    prior = None  # (B, L, bits, base): prior_weight x the first pass's digit log-marginals
    with inference_mode(model):
        for step in itertools.count(1):  # ends within `steps` unless max_per_pass cuts the floor
            hidden = digits == code.base  # (B, L, bits)
            if not hidden.any():
                break
            r = min(step / steps, 1.0)
            keep = 0.0 if r == 1 else masked_fraction(schedule, r)
            k = (hidden.sum((1, 2)) - torch.floor(n_start * keep).long()).clamp(min=0)  # (B,) digits to reveal
            revealed = torch.zeros_like(hidden)
            need = (k > 0) | (hidden.any((1, 2)) if parallel_threshold > 0 else torch.zeros_like(k, dtype=torch.bool))
            if need.any():
                logits = forward(tokens, need)
                if prior is None and prior_weight > 0:
                    first = torch.log_softmax(restrict(logits.float(), digits, code), -1).flatten(0, 1)
                    prior = prior_weight * digit_log_marginals(first, code).view(B, L, bits, code.base)
                pos = hidden.any(-1)  # (B, L): positions with a masked digit
                ids, logprobs = _draw(logits[pos], digits[pos], code, temperature, top_k, top_p, generator)
                drawn = code.table[ids]  # (N, bits)
                conf, logp = _digit_confidence(digit_log_marginals(logprobs, code), drawn, order)
                if prior is not None:
                    conf = conf - prior[pos].gather(-1, drawn[..., None]).squeeze(-1)
                scores = torch.full(hidden.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
                scores[pos] = torch.where(hidden[pos], conf.double(), float("-inf"))
                annealed = noise * (1 - r) ** noise_decay
                if annealed > 0:
                    scores = scores + annealed * gumbel(hidden.shape, generator, tokens.device)
                above = None
                if parallel_threshold > 0:
                    above = torch.zeros_like(hidden)
                    above[pos] = hidden[pos] & (logp > math.log(parallel_threshold))
                    k = torch.maximum(k, above.sum((1, 2)).clamp(min=1) * hidden.any((1, 2)))
                    above = above.flatten(1)
                if max_per_pass:
                    k = k.clamp(max=max_per_pass)
                revealed = top_k_mask(scores.flatten(1), k, above).view(B, L, bits) & hidden
                new = torch.where(revealed[pos], drawn, digits[pos])
                changed = pos.clone()
                changed[pos] = revealed[pos].any(-1)
                tokens, digits = _write(tokens, digits, changed, new[changed[pos]], ids[changed[pos]], code)
            info["steps_used"] = step
            info["digits_per_step"].append(int(revealed.sum()))
            report(info, on_step, step, tokens, revealed.any(-1))
    info["forward_passes"], info["passes_per_sample"] = forward.passes, forward.per_sample()
    return tokens, info


# name -> the prime version of that sampler (``generate`` picks it for a prime model; same options)
PRIME_SAMPLERS: dict[str, SamplerFn] = {"ancestral": sample_prime_ancestral, "confidence": sample_prime_confidence}
