"""Samplers: token sampling, AR generation (KV cache), the diffusion samplers.

Fake models return logits we control, so each rule of each sampler is checked directly; a tiny real GPT
checks the integration (KV cache equivalence, real shapes).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from fakes import MASK, Fake, V, gen, one_hot_logits, tiny_gpt

from nanodlm.sampling.ar_sampling import generate_ar, sample_logits
from nanodlm.sampling.samplers import CAUSAL_SAMPLERS, SAMPLERS, get_sampler

NEG = -30.0  # a logit that is never sampled in practice (p ~ 1e-13) but keeps softmax finite
MASKGIT = dict(schedule="linear", noise=0.0, prior_weight=0.0)  # greedy reveal order: each rule checked alone


def constant(table: torch.Tensor) -> Fake:
    """Fake whose logits are table (L, V) or (V,) at every call, whatever the input."""
    return Fake(lambda idx, call: table.expand(idx.size(0), idx.size(1), V).clone())


def masks(B: int, L: int) -> torch.Tensor:
    return torch.full((B, L), MASK, dtype=torch.long)


# --- sample_logits ------------------------------------------------------------------------------------------

def test_sample_logits_temperature_zero_is_argmax_over_leading_dims():
    logits = torch.randn(3, 5, V, generator=gen(1))
    assert torch.equal(sample_logits(logits, 0.0, generator=gen()), logits.argmax(-1))


def test_sample_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).expand(4000, 4)
    ids = sample_logits(logits, 1.0, top_k=2, generator=gen())
    assert set(ids.tolist()) == {0, 1}
    assert torch.equal(sample_logits(logits, 1.0, top_k=1, generator=gen()), torch.zeros(4000, dtype=torch.long))
    assert set(sample_logits(logits, 1.0, top_k=10**6, generator=gen()).tolist()) == {0, 1, 2, 3}  # clamped to V
    assert set(sample_logits(logits, 1.0, top_p=0.7, generator=gen()).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert set(sample_logits(logits, 1.0, top_p=0.1, generator=gen()).tolist()) == {0}  # the top token always stays
    frac0 = (sample_logits(logits, 1.0, generator=gen()) == 0).float().mean().item()
    assert abs(frac0 - 0.5) < 0.05


def test_sample_logits_seeded_and_validated():
    logits = torch.randn(64, V, generator=gen(2))
    assert torch.equal(sample_logits(logits, generator=gen(5)), sample_logits(logits, generator=gen(5)))
    for bad in ({"temperature": -1.0}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            sample_logits(logits, **bad)


# --- autoregressive -----------------------------------------------------------------------------------------

def test_generate_ar_temperature_zero_is_greedy():
    # fake LM: the next token is (last token + 1) mod V with a clear margin
    model = Fake(lambda idx, call: nn.functional.one_hot((idx[:, -1:] + 1) % V, V).float() * 5)
    out = generate_ar(model, torch.tensor([[3], [9]]), 4, temperature=0.0, generator=gen())
    assert out.tolist() == [[3, 4, 5, 6, 7], [9, 10, 0, 1, 2]]


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
@pytest.mark.parametrize("new_tokens", [20, 50])  # 4 + 20 fits block_size 32; 4 + 50 crops
def test_generate_ar_cache_matches_uncached(pos_emb, new_tokens):
    model = tiny_gpt(pos_emb=pos_emb).double()  # float64: cached and uncached logits agree to ~1e-15
    idx = torch.randint(0, V, (3, 4), generator=gen(3))
    kw = dict(temperature=1.0, top_k=8, generator=None)
    cached = generate_ar(model, idx, new_tokens, **{**kw, "generator": gen(7)}, use_cache=True)
    plain = generate_ar(model, idx, new_tokens, **{**kw, "generator": gen(7)}, use_cache=False)
    assert cached.shape == (3, 4 + new_tokens)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :4], idx)


def test_generate_ar_seeds():
    model = tiny_gpt()
    idx = torch.zeros(2, 1, dtype=torch.long)
    a = generate_ar(model, idx, 30, generator=gen(1))
    assert torch.equal(a, generate_ar(model, idx, 30, generator=gen(1)))
    assert not torch.equal(a, generate_ar(model, idx, 30, generator=gen(2)))
    assert not model.training


# --- seed (the user's spec) ---------------------------------------------------------------------------------

def test_seed_confident_model_finishes_in_one_step():
    model = constant(one_hot_logits(4, high=50.0))
    tokens, info = SAMPLERS["seed"](model, masks(2, 6), mask_token_id=MASK, steps=5, generator=gen())
    assert (tokens == 4).all()
    assert info["steps_used"] == 1 and info["forward_passes"] == 1 and not info["final_pass"]
    assert info["committed_per_step"] == [12]


def test_seed_sampled_mask_stays_masked_and_final_pass_forbids_mask():
    table = torch.full((V,), NEG)
    table[MASK] = 0.0  # the model always says [MASK]
    model = constant(table)
    seen = []
    tokens, info = SAMPLERS["seed"](model, masks(2, 5), mask_token_id=MASK, steps=3, generator=gen(),
                                    on_step=lambda step, t, rev, rem: seen.append((step, t.clone())))
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    assert all((t == MASK).all() for _, t in seen[:3])  # sampled [MASK] left the positions masked
    assert (tokens != MASK).all()  # the final pass cannot produce [MASK]
    assert info["steps_used"] == 3 and info["final_pass"]
    assert info["committed_per_step"] == [0, 0, 0, 10]
    assert info["forward_passes"] == 1  # the canvas never changed, so the logits were reused


def test_seed_overwrites_only_masks():
    model = constant(one_hot_logits(2, high=50.0))  # wants token 2 everywhere, including given positions
    canvas = torch.tensor([[5, MASK, 7, MASK], [MASK, 1, MASK, 3]])
    tokens, _ = SAMPLERS["seed"](model, canvas, mask_token_id=MASK, steps=2, generator=gen())
    assert tokens.tolist() == [[5, 2, 7, 2], [2, 1, 2, 3]]


def test_seed_mixed_model_top_k_clamped():
    table = torch.zeros(V)
    table[MASK] = 1.0
    model = constant(table)
    tokens, info = SAMPLERS["seed"](model, masks(4, 8), mask_token_id=MASK, steps=4, top_k=10**6, generator=gen())
    assert (tokens != MASK).all() and sum(info["committed_per_step"]) == 32
    greedy, _ = SAMPLERS["seed"](model, masks(1, 4), mask_token_id=MASK, steps=2, top_k=1, generator=gen())
    assert (greedy != MASK).all()  # top-1 is [MASK] every step; the final pass picks a real token


# --- ancestral (MDLM) ---------------------------------------------------------------------------------------

def test_ancestral_reveal_probabilities():
    steps, B, L = 4, 200, 50
    counts = []
    model = constant(one_hot_logits(MASK, high=5.0))  # [MASK] is the model's favourite: it must be excluded
    tokens, info = SAMPLERS["ancestral"](model, masks(B, L), mask_token_id=MASK, steps=steps, generator=gen(),
                                         on_step=lambda s, t, rev, rem: counts.append(int(rev.sum())))
    remaining = B * L
    for i, revealed in enumerate(counts, start=1):
        p = 1.0 / (steps - i + 1)  # (t - s) / t on the uniform grid
        sd = math.sqrt(remaining * p * (1 - p))
        assert abs(revealed - remaining * p) <= 5 * sd + 1e-9, (i, revealed, remaining * p)
        remaining -= revealed
    assert remaining == 0 and (tokens != MASK).all()
    assert info["committed_per_step"] == counts


def test_ancestral_caches_forward_passes():
    model = constant(torch.zeros(V))
    tokens, info = SAMPLERS["ancestral"](model, masks(1, 4), mask_token_id=MASK, steps=64, generator=gen())
    assert (tokens != MASK).all()
    steps_with_reveal = sum(c > 0 for c in info["committed_per_step"])
    assert info["forward_passes"] == model.calls == steps_with_reveal <= 4 < info["steps_used"]


# --- confidence (MaskGIT / LLaDA) ---------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_confidence_follows_schedule(schedule):
    steps, L = 8, 32
    gamma = (lambda r: 1 - r) if schedule == "linear" else (lambda r: math.cos(math.pi / 2 * r))
    left = [L] + [math.floor(L * gamma(i / steps)) for i in range(1, steps)] + [0]
    expected = [2 * (a - b) for a, b in zip(left, left[1:])]  # B = 2 rows
    table = torch.zeros(L, V)
    table[:, 1] = torch.arange(1, L + 1, dtype=torch.float)  # confidence grows with the position
    model = constant(table)
    seen = []
    tokens, info = SAMPLERS["confidence"](model, masks(2, L), mask_token_id=MASK, steps=steps, temperature=0.0,
                                          **{**MASKGIT, "schedule": schedule}, generator=gen(),
                                          on_step=lambda s, t, r, m: seen.append(r))
    assert info["committed_per_step"] == expected
    assert (tokens == 1).all()
    first = seen[0][0].nonzero().flatten().tolist()
    assert first == list(range(L - expected[0] // 2, L))  # the most confident positions go first


def test_confidence_noise_and_errors():
    model = constant(torch.randn(6, V, generator=gen(4)))
    run = lambda seed: SAMPLERS["confidence"](model, masks(3, 6), mask_token_id=MASK, steps=3, noise=1.0,  # noqa: E731
                                              generator=gen(seed))[0]
    assert torch.equal(run(1), run(1)) and (run(1) != MASK).all()
    with pytest.raises(ValueError, match="schedule"):
        SAMPLERS["confidence"](model, masks(1, 6), mask_token_id=MASK, steps=3, schedule="cubic", generator=gen())


# --- remask -------------------------------------------------------------------------------------------------

def test_remask_corrects_a_flagged_token():
    L = 6

    def fn(idx, call):
        logits = torch.zeros(idx.size(0), L, V)
        logits[:, :, 1] = 3.0
        logits[:, 3, 1] = 8.0 if call == 1 else NEG  # position 3: first the most confident token 1 ...
        logits[:, 3, 2] = 0.0 if call == 1 else 8.0  # ... later the model prefers 2
        logits[:, 3, MASK] = torch.where(idx[:, 3] == 1, 20.0, NEG)  # ... and flags 1 at position 3 as wrong
        return logits

    events = []
    tokens, info = SAMPLERS["remask"](Fake(fn), masks(1, L), mask_token_id=MASK, steps=4, temperature=0.0,
                                      remask_frac=1.0, generator=gen(), **MASKGIT,
                                      on_step=lambda s, t, rev, rem: events.append((t.clone(), rev, rem)))
    assert events[0][0][0, 3] == 1 and events[0][1][0, 3]  # step 1 reveals position 3 as 1
    assert events[1][2][0].nonzero().flatten().tolist() == [3]  # step 2 re-masks it, and only it
    assert info["remasked_per_step"][1] == 1
    assert tokens[0, 3] == 2 and (tokens != MASK).all()
    assert info["steps_used"] <= 4


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_remask_fixed_never_remasked_and_terminates(steps):
    def fn(idx, call):  # flags every token as wrong: the budget alone limits re-masking
        logits = torch.zeros(idx.size(0), idx.size(1), V)
        logits[..., MASK] = torch.where(idx != MASK, 20.0, NEG)
        return logits

    canvas = masks(2, 12)
    canvas[:, :3] = torch.tensor([4, 5, 6])
    tokens, info = SAMPLERS["remask"](Fake(fn), canvas, mask_token_id=MASK, steps=steps, remask_frac=1.0,
                                      generator=gen(), **MASKGIT)
    assert torch.equal(tokens[:, :3], canvas[:, :3]) and (tokens != MASK).all()
    assert info["steps_used"] <= steps and len(info["committed_per_step"]) == info["steps_used"]
    if steps == 5:
        assert sum(info["remasked_per_step"]) > 0


# --- every sampler ------------------------------------------------------------------------------------------

def _conditioning_canvas() -> tuple[torch.Tensor, torch.Tensor]:
    # prefix 0:4, gap 4:10, middle 10:14, gap 14:20, suffix 20:24
    canvas = torch.randint(0, MASK, (3, 24), generator=gen(9))
    canvas[:, 4:10] = MASK
    canvas[:, 14:20] = MASK
    return canvas, canvas != MASK


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in CAUSAL_SAMPLERS])
def test_fixed_positions_never_change(name):
    table = torch.randn(24, V, generator=gen(11))

    def fn(idx, call):  # random preferences, a strong [MASK] on given tokens (tempts remask), varying per call
        logits = table.expand(idx.size(0), 24, V) + torch.randn(idx.size(0), 24, V, generator=gen(call))
        return logits + torch.where(idx != MASK, 6.0, 0.0)[..., None] * nn.functional.one_hot(
            torch.tensor(MASK), V)

    canvas, fixed = _conditioning_canvas()
    opts = {"remask_frac": 1.0} if name == "remask" else {}
    tokens, info = get_sampler(name)(Fake(fn), canvas, mask_token_id=MASK, steps=6, generator=gen(), **opts)
    assert torch.equal(tokens[fixed], canvas[fixed]) and (tokens != MASK).all()
    assert info["forward_passes"] >= 1


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in CAUSAL_SAMPLERS])
def test_samplers_on_tiny_diffusion_gpt(name):
    model = tiny_gpt("diffusion")
    canvas, fixed = _conditioning_canvas()
    tokens, info = get_sampler(name)(model, canvas, mask_token_id=MASK, steps=4, top_k=5, top_p=0.9,
                                     generator=gen())
    assert tokens.shape == canvas.shape and (tokens != MASK).all() and torch.equal(tokens[fixed], canvas[fixed])
    assert not model.training


def test_get_sampler_and_argument_errors():
    with pytest.raises(ValueError, match="seed, ancestral, confidence, remask"):
        get_sampler("nope")
    fixed = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="fixed"):
        SAMPLERS["seed"](constant(torch.zeros(V)), masks(1, 3), mask_token_id=MASK, steps=2, fixed=fixed,
                         generator=gen())


# --- reveal order -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order,first", [("entropy", 0), ("margin", 1)])
@pytest.mark.parametrize("name", ["confidence", "remask"])
def test_reveal_order_ranks_by_the_distribution_not_the_draw(name, order, first):
    # position 0: two tokens at 0.5 each (margin 0, entropy ln 2 = 0.69); position 1: 0.6 and four at 0.1
    # (margin ln 6, entropy 1.23). Entropy order reveals position 0 first, margin order position 1.
    table = torch.full((2, V), NEG)
    table[0, :2] = 0.0
    table[1, 0] = math.log(0.6)
    table[1, 1:5] = math.log(0.1)
    seen: list[list[int]] = []
    for seed in range(5):  # whatever the sampled tokens
        seen.clear()
        SAMPLERS[name](constant(table), masks(1, 2), mask_token_id=MASK, steps=2, order=order, **MASKGIT,
                       generator=gen(seed), on_step=lambda s, t, r, m: seen.append(r[0].nonzero().flatten().tolist()))
        assert seen[0] == [first]


def test_reveal_order_unknown_name():
    with pytest.raises(ValueError, match="order"):
        SAMPLERS["remask"](constant(torch.zeros(V)), masks(1, 4), mask_token_id=MASK, steps=2, order="random",
                           generator=gen())


@pytest.mark.parametrize("name", ["confidence", "remask"])
@pytest.mark.parametrize("weight,first", [(0.0, 1), (0.5, 2)])
def test_prior_weight_prefers_draws_the_context_supports(name, weight, first):
    # first pass (the prior): position 0 certain; positions 1 and 2 both favour token 2 (p ~ 0.9).
    # later passes: position 1 unchanged (token 2 at 0.9, no support from the context), position 2 now
    # favours token 3 at 0.6 (prior 0.05). MaskGIT's order takes position 1 (0.9 > 0.6); with half the
    # prior subtracted (log 0.9 - 0.5 log 0.9 = -0.05 vs log 0.6 - 0.5 log 0.05 = 0.99) position 2 goes first.
    # (At w = 1 the first pass itself carries no information: every draw's PMI with the start is 0.)
    def fn(idx, call):
        logits = torch.full((idx.size(0), 3, V), NEG)
        logits[:, 0, 1] = 10.0
        logits[:, 1:, 2] = math.log(0.9)
        logits[:, 1:, 3] = math.log(0.05)
        logits[:, 1:, 4] = math.log(0.05)
        if call > 1:
            logits[:, 2, 2], logits[:, 2, 3], logits[:, 2, 4] = math.log(0.3), math.log(0.6), math.log(0.1)
        return logits

    seen: list[list[int]] = []
    SAMPLERS[name](Fake(fn), masks(1, 3), mask_token_id=MASK, steps=3, temperature=0.0,
                   **{**MASKGIT, "prior_weight": weight}, generator=gen(),
                   on_step=lambda s, t, r, m: seen.append(r[0].nonzero().flatten().tolist()))
    assert seen[0] == [0] and seen[1] == [first]


def test_prior_weight_and_noise_decay_validation():
    model = constant(torch.zeros(V))
    with pytest.raises(ValueError, match="prior_weight"):
        SAMPLERS["remask"](model, masks(1, 4), mask_token_id=MASK, steps=2, prior_weight=-1.0, generator=gen())
    with pytest.raises(ValueError, match="prior_weight"):
        SAMPLERS["confidence"](model, masks(1, 4), mask_token_id=MASK, steps=2, prior_weight=0.5, order="margin",
                               generator=gen())


def test_noise_decay_keeps_early_steps_random():
    # confidence rises with the position, so greedy order reveals from the right; a huge noise that decays
    # fast reveals the first step's positions at random and the last steps' greedily
    table = torch.zeros(64, V)
    table[:, 1] = torch.linspace(0, 8, 64)
    firsts = []
    seen: list[torch.Tensor] = []
    for seed in range(4):
        seen.clear()
        SAMPLERS["confidence"](constant(table), masks(1, 64), mask_token_id=MASK, steps=8, schedule="linear",
                               temperature=0.0, noise=1e4, noise_decay=50.0, generator=gen(seed),
                               on_step=lambda s, t, r, m: seen.append(r[0].nonzero().flatten()))
        firsts.append(seen[0])
        left = sorted(set(range(64)) - set(torch.cat(seen[:6]).tolist()))
        assert seen[6].tolist() == left[-8:]  # step 7: noise 1e4 * (1/8)^50 ~ 0, so the 8 most confident left
    assert any(f.min() < 56 for f in firsts)  # step 1 is not greedy (greedy would take positions 56-63)
