"""Diagnostics of a denoiser (diagnostics.py): exact corruption counts, fake models with known answers, and the
context-free model whose masked CE equals the unigram entropy."""

from __future__ import annotations

import math

import pytest
import torch
from fakes import MASK, P4, CopyInput, FixedLogits, V, entropy, gen, marginal_model, tiny_gpt

from nanodlm.diffusion.diagnostics import diagnostics
from nanodlm.evaluation.textstats import unigram_entropy

M = MASK


KEYS = {f"masked_{k}@{p}" for k in ("ce", "acc") for p in (15, 50, 100)} | {
    "p_mask@masked", "detect_rate", "false_alarm", "copy_acc"}


def test_diagnostics_keys_and_ranges_on_tiny_gpt() -> None:
    model = tiny_gpt("diffusion")
    x = torch.randint(0, M, (8, 32), generator=gen(0))
    d = diagnostics(model, x, M, gen(1))
    assert set(d) == KEYS
    for k, v in d.items():
        assert math.isfinite(v), k
        if "ce" not in k:
            assert 0.0 <= v <= 1.0, k
    assert d["masked_ce@100"] == pytest.approx(math.log(M), abs=0.3)  # untrained: near uniform over 10


def test_diagnostics_exact_counts() -> None:
    B, T = 4, 32
    model = FixedLogits(torch.zeros(V))
    x = torch.randint(0, M, (B, T), generator=gen(0))
    diagnostics(model, x, M, gen(1))
    n_masks = [(inp == M).sum(1).tolist() for inp in model.inputs]
    assert n_masks == [[5] * B, [16] * B, [32] * B, [16] * B]
    last = model.inputs[-1]
    assert ((last != x) & (last != M)).sum(1).tolist() == [2] * B  # round(10% of 16)


def test_diagnostics_always_mask_and_copy_models() -> None:
    x = torch.randint(0, M, (8, 32), generator=gen(0))
    always = FixedLogits(torch.cat([torch.zeros(M), torch.tensor([3.0])]))
    d = diagnostics(always, x, M, gen(1))
    assert d["detect_rate"] == 1.0 and d["false_alarm"] == 1.0 and d["copy_acc"] == 0.0
    assert d["p_mask@masked"] == pytest.approx(math.exp(3) / (math.exp(3) + M))
    assert d["masked_ce@50"] == pytest.approx(math.log(M), rel=1e-5)  # SUBS: uniform over the real ids
    c = diagnostics(CopyInput(V), x, M, gen(1))
    assert c["detect_rate"] == 0.0 and c["false_alarm"] == 0.0 and c["copy_acc"] == 1.0


def test_context_free_model_masked_ce_equals_unigram_entropy() -> None:
    B, T = 256, 32
    x = torch.multinomial(P4, B * T, replacement=True, generator=gen(0)).view(B, T)
    H = unigram_entropy(x)
    assert H == pytest.approx(entropy(P4), abs=0.02)
    d = diagnostics(marginal_model(P4), x, 4, gen(1))
    for p in (15, 50, 100):
        assert d[f"masked_ce@{p}"] == pytest.approx(H, abs=0.05)
        assert d[f"masked_acc@{p}"] == pytest.approx(0.5, abs=0.05)  # argmax = the most frequent letter
