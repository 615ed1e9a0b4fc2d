"""Honest pass counting: every sampler reports the forward passes it ran (at batch 1, passes_per_sample == the
model's calls, block diffusion and remask's judging pass included), and max_per_pass is a cap."""

from __future__ import annotations

import pytest
import torch

from nanodlm.data.tokenizers import CharTokenizer
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling.generate import Prompt, SamplerOptions, generate
from nanodlm.sampling.samplers import DIFFUSION_SAMPLERS, sample_confidence, sample_remask

TOK = CharTokenizer(list("abcdefgh _"))
MASK = TOK.mask_id


def tiny(block_size: int = 32, diffusion_block: int = 0) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=block_size, vocab_size=TOK.vocab_size + 1, n_layer=1, n_head=2, n_embd=16,
                         model_type="diffusion", mask_token_id=MASK, pos_emb="rope",
                         diffusion_block=diffusion_block)).eval()


def counted(model: GPT, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every call into the model: full passes (forward) and cached ones (decode)."""
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    decode = model.decode

    def counting_decode(*args, **kwargs):
        calls[0] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(model, "decode", counting_decode)
    return calls


CASES = [dict(sampler=name, steps=steps) for name in DIFFUSION_SAMPLERS for steps in (1, 4, 24)] + [
    dict(sampler="remask", steps=40),  # more steps than positions: the canvas fills early, a judging pass follows
    dict(sampler="confidence", steps=24, parallel_threshold=0.3),
    dict(sampler="confidence", steps=24, parallel_threshold=0.3, schedule="threshold"),
    dict(sampler="remask", steps=24, parallel_threshold=0.3, max_per_pass=2),
    dict(sampler="confidence", steps=8, semi_ar_block=8, approx_cache="dual", parallel_threshold=0.5),
    dict(sampler="remask", steps=8, semi_ar_block=8, approx_cache="prefix"),
]


@pytest.mark.parametrize("opts", CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_reported_passes_are_the_model_calls_at_batch_1(opts: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny()
    calls = counted(model, monkeypatch)
    out = generate(model, TOK, SamplerOptions(prior_weight=0.0, **opts), Prompt(length=24), seed=3)
    assert out.info["passes_per_sample"] == [calls[0]] and out.info["forward_passes"] == calls[0] > 0


@pytest.mark.parametrize("sampler, steps", [("remask", 4), ("confidence", 16), ("remask", 16), ("ancestral", 16)])
def test_block_diffusion_counts_every_block(sampler: str, steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(diffusion_block=4)
    calls = counted(model, monkeypatch)
    out = generate(model, TOK, SamplerOptions(sampler=sampler, steps=steps, prior_weight=0.0), Prompt(length=16),
                   seed=1)
    assert out.info["passes_per_sample"] == [calls[0]] and calls[0] >= 4  # at least one pass per block


def test_per_sample_passes_at_batch_n_are_each_rows_batch_1_count() -> None:
    """A row that is done (or needs no logits this step) is not charged for passes the other rows need."""
    model = tiny()
    canvas = torch.full((2, 12), MASK)
    canvas[1, :10] = 3  # row 1 has two holes, row 0 twelve
    _, info = sample_confidence(model, canvas, mask_token_id=MASK, steps=12, generator=torch.Generator(),
                                noise=0.0, prior_weight=0.0, temperature=0.0)
    _, alone_info = sample_confidence(model, canvas[1:], mask_token_id=MASK, steps=12, generator=torch.Generator(),
                                      noise=0.0, prior_weight=0.0, temperature=0.0)
    assert info["passes_per_sample"][1] == alone_info["passes_per_sample"][0] < info["passes_per_sample"][0]


@pytest.mark.parametrize("fn", [sample_confidence, sample_remask])
@pytest.mark.parametrize("steps, cap", [(2, 1), (4, 2), (6, 3)])
def test_max_per_pass_is_a_cap_even_against_the_schedule(fn, steps: int, cap: int) -> None:
    """2 steps over 8 masks would force 4 + 4; a cap of 1 commits 1 per pass and runs the passes it needs."""
    model = tiny()
    seen: list[int] = []
    tokens, info = fn(model, torch.full((1, 8), MASK), mask_token_id=MASK, steps=steps, generator=torch.Generator(),
                      prior_weight=0.0, parallel_threshold=0.01, max_per_pass=cap,
                      on_step=lambda s, t, rev, rem: seen.append(int(rev.sum())))
    assert max(seen) <= cap and not (tokens == MASK).any()
    assert info["steps_used"] >= -(-8 // cap) and sum(seen) - sum(info["remasked_per_step"]) == 8


def test_threshold_schedule_lets_tau_alone_decide() -> None:
    """schedule=threshold: no floor, so a pass commits exactly the draws above tau (at least one); with the cosine
    floor a pass commits at least what the schedule forces."""
    model = tiny()

    def commits(schedule: str) -> list[int]:
        _, info = sample_confidence(model, torch.full((1, 16), MASK), mask_token_id=MASK, steps=4,
                                    generator=torch.Generator().manual_seed(0), prior_weight=0.0, noise=0.0,
                                    parallel_threshold=0.99, schedule=schedule)
        return info["committed_per_step"]

    assert commits("threshold")[:3] == [1, 1, 1]  # nothing of a random model is above 0.99: one per pass
    assert commits("cosine")[0] > 1  # the floor forces more
    with pytest.raises(ValueError, match="parallel_threshold > 0"):
        sample_confidence(model, torch.full((1, 4), MASK), mask_token_id=MASK, steps=4, generator=None,
                          schedule="threshold")


@pytest.mark.parametrize("use_kv_cache", [True, False])
@pytest.mark.parametrize("new_tokens", [5, 40])  # 40 runs past block_size 32: every step re-prefills the window
def test_ar_passes_are_counted_not_assumed(use_kv_cache: bool, new_tokens: int, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=TOK.vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    calls = counted(model, monkeypatch)
    out = generate(model, TOK, SamplerOptions(use_kv_cache=use_kv_cache), Prompt(start="ab", max_new_tokens=new_tokens),
                   num_samples=2, seed=0)
    assert out.info["forward_passes"] == calls[0] == new_tokens and out.info["passes_per_sample"] == [calls[0]] * 2
