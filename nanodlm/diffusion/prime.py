"""Partial masking (MDM-Prime, arXiv:2505.18495): the sub-token forward process, the loss and the bound, as pure
functions beside ``mdlm`` (diffusion.py registers the objective; the code and the model's part: subtokens.py).

The forward process masks every digit independently with probability t (alpha_t = 1 - t, as ``mdlm``). The bound is
the masked-diffusion bound over the T * bits sub-tokens: for each masked digit, -log of the model's probability of
its true value, summed over the tokens that have it (``digit_nll``), weighted 1/t; divided by T it is in nats per
token (per character for a char vocabulary). The model's token distribution counts only over the tokens consistent
with a position's known digits (``subtokens.restrict``, applied here too, so the bound holds whatever the model
outputs). With bits = 1 (base V) a digit is the token and every function here reduces to ``mdlm`` exactly (tested).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

from ..model.subtokens import Code, restrict, state_ids


def prime_corrupt(x: torch.Tensor, code: Code, t: torch.Tensor, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """q(y_t | x): every digit of x (B, T) masked with probability t (B,) -> canvas ids (B, T), masked (B, T, bits).
    One uniform per digit, drawn (B, T, bits): with bits = 1 the draws and the masks are ``mdlm_corrupt``'s."""
    B, T = x.shape
    masked = torch.rand(B, T, code.bits, generator=generator, device=x.device) < t.view(B, 1, 1)
    digits = code.table[x].masked_fill(masked, code.base)  # (B, T, bits)
    return state_ids(digits, x, code), masked


def digit_nll(logits: torch.Tensor, x: torch.Tensor, masked: torch.Tensor, code: Code) -> torch.Tensor:
    """(B, T) fp32: sum over the masked digits j of position i of -log p(digit j = its true value | y_t), where
    p(x' | y_t) is the model's token distribution over the tokens consistent with y_t's known digits (``restrict``,
    applied here too, so the bound holds whatever the model outputs) and a digit's probability is the mass of the
    tokens that have it. 0 at positions with no masked digit."""
    truth = code.table[x]  # (B, T, bits)
    digits = truth.masked_fill(masked, code.base)
    log_p = F.log_softmax(restrict(logits.float(), digits, code), dim=-1)[..., : code.vocab]  # (B, T, V)
    has = code.table.T == truth[..., None]  # (B, T, bits, V): the tokens whose digit j is the true one
    log_digit = torch.logsumexp(log_p[..., None, :].masked_fill(~has, float("-inf")), dim=-1)  # (B, T, bits)
    nll = torch.where(masked, -log_digit, torch.zeros_like(log_digit))  # where, not *: no 0 * inf
    return nll.sum(-1)


def prime_loss(logits: torch.Tensor, x: torch.Tensor, masked: torch.Tensor, t: torch.Tensor, code: Code
               ) -> torch.Tensor:
    """NELBO per token (nats): sum of ``digit_nll`` / t over the batch, divided by B*T (``mdlm_loss`` over
    sub-tokens; the continuous-time bound of a masked diffusion over the T * bits digits, alpha_t = 1 - t)."""
    return (digit_nll(logits, x, masked, code) / t.view(-1, 1)).sum() / x.numel()


@torch.no_grad()
def prime_nelbo(model: nn.Module, x: torch.Tensor, code: Code, generator: torch.Generator, n_draws: int = 4,
                t_min: float = 1e-4) -> torch.Tensor:
    """(B, n_draws) fp32 Monte-Carlo terms of the sub-token NELBO per token (nats), as ``diffusion.nelbo``: draw
    k of row b at t = (k + u_b) / n_draws floored at t_min, each digit masked with probability t. Bidirectional
    models; call in eval mode. With bits = 1 the draws and the numbers are ``nelbo``'s."""
    B, T = x.shape
    u = torch.rand(B, 1, generator=generator, device=x.device)
    out = torch.empty(B, n_draws, device=x.device)
    for k in range(n_draws):
        tk = ((k + u) / n_draws).clamp_min(t_min)  # (B, 1)
        masked = torch.rand(B, T, code.bits, generator=generator, device=x.device) < tk.view(B, 1, 1)
        logits, _ = model(state_ids(code.table[x].masked_fill(masked, code.base), x, code))
        out[:, k] = (digit_nll(logits, x, masked, code) / tk).sum(dim=1) / T
    return out
