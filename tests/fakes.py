"""Fake models whose logits the tests control, and a tiny real GPT: shared by the sampler, generation and
diffusion tests (``from fakes import ...``)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanodlm.model.model import GPT, GPTConfig

V = 11  # vocab size of every fake; the last id is [MASK]
MASK = V - 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Fake(nn.Module):
    """Logits from ``fn(tokens, call) -> (B, L, V)``; counts calls (= forward passes)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn, self.calls = fn, 0

    def forward(self, idx: torch.Tensor, **_: object) -> tuple[torch.Tensor, None]:
        self.calls += 1
        return self.fn(idx, self.calls), None


class FixedLogits(nn.Module):
    """Returns the same logits row (V,) at every position, whatever the input; records its inputs."""

    def __init__(self, row: torch.Tensor) -> None:
        super().__init__()
        self.row = row.float()
        self.inputs: list[torch.Tensor] = []

    def forward(self, idx: torch.Tensor):
        self.inputs.append(idx.clone())
        return self.row.expand(*idx.shape, -1).clone(), None


class CopyInput(nn.Module):
    """Predicts its input token with high confidence (so [MASK] where the input is [MASK])."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, idx: torch.Tensor):
        return 10.0 * F.one_hot(idx, self.vocab).float(), None


def one_hot_logits(token: int, high: float = 10.0) -> torch.Tensor:
    t = torch.zeros(V)
    t[token] = high
    return t


def tiny_gpt(model_type: str = "gpt2", pos_emb: str = "learned", seed: int = 0) -> GPT:
    """A 1-layer GPT over the fakes' vocabulary (block_size 32), in eval mode."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=32, vocab_size=V, n_layer=1, n_head=2, n_embd=16, model_type=model_type,
                         pos_emb=pos_emb)).eval()


P4 = torch.tensor([0.5, 0.25, 0.125, 0.125])  # a 4-letter source: H = 1.75 ln 2 = 1.2130 nats


def entropy(p: torch.Tensor) -> float:
    p = p.double()
    return -(p * p.log()).sum().item()


def marginal_model(p: torch.Tensor) -> FixedLogits:
    """Predicts the letter frequencies p everywhere, ignoring context."""
    # the [MASK] logit is large: the bound must exclude it (SUBS) or it would be far above H
    return FixedLogits(torch.cat([p.log(), torch.tensor([5.0])]))
