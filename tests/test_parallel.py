"""Threshold parallel decoding (parallel_threshold, max_per_pass), tested with fakes of known confidence."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from fakes import MASK, Fake, V

from nanodlm.sampling.blockwise import generate_blocks
from nanodlm.sampling.samplers import SAMPLERS

PARALLEL = ("confidence", "remask")
MASKGIT = dict(schedule="linear", noise=0.0, prior_weight=0.0)  # greedy reveal order: each rule checked alone


def confident(p: torch.Tensor) -> Fake:
    """A fake that draws token 1 at position i with probability p[..., i] ([MASK] excluded), (L,) or (B, L)."""
    logit = torch.log(p * (V - 2) / (1 - p))  # p = e^a / (e^a + V - 2): the other V - 2 real tokens have logit 0

    def fn(idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(idx.size(0), idx.size(1), V)
        out[..., 1] = logit[..., : idx.size(1)].expand(idx.size(0), idx.size(1))
        return out

    return Fake(lambda idx, call: fn(idx))


def masks(B: int, L: int) -> torch.Tensor:
    return torch.full((B, L), MASK, dtype=torch.long)


def run(name: str, model: nn.Module, canvas: torch.Tensor, steps: int, seed: int = 0, **opts):
    seen: list[torch.Tensor] = []
    extra = dict(MASKGIT, **({"remask_frac": 0.0} if name == "remask" else {}))
    tokens, info = SAMPLERS[name](model, canvas, mask_token_id=MASK, steps=steps, temperature=0.0,
                                  generator=torch.Generator().manual_seed(seed),
                                  on_step=lambda s, t, r, m: seen.append(r.clone()), **{**extra, **opts})
    return tokens, info, seen


@pytest.mark.parametrize("name", PARALLEL)
def test_first_pass_commits_exactly_the_positions_above_tau(name):
    p = torch.tensor([0.99, 0.5, 0.95, 0.2, 0.91, 0.89, 0.97, 0.3])
    tokens, info, seen = run(name, confident(p), masks(1, 8), steps=8, parallel_threshold=0.9)
    assert seen[0][0].tolist() == (p > 0.9).tolist()  # schedule alone would reveal 1 (8 steps for 8 masks)
    # then one per pass, most confident first: 0.89, 0.5, 0.3, 0.2
    assert [r[0].nonzero().flatten().tolist() for r in seen[1:]] == [[5], [1], [7], [3]]
    # remask then runs one more pass on the full canvas (step 6 of 8) to judge it: counted, it ran
    assert info["committed_per_step"] == [4, 1, 1, 1, 1] and info["passes_per_sample"] == [5 + (name == "remask")]
    assert (tokens == 1).all()


@pytest.mark.parametrize("name", PARALLEL)
def test_nothing_above_tau_commits_one_per_pass(name):
    tokens, info, _ = run(name, confident(torch.full((6,), 0.3)), masks(2, 6), steps=6, parallel_threshold=0.9)
    assert info["committed_per_step"] == [2] * 6  # one per row per pass
    assert info["passes_per_sample"] == [6, 6] and (tokens != MASK).all()


@pytest.mark.parametrize("name", PARALLEL)
def test_max_per_pass_caps_the_most_confident(name):
    p = torch.tensor([0.91, 0.99, 0.95, 0.97, 0.93, 0.92])
    _, info, seen = run(name, confident(p), masks(1, 6), steps=6, parallel_threshold=0.9, max_per_pass=2)
    assert [r[0].nonzero().flatten().tolist() for r in seen] == [[1, 3], [2, 4], [0, 5]]
    assert info["passes_per_sample"] == [3 + (name == "remask")]  # remask's judging pass on the full canvas


@pytest.mark.parametrize("name", PARALLEL)
def test_the_schedule_stays_a_floor(name):
    # 2 steps for 6 masks: the schedule reveals 3 then 3 even though nothing clears tau
    _, info, _ = run(name, confident(torch.full((6,), 0.3)), masks(1, 6), steps=2, parallel_threshold=0.9)
    assert info["committed_per_step"] == [3, 3]


@pytest.mark.parametrize("name", PARALLEL)
def test_passes_are_counted_per_sample(name):
    p = torch.stack((torch.full((5,), 0.99), torch.full((5,), 0.2)))  # row 0 is sure of everything, row 1 of nothing
    tokens, info, _ = run(name, confident(p), masks(2, 5), steps=5, parallel_threshold=0.5)
    judge = int(name == "remask")  # remask judges row 0's full canvas once more before it stops
    assert info["passes_per_sample"] == [1 + judge, 5] and info["forward_passes"] == 5
    assert (tokens != MASK).all()


@pytest.mark.parametrize("name", PARALLEL)
@pytest.mark.parametrize("tau", [0.05, 0.3, 0.7, 0.95])
def test_random_models_terminate_without_masks(name, tau):
    for seed in range(4):
        table = 3 * torch.randn(3, 12, V, generator=torch.Generator().manual_seed(seed))
        model = Fake(lambda idx, call, t=table: t[: idx.size(0), : idx.size(1)] + idx[..., None].float() * 0.1)
        canvas = masks(3, 12)
        canvas[0, :3] = torch.tensor([1, 2, 3])  # a prefix: fixed, never changed
        out, info, seen = run(name, model, canvas, steps=12, seed=seed, parallel_threshold=tau, noise=1.0)
        assert (out != MASK).all() and torch.equal(out[0, :3], canvas[0, :3])
        assert info["steps_used"] <= 12 and max(info["passes_per_sample"]) <= info["forward_passes"] <= 12
        left = (canvas == MASK).sum(-1)  # (B,) masks before each pass
        for revealed in seen:  # at least one per pass in every row that still had a mask
            assert (revealed.sum(-1) >= (left > 0).long()).all()
            left = left - revealed.sum(-1)
        assert (left == 0).all()


def test_threshold_inside_block_diffusion():
    p = torch.tensor([0.99, 0.99, 0.99, 0.2, 0.99, 0.99, 0.99, 0.99])
    out, info = generate_blocks(confident(p), masks(1, 8), block=4, sampler="confidence", mask_token_id=MASK,
                                steps=8, generator=torch.Generator().manual_seed(0), temperature=0.0,
                                parallel_threshold=0.9)
    assert (out == 1).all() and info["blocks"] == 2
    assert info["passes_per_sample"] == [3]  # block 1: 3 sure, then the unsure one; block 2: all four at once
    assert info["committed_per_step"] == [3, 1, 4]


@pytest.mark.parametrize("bad", [dict(parallel_threshold=1.0), dict(parallel_threshold=-0.1), dict(max_per_pass=-1)])
def test_parallel_options_validated(bad):
    with pytest.raises(ValueError, match="parallel_threshold"):
        run("confidence", confident(torch.full((4,), 0.5)), masks(1, 4), steps=4, **bad)


def test_tau_is_a_probability_of_the_drawn_token():
    # just above / below tau: p = tau * (1 +- 1e-3)
    tau = 0.8
    p = torch.tensor([tau * 1.001, tau * 0.999, tau * 1.001])
    _, _, seen = run("confidence", confident(p), masks(1, 3), steps=3, parallel_threshold=tau)
    assert seen[0][0].tolist() == [True, False, True]
