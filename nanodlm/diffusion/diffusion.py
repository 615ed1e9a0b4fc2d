"""Masked-diffusion objectives and the likelihood bound, as pure functions (diagnostics: diagnostics.py).

Three training objectives, picked once by name from ``OBJECTIVES`` (no if-ladders):
- ``seed``: the specification's objective (summarised in README, "Diffusion mode in one paragraph"):
  mask + random-token corruption, weighted CE.
- ``mdlm``: the masked-diffusion NELBO with the SUBS parameterisation (Sahoo et al. 2024,
  "Simple and Effective Masked Diffusion Language Models", arXiv:2406.07524; Shi et al. 2024, MD4, arXiv:2406.04329)
  under the linear schedule alpha_t = 1 - t, whose weight -alpha'_t / (1 - alpha_t) is 1/t.
- ``repair``: mdlm plus random-token corruption of visible tokens that the model learns to flag
  with [MASK], so a sampler can re-mask tokens it doubts.
- ``prime``: mdlm over sub-tokens (partial masking, MDM-Prime; loss and bound in prime.py, the code in
  subtokens.py), for a model built with ``prime_bits`` / ``prime_base``.

Block diffusion (``diffusion_block = b > 0`` in the model config; BD3-LM, Arriola et al. 2025,
arXiv:2503.09573): the same objectives, with one diffusion time per block of b tokens instead of per sequence
and the clean text passed beside the corrupted one (``denoise``), so each block's NELBO is conditioned on the
clean blocks before it. The bound sums over blocks; b = block_size is plain MDLM, b = 1 is AR.

Conventions: x is (B, T) long with clean ids in [0, mask_token_id); mask_token_id = vocab_size - 1
(see model.py). Logits are (B, T, vocab_size) and may be bf16; losses are computed in fp32.
All randomness comes from an explicit ``torch.Generator`` that lives on x's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from ..model.subtokens import model_code
from .prime import prime_corrupt, prime_loss, prime_nelbo

# ----------------------------------------------------------------------------- shared helpers


def _check_mask_id(mask_token_id: int) -> None:
    if mask_token_id < 2:
        raise ValueError(f"mask_token_id must be >= 2 (need two real tokens to draw a wrong one), got {mask_token_id}")


def random_ranks(batch: int, T: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B, T) long: row b is a uniformly random permutation rank of each position (argsort of noise).

    ``rank < n`` then selects exactly n positions per row without a Python loop. float32 noise can tie
    (about T^2 / 2^25 per row); a tie only orders two positions deterministically, counts stay exact.
    """
    noise = torch.rand(batch, T, generator=generator, device=device)
    return noise.argsort(dim=1).argsort(dim=1)


def random_wrong_tokens(x: torch.Tensor, mask_token_id: int, generator: torch.Generator) -> torch.Tensor:
    """Same shape as x: a token uniform over the mask_token_id - 1 real ids that differ from x, never [MASK]."""
    _check_mask_id(mask_token_id)
    # draw r in [0, K-1) for K = mask_token_id real ids, then skip over the original: r + (r >= x)
    r = torch.randint(0, mask_token_id - 1, x.shape, generator=generator, device=x.device)
    return r + (r >= x).long()


def subs_log_probs(logits: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """(B, T, V) fp32 log-probabilities with the [MASK] logit set to -inf (SUBS, Sahoo et al. 2024)."""
    is_mask_col = torch.arange(logits.size(-1), device=logits.device) == mask_token_id  # (V,)
    return F.log_softmax(logits.float().masked_fill(is_mask_col, float("-inf")), dim=-1)


def masked_nll(logits: torch.Tensor, x: torch.Tensor, masked: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """(B, T) fp32: -log p_SUBS(x_i | x_t) at masked positions, 0 elsewhere."""
    nll = -subs_log_probs(logits, mask_token_id).gather(-1, x.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return torch.where(masked, nll, torch.zeros_like(nll))  # where, not *, so no 0 * inf


def model_block(model: nn.Module) -> int:
    """The model's diffusion_block (0 for bidirectional or config-less models); unwraps DDP / torch.compile."""
    inner = getattr(model, "module", getattr(model, "_orig_mod", model))
    return int(getattr(getattr(inner, "config", None), "diffusion_block", 0) or 0)


def denoise(model: nn.Module, x_in: torch.Tensor, x: torch.Tensor, block: int) -> torch.Tensor:
    """logits (B, T, V) for the corrupted x_in; a block model (block > 0) also gets the clean x as context."""
    logits, _ = model(x_in, clean=x) if block else model(x_in)
    return logits


def _per_token_t(t: torch.Tensor, T: int, block: int = 0) -> torch.Tensor:
    """t (B,) per sequence, or (B, ceil(T / block)) per block of ``block`` positions -> (B, T) fp32: each
    position's diffusion time. The last block may be shorter than ``block`` when T is not a multiple of it."""
    if t.dim() == 1:
        return t.unsqueeze(1).expand(-1, T)
    if block < 1 or t.size(1) != -(-T // block):
        raise ValueError(f"per-block t of shape {tuple(t.shape)} does not fit T={T} in blocks of {block}")
    return t.repeat_interleave(block, dim=1)[:, :T]


def _full_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) fp32 cross-entropy under the full softmax (the [MASK] logit included)."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1), reduction="none").view(B, T)


# ----------------------------------------------------------------------------- seed objective (the specification's)


def mask_inputs(x: torch.Tensor, rate: float, mask_token_id: int, generator: torch.Generator) -> torch.Tensor:
    """Input-token masking for an AR model (arXiv 2510.04071): each input id of x (B, T) becomes [MASK] with
    probability ``rate``; the targets are the caller's, untouched, so every next token is still predicted."""
    drop = torch.rand(x.shape, generator=generator, device=x.device) < rate  # (B, T)
    return torch.where(drop, torch.full_like(x, mask_token_id), x)


def seed_rates(batch: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,), (B,) fp32: rate_mask ~ U(0, 0.99) and rate_random ~ U(0, 0.99 - rate_mask), one pair per sequence."""
    rate_mask = torch.rand(batch, generator=generator, device=device) * 0.99
    rate_random = torch.rand(batch, generator=generator, device=device) * (0.99 - rate_mask)
    return rate_mask, rate_random


def seed_counts(rate_mask: torch.Tensor, rate_random: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,), (B,) long: n_mask = int(rate_mask * T), n_rand = int(rate_random * (T - n_mask)) (truncation, fp32)."""
    n_mask = (rate_mask * T).long()  # rates are >= 0, so .long() truncates like Python int()
    n_rand = (rate_random * (T - n_mask)).long()
    return n_mask, n_rand


def permutation_corrupt(
    x: torch.Tensor, n_mask: torch.Tensor, n_rand: torch.Tensor, mask_token_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask exactly n_mask[b] and randomise exactly n_rand[b] other positions of row b.

    One random permutation per row: its first n_mask positions become [MASK], the next n_rand become a
    random wrong token. Returns x_in (B, T), is_mask (B, T) bool, is_rand (B, T) bool (disjoint).
    """
    B, T = x.shape
    rank = random_ranks(B, T, generator, x.device)  # (B, T)
    n_mask, n_rand = n_mask.view(B, 1), n_rand.view(B, 1)
    is_mask = rank < n_mask
    is_rand = (rank >= n_mask) & (rank < n_mask + n_rand)
    wrong = random_wrong_tokens(x, mask_token_id, generator)
    x_in = torch.where(is_mask, torch.full_like(x, mask_token_id), torch.where(is_rand, wrong, x))
    return x_in, is_mask, is_rand


def seed_corrupt(x: torch.Tensor, mask_token_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's two-step corruption. x (B, T) clean ids -> x_in (B, T), targets (B, T).

    Per sequence (rates drawn first, by ``seed_rates``, then counts by ``seed_counts``):
    1. rate_mask ~ U(0, 0.99); exactly n_mask = int(rate_mask * T) positions, chosen by a random
       permutation (not Bernoulli draws), become [MASK]; their target is the original token.
    2. rate_random ~ U(0, 0.99 - rate_mask); exactly n_rand = int(rate_random * (T - n_mask)) of the
       *remaining* (= not masked) positions become a random token that differs from the original and is
       never [MASK]; their target is [MASK] ("this token is wrong").
    3. Untouched positions keep target = original token.
    (The spec's sample code took n_rand as a fraction of T; we follow its text, "of the remaining tokens".)
    """
    B, T = x.shape
    n_mask, n_rand = seed_counts(*seed_rates(B, generator, x.device), T)
    x_in, _, is_rand = permutation_corrupt(x, n_mask, n_rand, mask_token_id, generator)
    targets = torch.where(is_rand, torch.full_like(x, mask_token_id), x)
    return x_in, targets


def seed_loss(logits: torch.Tensor, x_in: torch.Tensor, targets: torch.Tensor, mask_token_id: int,
              penalty_keep_mask: float = 0.25, penalty_mask_correct: float = 0.5) -> torch.Tensor:
    """The spec's weighted CE (full softmax, fp32), averaged over ALL B*T positions (not sum of weights).

    Weight 1.0, except where argmax(logits) == [MASK] and
    - "honest I don't know": x_in == [MASK] and target != [MASK]        -> penalty_keep_mask
    - "nervous masking":     x_in == target and target != [MASK]         -> penalty_mask_correct
    """
    ce = _full_ce(logits, targets)  # (B, T)
    says_mask = logits.argmax(dim=-1) == mask_token_id
    keep_mask = says_mask & (x_in == mask_token_id) & (targets != mask_token_id)
    mask_correct = says_mask & (x_in == targets) & (targets != mask_token_id)
    w = torch.ones_like(ce)
    w = torch.where(keep_mask, torch.full_like(w, penalty_keep_mask), w)
    w = torch.where(mask_correct, torch.full_like(w, penalty_mask_correct), w)
    return (w * ce).mean()


# ----------------------------------------------------------------------------- MDLM (Sahoo et al. 2024)


def stratified_t(batch: int, generator: torch.Generator, device: torch.device, eps: float = 1e-3,
                 t_max: float = 1.0) -> torch.Tensor:
    """(B,) fp32 in [eps, t_max): t_b = eps + (t_max - eps) * (u + b) / B with one shared u ~ U(0,1), shuffled.

    Low-discrepancy sampling of the diffusion time (Kingma et al. 2021, VDM, arXiv:2107.00630; used by MDLM):
    exactly one t per stratum, so the batch loss has lower variance; the shuffle decorrelates t from
    the row index (rows may be ordered by data position).
    """
    u = torch.rand(1, generator=generator, device=device)
    t = eps + (t_max - eps) * (u + torch.arange(batch, device=device)) / batch
    return t[torch.rand(batch, generator=generator, device=device).argsort()]


def mdlm_corrupt(
    x: torch.Tensor, mask_token_id: int, generator: torch.Generator, eps: float = 1e-3, block: int = 0,
    t_max: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward process q(x_t | x) for alpha_t = 1 - t: x (B, T) -> x_t (B, T), t, masked (B, T) bool.

    Each token is masked independently with probability t (Bernoulli, unlike seed's exact counts).
    t is (B,), one time per sequence, or with block > 0 (B, ceil(T / block)), one per block, stratified
    over all blocks of the batch. t ~ U(eps, t_max); t_max < 1 with a raised eps is BD3-LM's clipped schedule
    (Arriola et al. 2025): it trains on a lower-variance slice of the bound; evaluation still covers (0, 1).
    """
    B, T = x.shape
    if block:
        n_blocks = -(-T // block)
        t = stratified_t(B * n_blocks, generator, x.device, eps, t_max).view(B, n_blocks)
    else:
        t = stratified_t(B, generator, x.device, eps, t_max)
    masked = torch.rand(B, T, generator=generator, device=x.device) < _per_token_t(t, T, block)  # P(rand < t) = t
    return x.masked_fill(masked, mask_token_id), t, masked


def mdlm_loss(
    logits: torch.Tensor, x: torch.Tensor, masked: torch.Tensor, t: torch.Tensor, mask_token_id: int, block: int = 0
) -> torch.Tensor:
    """NELBO per token (nats): sum over masked positions of -log p_SUBS(x_i | x_t) / t, divided by B*T.

    Continuous-time MDLM bound (Sahoo et al. 2024; Shi et al. 2024) with alpha_t = 1 - t:
    weight alpha'_t / (1 - alpha_t) = -1/t. Its expectation over t ~ U(0,1) and x_t is the NELBO.
    t: (B,) per sequence or (B, n_blocks) per block of ``block`` positions (block diffusion: a sum of per-block
    NELBOs).
    """
    nll = masked_nll(logits, x, masked, mask_token_id)  # (B, T)
    return (nll / _per_token_t(t, x.size(1), block)).sum() / x.numel()


# ----------------------------------------------------------------------------- repair (mdlm + flagging)


def repair_corrupt(
    x: torch.Tensor, mask_token_id: int, generator: torch.Generator, eps: float = 1e-3, repair_rate_max: float = 0.1,
    block: int = 0, t_max: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mdlm masking, then each visible token is flipped to a random wrong token with probability rho_b.

    rho_b ~ U(0, repair_rate_max) per sequence; flips are Bernoulli like the masking. Returns
    x_in (B, T), t (B,), masked (B, T) bool, flipped (B, T) bool (disjoint from masked; never [MASK]).
    """
    B, T = x.shape
    x_t, t, masked = mdlm_corrupt(x, mask_token_id, generator, eps, block, t_max)
    rho = torch.rand(B, 1, generator=generator, device=x.device) * repair_rate_max
    flipped = ~masked & (torch.rand(B, T, generator=generator, device=x.device) < rho)
    x_in = torch.where(flipped, random_wrong_tokens(x, mask_token_id, generator), x_t)
    return x_in, t, masked, flipped


def repair_loss(logits: torch.Tensor, x: torch.Tensor, masked: torch.Tensor, flipped: torch.Tensor, t: torch.Tensor,
                mask_token_id: int, copy_weight: float = 0.0, block: int = 0) -> torch.Tensor:
    """mdlm term + flag term + copy_weight * copy term, each summed over its positions and divided by B*T.

    What the model should output, by input position:
    - [MASK] (masked): the original token under SUBS ([MASK] excluded), weighted 1/t, exactly as in
      ``mdlm_loss`` so this term stays comparable to the NELBO (its context now also holds flips).
    - flipped (visible, wrong): [MASK] under the full softmax ("flag": CE with target [MASK]).
    - clean visible: the token itself under the full softmax ("copy"); trained only if copy_weight > 0.
      With copy_weight = 0 nothing penalises [MASK] at clean positions, so the flag has no negatives;
      samplers should then carry visible tokens over (SUBS) and read ``false_alarm`` in diagnostics.
    """
    flag_target = torch.full_like(x, mask_token_id)
    ce_flag = _full_ce(logits, flag_target)  # (B, T)
    loss = mdlm_loss(logits, x, masked, t, mask_token_id, block)
    loss = loss + torch.where(flipped, ce_flag, torch.zeros_like(ce_flag)).sum() / x.numel()
    if copy_weight > 0:
        clean = ~masked & ~flipped
        ce_copy = _full_ce(logits, x)
        loss = loss + copy_weight * torch.where(clean, ce_copy, torch.zeros_like(ce_copy)).sum() / x.numel()
    return loss


# ----------------------------------------------------------------------------- objective registry


@dataclass
class DiffusionOptions:
    mask_token_id: int
    penalty_keep_mask: float = 0.25  # seed: weight when input and prediction are [MASK], target a word
    penalty_mask_correct: float = 0.5  # seed: weight when input == target is a word, prediction [MASK]
    eps: float = 1e-3  # mdlm/repair: t ~ U(eps, t_max); eps > 0 keeps the 1/t weight finite
    t_max: float = 1.0  # < 1 (with a larger eps): a clipped schedule for training (BD3-LM)
    repair_rate_max: float = 0.1  # repair: per-sequence flip rate ~ U(0, repair_rate_max)
    copy_weight: float = 0.0  # repair: weight of the CE on clean visible tokens


def seed_objective(
    model: nn.Module, x: torch.Tensor, generator: torch.Generator, o: DiffusionOptions
) -> torch.Tensor:
    x_in, targets = seed_corrupt(x, o.mask_token_id, generator)
    logits = denoise(model, x_in, x, model_block(model))
    return seed_loss(logits, x_in, targets, o.mask_token_id, o.penalty_keep_mask, o.penalty_mask_correct)


def mdlm_objective(
    model: nn.Module, x: torch.Tensor, generator: torch.Generator, o: DiffusionOptions
) -> torch.Tensor:
    block = model_block(model)
    x_t, t, masked = mdlm_corrupt(x, o.mask_token_id, generator, o.eps, block, o.t_max)
    logits = denoise(model, x_t, x, block)
    return mdlm_loss(logits, x, masked, t, o.mask_token_id, block)


def repair_objective(
    model: nn.Module, x: torch.Tensor, generator: torch.Generator, o: DiffusionOptions
) -> torch.Tensor:
    block = model_block(model)
    x_in, t, masked, flipped = repair_corrupt(x, o.mask_token_id, generator, o.eps, o.repair_rate_max, block,
                                              o.t_max)
    logits = denoise(model, x_in, x, block)
    return repair_loss(logits, x, masked, flipped, t, o.mask_token_id, o.copy_weight, block)


def prime_objective(
    model: nn.Module, x: torch.Tensor, generator: torch.Generator, o: DiffusionOptions
) -> torch.Tensor:
    code = model_code(model)
    if code is None:
        raise ValueError("objective=prime needs a model built with prime_bits / prime_base (partial masking)")
    t = stratified_t(x.size(0), generator, x.device, o.eps, o.t_max)  # as mdlm_corrupt draws it
    x_t, masked = prime_corrupt(x, code, t, generator)
    logits, _ = model(x_t)
    return prime_loss(logits, x, masked, t, code)


Objective = Callable[[nn.Module, torch.Tensor, torch.Generator, DiffusionOptions], torch.Tensor]
OBJECTIVES: dict[str, Objective] = {"seed": seed_objective, "mdlm": mdlm_objective, "repair": repair_objective,
                                    "prime": prime_objective}
# objective=tidar trains a gpt2 model with a draft stream (tidar.py), objective=fim a gpt2 model that fills in the
# middle (fim.py); training/step.py make_loss_fn picks them: neither is a diffusion model
AR_OBJECTIVES = ("tidar", "fim")
MODEL_OBJECTIVES = (*OBJECTIVES, *AR_OBJECTIVES)


def get_objective(name: str) -> Objective:
    """The loss function for an objective name: fn(model, x_clean, generator, options) -> scalar loss."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown diffusion objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


# ----------------------------------------------------------------------------- likelihood bound


@torch.no_grad()
def nelbo(
    model: nn.Module, x: torch.Tensor, mask_token_id: int, generator: torch.Generator, n_draws: int = 4,
    t_min: float = 1e-4, maskable: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, n_draws) fp32 Monte-Carlo terms of the NELBO per token (nats), an upper bound on -log p(x) / T.

    ``maskable`` (B, T) bool: only these positions are ever masked, the rest always visible: the bound on
    -log p(x[maskable] | the rest), per maskable token (an infilling hole; the same draws as without it).

    Draw k of row b uses t_k = (k + u_b) / n_draws, u_b ~ U(0,1): the draws of one row stratify (0,1), so
    the row mean is an unbiased, low-variance estimate; single columns are not (use ``mean_and_stderr``).
    Term = (1/t) * sum over masked i of -log p_SUBS(x_i | x_t) / T (Sahoo et al. 2024). A block diffusion model
    gets one u per block (so one t per block and draw) and the clean x as context: the sum of block NELBOs.
    t is floored at t_min so 1/t stays finite when u_b is 0 (bias below t_min * the integrand, negligible).
    Call with the model in eval mode. The loop runs n_draws forward passes of batch B, not over rows.
    A prime model (partial masking) gets the same bound over its sub-tokens (``prime.prime_nelbo``).
    """
    code = model_code(model)
    if code is not None:
        return prime_nelbo(model, x, code, generator, n_draws, t_min)
    B, T = x.shape
    block = model_block(model)
    n_blocks = -(-T // block) if block else 1
    u = torch.rand(B, n_blocks, generator=generator, device=x.device)
    out = torch.empty(B, n_draws, device=x.device)
    count = T if maskable is None else maskable.sum(dim=1).clamp_min(1)  # (B,) tokens the bound is over
    for k in range(n_draws):
        tk = _per_token_t(((k + u) / n_draws).clamp_min(t_min), T, block or T)  # (B, T)
        masked = torch.rand(B, T, generator=generator, device=x.device) < tk
        if maskable is not None:
            masked &= maskable
        logits = denoise(model, x.masked_fill(masked, mask_token_id), x, block)
        out[:, k] = (masked_nll(logits, x, masked, mask_token_id) / tk).sum(dim=1) / count
    return out


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error. A 2-D (rows, draws) tensor is first averaged over draws: the rows are the
    i.i.d. unbiased estimates (stratified draws within a row are not identically distributed).
    Concatenate ``nelbo`` outputs along dim 0 to pool batches. stderr is nan for fewer than 2 rows."""
    v = values.float()
    if v.dim() == 2:
        v = v.mean(dim=1)
    v = v.flatten()
    if v.numel() < 2:
        return v.mean().item(), float("nan")
    return v.mean().item(), (v.std(unbiased=True) / math.sqrt(v.numel())).item()
