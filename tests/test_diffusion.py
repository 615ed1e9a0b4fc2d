"""Tests for nanodlm.diffusion.diffusion: corruption counts and rates, hand-computed losses, the NELBO on sources
with known entropy, the repair objective. Fake models return logits we control (diagnostics: test_diagnostics.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from fakes import MASK, P4, FixedLogits, V, entropy, gen, marginal_model
from fakes import tiny_gpt as fake_gpt

from nanodlm.diffusion import diffusion as D
from nanodlm.model.model import GPT

M = MASK  # 10 real tokens + [MASK]


def tiny_gpt() -> GPT:
    return fake_gpt("diffusion")


# ----------------------------------------------------------------------------- seed objective


def test_seed_counts_truncate_and_use_remaining() -> None:
    rate_mask = torch.tensor([0.5, 0.349, 0.0, 0.98])
    rate_random = torch.tensor([0.5, 0.3, 0.98, 0.005])
    n_mask, n_rand = D.seed_counts(rate_mask, rate_random, 10)
    assert n_mask.tolist() == [5, 3, 0, 9]
    # of the remaining T - n_mask positions: int(0.5*5), int(0.3*7), int(0.98*10), int(0.005*1)
    assert n_rand.tolist() == [2, 2, 9, 0]


def test_seed_corrupt_exact_counts_and_targets() -> None:
    B, T = 512, 32
    x = torch.randint(0, M, (B, T), generator=gen(1))
    x0 = x.clone()
    x_in, targets = D.seed_corrupt(x, M, gen(7))
    assert torch.equal(x, x0)  # not modified in place
    n_mask, n_rand = D.seed_counts(*D.seed_rates(B, gen(7), x.device), T)  # rates are the first draws
    is_mask = x_in == M
    is_rand = targets == M
    assert torch.equal(is_mask.sum(1), n_mask)
    assert torch.equal(is_rand.sum(1), n_rand)
    assert n_mask.max() > 20 and n_rand.max() > 5  # the batch exercises large counts
    assert not (is_mask & is_rand).any()
    assert torch.equal(targets[is_mask], x[is_mask])  # masked -> original
    r = x_in[is_rand]
    assert (r != x[is_rand]).all() and (r != M).all() and (r >= 0).all()  # random -> wrong, never [MASK]
    untouched = ~is_mask & ~is_rand
    assert torch.equal(x_in[untouched], x[untouched]) and torch.equal(targets[untouched], x[untouched])


def test_seed_corrupt_rates_match_expectation() -> None:
    B, T = 40_000, 32
    x = torch.randint(0, M, (B, T), generator=gen(2))
    x_in, targets = D.seed_corrupt(x, M, gen(3))
    frac_mask = (x_in == M).float().mean(1)
    frac_rand = (targets == M).float().mean(1)
    # expectation by midpoint quadrature over (u, v) ~ U(0,1)^2 of the spec's formulas, in float64
    g = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    u, v = torch.meshgrid(g, g, indexing="ij")
    rm = 0.99 * u
    nm = torch.floor(rm * T)
    nr = torch.floor(v * (0.99 - rm) * (T - nm))
    for emp, expect in ((frac_mask, (nm / T).mean().item()), (frac_rand, (nr / T).mean().item())):
        se = emp.std().item() / math.sqrt(B)
        assert abs(emp.mean().item() - expect) < 4 * se, (emp.mean().item(), expect, se)
    assert abs(D.seed_rates(B, gen(4), x.device)[0].mean().item() - 0.495) < 0.01
    # n_rand counts the remaining positions: a fraction of T instead would give ~0.24, not ~0.15
    assert 0.1 < frac_rand.mean().item() < 0.2


def test_seed_corrupt_deterministic() -> None:
    x = torch.randint(0, M, (8, 32), generator=gen(0))
    a = D.seed_corrupt(x, M, gen(5))
    b = D.seed_corrupt(x, M, gen(5))
    c = D.seed_corrupt(x, M, gen(6))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_random_wrong_tokens_uniform_over_others() -> None:
    x = torch.full((100_000,), 3)
    r = D.random_wrong_tokens(x, M, gen(0))
    counts = torch.bincount(r, minlength=V).float()
    assert counts[3] == 0 and counts[M] == 0
    others = counts[[i for i in range(M) if i != 3]] / len(x)
    assert (others - 1 / 9).abs().max() < 0.01
    with pytest.raises(ValueError):
        D.random_wrong_tokens(torch.zeros(3, dtype=torch.long), 1, gen(0))


def test_seed_loss_hand_computed_weights() -> None:
    m = 2  # vocab {0, 1, [MASK]=2}
    logits = torch.tensor([[[0.0, 0.0, 2.0],  # in [MASK], target 0, predicts [MASK] -> 0.25
                            [0.0, 0.0, 3.0],  # in 1, target 1, predicts [MASK] -> 0.5
                            [2.0, 0.0, 0.0],  # in [MASK], target 0, predicts 0 -> 1.0
                            [0.0, 1.0, 2.0],  # in 0 (random), target [MASK], predicts [MASK] -> 1.0
                            [0.0, 1.0, 0.5]]])  # in 1, target 1, predicts 1 -> 1.0
    x_in = torch.tensor([[m, 1, m, 0, 1]])
    targets = torch.tensor([[0, 1, 0, m, 1]])

    def ce(row: list[float], k: int) -> float:
        return math.log(sum(math.exp(v) for v in row)) - row[k]

    rows = logits[0].tolist()
    weights = [0.25, 0.5, 1.0, 1.0, 1.0]
    expect = sum(w * ce(r, k) for w, r, k in zip(weights, rows, targets[0].tolist())) / 5  # mean over ALL
    got = D.seed_loss(logits, x_in, targets, m, penalty_keep_mask=0.25, penalty_mask_correct=0.5)
    assert got.item() == pytest.approx(expect, rel=1e-6)
    # different penalties move the loss by exactly their share
    got2 = D.seed_loss(logits, x_in, targets, m, penalty_keep_mask=1.0, penalty_mask_correct=1.0)
    assert got2.item() - got.item() == pytest.approx((0.75 * ce(rows[0], 0) + 0.5 * ce(rows[1], 1)) / 5, rel=1e-5)


# ----------------------------------------------------------------------------- mdlm


def test_stratified_t_one_per_stratum() -> None:
    eps, B = 1e-3, 8
    for seed in range(5):
        t = D.stratified_t(B, gen(seed), torch.device("cpu"), eps)
        assert ((t >= eps) & (t < 1)).all()
        strata = torch.floor((t - eps) / (1 - eps) * B).long()
        assert sorted(strata.tolist()) == list(range(B))
    a, b = (D.stratified_t(64, gen(s), torch.device("cpu")) for s in (0, 1))
    assert not torch.equal(a.argsort(), b.argsort())  # shuffled, not sorted by row


def test_clipped_schedule_trains_on_its_slice_only() -> None:
    t = D.stratified_t(16, gen(2), torch.device("cpu"), eps=0.3, t_max=0.8)
    assert ((t >= 0.3) & (t < 0.8)).all()
    assert sorted(torch.floor((t - 0.3) / 0.5 * 16).long().tolist()) == list(range(16))  # still stratified
    x = torch.randint(0, M, (64, 64), generator=gen(3))
    _, t_blocks, _ = D.mdlm_corrupt(x, M, gen(4), eps=0.3, block=8, t_max=0.8)
    assert ((t_blocks >= 0.3) & (t_blocks < 0.8)).all()
    opts = D.DiffusionOptions(mask_token_id=M, eps=0.3, t_max=0.8)
    model = FixedLogits(torch.zeros(V))
    D.get_objective("mdlm")(model, x, gen(5), opts)
    frac = (model.inputs[0] == M).float().mean(1)
    assert frac.min() > 0.15 and frac.max() < 0.95  # no sequence nearly clean or nearly all masked


def test_mdlm_corrupt_masks_with_probability_t() -> None:
    B, T = 8, 8192
    x = torch.randint(0, M, (B, T), generator=gen(0))
    x_t, t, masked = D.mdlm_corrupt(x, M, gen(1))
    assert torch.equal(x_t == M, masked) and torch.equal(x_t[~masked], x[~masked])
    frac = masked.float().mean(1)
    se = (t * (1 - t) / T).sqrt()
    assert ((frac - t).abs() < 4 * se + 1e-4).all()


def test_mdlm_loss_hand_computed_and_mask_logit_excluded() -> None:
    B, T, m = 2, 3, 2
    logits = torch.randn(B, T, 3, generator=gen(0), requires_grad=True)
    x = torch.tensor([[0, 1, 1], [1, 0, 0]])
    masked = torch.tensor([[True, False, True], [False, True, True]])
    t = torch.tensor([0.4, 0.9])
    expect = 0.0
    for b in range(B):
        for i in range(T):
            if masked[b, i]:
                l0, l1 = logits[b, i, 0].item(), logits[b, i, 1].item()
                p = math.exp(logits[b, i, x[b, i]].item()) / (math.exp(l0) + math.exp(l1))
                expect += -math.log(p) / t[b].item()
    expect /= B * T
    loss = D.mdlm_loss(logits, x, masked, t, m)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    loss.backward()
    assert logits.grad[..., m].abs().max() == 0  # the [MASK] logit gets no gradient
    shifted = logits.detach().clone()
    shifted[..., m] = 100.0
    assert D.mdlm_loss(shifted, x, masked, t, m).item() == pytest.approx(expect, rel=1e-5)


# ----------------------------------------------------------------------------- NELBO


def test_nelbo_perfect_iid_model_recovers_entropy() -> None:
    B, T = 512, 32
    x = torch.multinomial(P4, B * T, replacement=True, generator=gen(0)).view(B, T)
    vals = D.nelbo(marginal_model(P4), x, 4, gen(1), n_draws=4)
    assert vals.shape == (B, 4) and torch.isfinite(vals).all()
    mean, se = D.mean_and_stderr(vals)
    H = entropy(P4)
    assert H == pytest.approx(1.75 * math.log(2))
    assert se < 0.05
    assert abs(mean - H) < 3 * se, (mean, H, se)
    worse, _ = D.mean_and_stderr(D.nelbo(marginal_model(torch.full((4,), 0.25)), x, 4, gen(1)))
    assert worse == pytest.approx(math.log(4), abs=0.05) and worse > mean + 0.1


def test_nelbo_marginal_model_on_markov_source_bounds_entropy_rate() -> None:
    B, T, stay = 512, 32, 0.9  # X_t = X_{t-1} w.p. 0.9, else a fresh draw from P4: stationary law P4
    g = gen(2)
    cols = [torch.multinomial(P4, B, replacement=True, generator=g)]
    for _ in range(T - 1):
        fresh = torch.multinomial(P4, B, replacement=True, generator=g)
        cols.append(torch.where(torch.rand(B, generator=g) < stay, cols[-1], fresh))
    x = torch.stack(cols, dim=1)
    rows = stay * torch.eye(4) + (1 - stay) * P4  # transition matrix
    rate = sum(P4[i].item() * entropy(rows[i]) for i in range(4))
    mean, se = D.mean_and_stderr(D.nelbo(marginal_model(P4), x, 4, gen(3)))
    assert rate < 0.6 < entropy(P4)
    assert mean - 3 * se > rate  # a bound: never below the entropy rate
    assert abs(mean - entropy(P4)) < 4 * se  # context-free model: the marginal entropy


def test_mean_and_stderr_averages_draws_per_row() -> None:
    vals = torch.tensor([[1.0, 3.0], [2.0, 2.0], [5.0, 7.0]])  # row means 2, 2, 6
    mean, se = D.mean_and_stderr(vals)
    assert mean == pytest.approx(10 / 3)
    assert se == pytest.approx(torch.tensor([2.0, 2.0, 6.0]).std().item() / math.sqrt(3))
    assert math.isnan(D.mean_and_stderr(torch.tensor([1.0]))[1])


# ----------------------------------------------------------------------------- repair


def test_repair_corrupt_flips_visible_tokens_only() -> None:
    B, T = 2048, 32
    x = torch.randint(0, M, (B, T), generator=gen(0))
    x_in, t, masked, flipped = D.repair_corrupt(x, M, gen(1), repair_rate_max=0.1)
    assert not (masked & flipped).any()
    assert torch.equal(x_in == M, masked)  # flips are never [MASK]
    assert (x_in[flipped] != x[flipped]).all()
    clean = ~masked & ~flipped
    assert torch.equal(x_in[clean], x[clean])
    assert flipped.sum() / (~masked).sum() == pytest.approx(0.05, abs=0.005)  # E[rho] = max / 2
    _, _, _, none = D.repair_corrupt(x, M, gen(1), repair_rate_max=0.0)
    assert not none.any()


def test_repair_loss_terms() -> None:
    B, T = 4, 8
    logits = torch.randn(B, T, V, generator=gen(0))
    x = torch.randint(0, M, (B, T), generator=gen(1))
    _, t, masked, flipped = D.repair_corrupt(x, M, gen(2), repair_rate_max=0.5)
    assert flipped.any() and masked.any()
    base = D.mdlm_loss(logits, x, masked, t, M)
    logp = logits.log_softmax(-1)
    flag = -(logp[..., M] * flipped).sum() / (B * T)  # target [MASK], full softmax
    clean = ~masked & ~flipped
    copy = -(logp.gather(-1, x[..., None]).squeeze(-1) * clean).sum() / (B * T)
    got0 = D.repair_loss(logits, x, masked, flipped, t, M)
    got1 = D.repair_loss(logits, x, masked, flipped, t, M, copy_weight=0.3)
    assert got0.item() == pytest.approx((base + flag).item(), rel=1e-5)
    assert got1.item() == pytest.approx((base + flag + 0.3 * copy).item(), rel=1e-5)
    assert D.repair_loss(logits, x, masked, torch.zeros_like(flipped), t, M).item() == pytest.approx(base.item())


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(D.OBJECTIVES))
def test_objectives_backprop_on_tiny_gpt(name: str) -> None:
    model = tiny_gpt()
    if name == "prime":  # partial masking needs its sub-token embedding (test_prime.py tests it in depth)
        model = GPT(dataclasses.replace(model.config, prime_base=2))
    x = torch.randint(0, M, (4, 32), generator=gen(0))
    opts = D.DiffusionOptions(mask_token_id=M, copy_weight=0.1)
    loss = D.get_objective(name)(model, x, gen(1), opts)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grad = model.lm_head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    again = D.get_objective(name)(model, x, gen(1), opts)
    assert again.item() == pytest.approx(loss.item())  # deterministic given the generator


def test_get_objective_unknown_names_choices() -> None:
    with pytest.raises(ValueError, match="mdlm"):
        D.get_objective("nope")
