"""Partial masking (prime.py, subtokens.py): the code is a bijection, one digit per token is exactly mdlm, the bound
of the true conditionals is the entropy, ruled-out tokens get zero probability, and bad input is a one-line error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fakes import gen

from nanodlm.bench import quality
from nanodlm.core.errors import UserError
from nanodlm.diffusion import diffusion as D
from nanodlm.diffusion import prime as P
from nanodlm.diffusion.diffusion import DiffusionOptions
from nanodlm.evaluation.evaluate import EvalConfig, evaluate_checkpoint
from nanodlm.model import subtokens as S
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.runs.checkpoint import build_model, load_checkpoint, load_model, save_checkpoint
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import load_train_config, train


def tiny(vocab: int = 65, seed: int = 0, **prime) -> GPT:
    """A 2-layer, 32-wide diffusion GPT over ``vocab`` real tokens (+ [MASK]); prime keys make it a prime model."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(model_type="diffusion", vocab_size=vocab + 1, n_layer=2, n_head=2, n_embd=32, block_size=16,
                         **prime)).eval()


# ----------------------------------------------------------------------------- the code


@pytest.mark.parametrize(("base", "bits", "want"), [(0, 0, (2, 7)), (2, 0, (2, 7)), (0, 2, (9, 2)), (0, 3, (5, 3)),
                                                    (0, 7, (2, 7)), (0, 1, (65, 1)), (3, 0, (3, 4)), (6, 3, (6, 3))])
def test_code_size_is_the_fewest_digits(base: int, bits: int, want: tuple[int, int]) -> None:
    assert S.code_size(65, base, bits) == want
    b, n = want
    assert b**n >= 65 and (n == 1 or b ** (n - 1) < 65)


def test_code_size_refuses_too_few_and_idle_digits() -> None:
    with pytest.raises(ValueError, match="fewer than the 65 tokens: raise prime_bits to 7"):
        S.code_size(65, 2, 2)
    with pytest.raises(ValueError, match="lower prime_bits to 7"):
        S.code_size(65, 2, 9)
    with pytest.raises(ValueError, match="prime_base"):
        S.code_size(65, 1, 3)


@pytest.mark.parametrize(("vocab", "base", "bits", "shuffle"), [(65, 2, 7, True), (65, 5, 3, True), (65, 9, 2, False),
                                                                 (10, 2, 4, True), (65, 65, 1, True)])
def test_encoding_and_shuffle_are_bijections(vocab: int, base: int, bits: int, shuffle: bool) -> None:
    perm = torch.randperm(vocab, generator=gen(3)) if shuffle else torch.arange(vocab)
    code = S.make_code(perm, base, bits)
    x = torch.arange(vocab)
    assert code.table.shape == (vocab, bits) and code.table.min() >= 0 and code.table.max() < base
    assert len({tuple(r) for r in code.table.tolist()}) == vocab  # injective: distinct digits per token
    assert torch.equal(S.decode(code.table[x], perm, base), x)  # and decoding inverts it
    assert S.permutation_problem(perm, vocab) is None
    # digit states <-> canvas ids, for every mask pattern of a batch: a round trip, canonical at both ends
    tokens = torch.randint(0, vocab, (64, 8), generator=gen(4))
    masked = torch.rand(64, 8, bits, generator=gen(5)) < 0.5
    digits = code.table[tokens].masked_fill(masked, base)
    ids = S.state_ids(digits, tokens, code)
    assert torch.equal(S.state_digits(ids, code), digits)
    assert torch.equal(ids[~masked.any(-1)], tokens[~masked.any(-1)])  # every digit known: the token itself
    assert (ids[masked.all(-1)] == vocab).all()  # every digit masked: [MASK]
    assert (ids[masked.any(-1) & ~masked.all(-1)] > vocab).all()  # partly known: past [MASK]


def test_permutation_problem_names_the_fault() -> None:
    assert "not a permutation" in S.permutation_problem(torch.tensor([0, 1, 1, 3]), 4)
    assert "shape" in S.permutation_problem(torch.arange(5), 4)
    assert "int64" in S.permutation_problem(torch.arange(4.0), 4)


def test_prime_checkpoints_from_before_prime_embed_load_as_the_digit_sum(tmp_path: Path) -> None:
    model = tiny(prime_base=2, prime_embed="sum")
    args = {k: v for k, v in model.config.to_dict().items() if k != "prime_embed"}
    save_checkpoint(tmp_path / "ckpt.pt", {"model": model.state_dict(), "meta": {"model_args": args, "iter_num": 1}})
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["meta"]["model_args"]["prime_embed"] == "sum"
    x = torch.randint(0, 66, (2, 16), generator=gen(0))
    with torch.no_grad():
        assert torch.equal(build_model(ckpt["meta"]["model_args"], ckpt["model"], "ckpt.pt")(x)[0], model(x)[0])


def test_shuffle_survives_save_and_load(tmp_path: Path) -> None:
    model = tiny(prime_base=2)
    perm = model.transformer.wse.perm.clone()
    assert not torch.equal(perm, torch.arange(65))  # shuffled by default
    save_checkpoint(tmp_path / "ckpt.pt", {"model": model.state_dict(), "meta": {"model_args": model.config.to_dict(),
                                                                                "iter_num": 1}})
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    loaded = build_model(ckpt["meta"]["model_args"], ckpt["model"], "ckpt.pt")  # a fresh model draws another shuffle
    assert torch.equal(loaded.transformer.wse.perm, perm)
    assert torch.equal(loaded.transformer.wse.code().table, model.transformer.wse.code().table)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("embed", ["candidates", "sum"])
def test_one_digit_per_token_is_exactly_mdlm(embed: str) -> None:
    """prime_bits 1 (base V): same weights, same seed -> the same corruption, loss and bound, bit for bit."""
    plain = tiny()
    prime = tiny(prime_bits=1, prime_shuffle=False, prime_embed=embed)
    assert (prime.config.prime_base, prime.config.prime_bits) == (65, 1)
    state = {k: v for k, v in plain.state_dict().items()}
    wte = plain.transformer.wte.weight[:66].detach()  # token rows + [MASK]'s
    if embed == "sum":  # the digit vectors are the token rows
        state["transformer.wse.weight"] = wte.clone()
    else:  # a known token brings its own wte row (the one candidate left); [MASK] its digit's masked vector
        state["transformer.wse.weight"] = torch.cat((torch.zeros_like(wte[:65]), wte[65:]))
    state["transformer.wse.perm"] = torch.arange(65)
    prime.load_state_dict(state)
    x = torch.randint(0, 65, (6, 16), generator=gen(1))
    o = DiffusionOptions(mask_token_id=65)
    plain.train(), prime.train()
    a, b = D.mdlm_objective(plain, x, gen(7), o), D.prime_objective(prime, x, gen(7), o)
    assert torch.equal(a, b)
    a.backward(), b.backward()  # the same gradients reach the shared trunk
    assert torch.equal(plain.transformer.h[0].attn.c_attn.weight.grad, prime.transformer.h[0].attn.c_attn.weight.grad)
    plain.eval(), prime.eval()
    assert torch.equal(D.nelbo(plain, x, 65, gen(9), 3), D.nelbo(prime, x, 65, gen(9), 3))


def iid_conditionals(pi: torch.Tensor):
    """A model that outputs the true conditionals of i.i.d. tokens ~ pi: log pi at every position ([MASK] last, high:
    the bound must rule it out); the bound restricts it to the tokens consistent with each position's known digits."""
    row = torch.cat([pi.log(), torch.tensor([9.0])])

    def model(ids: torch.Tensor):
        return row.expand(*ids.shape, -1).clone(), None

    return model


@pytest.mark.parametrize(("base", "bits", "shuffle"), [(2, 4, True), (4, 2, False), (10, 1, False)])
def test_true_conditionals_make_the_bound_the_entropy(base: int, bits: int, shuffle: bool) -> None:
    pi = (1.5 * torch.randn(10, generator=gen(1))).softmax(-1)  # (10,) a skewed source
    H = -(pi.double() * pi.double().log()).sum().item()
    perm = torch.randperm(10, generator=gen(2)) if shuffle else torch.arange(10)
    code = S.make_code(perm, base, bits)
    x = torch.multinomial(pi, 600 * 32, replacement=True, generator=gen(3)).view(600, 32)
    terms = P.prime_nelbo(iid_conditionals(pi), x, code, gen(4), n_draws=4)
    mean, se = D.mean_and_stderr(terms)
    # the sample's own entropy (-mean log pi(x)) removes the sampling noise of x; the rest is the masks' noise
    h_sample = -pi.log()[x].double().mean().item()
    assert abs(mean - h_sample) < 4 * se + 1e-3, (mean, h_sample, se, H)
    # the bound is not loose by construction: a model that ignores the known digits pays for it
    wrong = P.prime_nelbo(iid_conditionals(torch.full((10,), 0.1)), x, code, gen(4), n_draws=4).mean().item()
    assert wrong > mean + 0.05 or math.isclose(H, math.log(10), rel_tol=1e-2)


# ----------------------------------------------------------------------------- the model


def test_ruled_out_tokens_get_exactly_zero_probability() -> None:
    model = tiny(prime_base=2)
    code = model.transformer.wse.code()
    x = torch.randint(0, 65, (8, 16), generator=gen(1))
    ids, masked = P.prime_corrupt(x, code, torch.linspace(0.1, 0.9, 8), gen(2))
    assert ((ids > 65) & (ids < 65 + 3**7 + 1)).any()  # partly known positions are in the batch
    with torch.no_grad():
        probs = model(ids)[0].softmax(-1)  # (B, T, 66)
    allowed = S.consistent(code.table[x].masked_fill(masked, 2), code)  # (B, T, 65)
    assert (probs[..., :65][~allowed] == 0).all() and (probs[..., 65] == 0).all()  # exactly, not nearly
    assert torch.allclose(probs.sum(-1), torch.ones(8, 16))
    assert torch.equal(probs[~masked.any(-1)].argmax(-1), x[~masked.any(-1)])  # known: the token, probability 1
    assert (probs.gather(-1, x[..., None]) > 0).all()  # the truth is never ruled out


def test_train_eval_resume_and_sample_a_prime_model(tiny_values, tmp_path: Path) -> None:
    from nanodlm.sampling.generate import Prompt, SamplerOptions, generate

    out = tmp_path / "run"
    cfg = build_config(TrainConfig, tiny_values(out, model_type="diffusion", objective="prime", max_iters=3,
                                                prime_bits=3))
    assert math.isfinite(train(cfg)["val_loss"])
    meta = load_checkpoint(out / "ckpt.pt")["meta"]
    assert (meta["model_args"]["prime_base"], meta["model_args"]["prime_bits"]) == (S.code_size(
        meta["dataset_meta"]["vocab_size"], 0, 3)[0], 3)
    resumed = load_train_config([f"--out_dir={out}", "--init_from=resume", "--max_iters=4"])
    assert resumed.prime_bits == 3 and train(resumed)["iter_num"] == 4  # the code comes from the checkpoint
    with pytest.raises(UserError, match="contradicts the checkpoint"):
        train(load_train_config([f"--out_dir={out}", "--init_from=resume", "--max_iters=5", "--model_type=diffusion",
                                 "--objective=prime", "--prime_bits=4"]))
    result = evaluate_checkpoint(EvalConfig(out_dir=str(out), num_batches=2, batch_size=4, n_draws=2, ckpt="last"))
    assert result["objective"] == "prime" and math.isfinite(result["nelbo"]) and result["bits_per_char"] > 0
    assert result["prime_bits"] == 3
    assert quality.external_run(str(out))["cfg"].objective == "prime"  # bench quality --diffusion_run takes it
    model, _, tok = load_model(out, "last")
    for sampler in ("ancestral", "confidence", "remask"):
        g = generate(model, tok, SamplerOptions(sampler=sampler, steps=6), Prompt(length=16, start="Th"),
                     num_samples=3, seed=0)
        assert g.tokens.max() < model.config.mask_token_id and g.tokens.min() >= 0
        assert g.texts[0].startswith("Th") and g.info["forward_passes"] <= 6


def test_bench_parallel_takes_a_prime_run(tiny_runs: dict[str, str], tiny_values, tmp_path: Path) -> None:
    """Its curves run the prime confidence sampler on the whole canvas and semi-AR with the dual cache (decode)."""
    from nanodlm.bench.parallel import bench_parallel

    out = tmp_path / "prime"
    train(build_config(TrainConfig, tiny_values(out, model_type="diffusion", objective="prime", max_iters=2,
                                                n_layer=1)))
    r = bench_parallel([f"--runs={out}", f"--judge={tiny_runs['gpt2']}", f"--ar_out_dir={tiny_runs['gpt2']}",
                        "--taus=0,0.9", "--steps=4", "--semi_ar_blocks=0,4", "--approx_caches=none,dual", "--seeds=1",
                        "--num_samples=2", "--length=12", "--batch1_reps=1", "--device=cpu",
                        f"--json={tmp_path / 'p.json'}"])
    assert [(c["semi_ar_block"], c["approx_cache"]) for c in r["curves"]] == [(0, "none"), (4, "none"), (4, "dual")]
    for c in r["curves"]:
        for p in c["points"]:
            assert math.isfinite(p["judge_ppl"]) and 1 <= p["passes_per_256"] <= 4 * 256 / 12 * (1 + 1e-6)


@pytest.mark.slow  # trains the smoke protocol's runs
def test_bench_quality_trains_prime_contestants(tmp_path: Path) -> None:
    chosen = quality.bench_quality(["--preset=smoke", f"--work_dir={tmp_path}", "--device=cpu", "--progress=false",
                                    "--train_only=true", "--screen_iters=5", "--objective=prime", "--prime_bits=3"])
    meta = load_checkpoint(Path(chosen["diffusion"]) / "ckpt.pt")["meta"]
    assert meta["config"]["objective"] == "prime" and meta["model_args"]["prime_bits"] == 3


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("values", "match"), [
    ({"model_type": "gpt2", "prime_bits": 7}, "partial masking is for bidirectional diffusion models"),
    ({"model_type": "gpt2", "objective": "prime"}, "set model_type=diffusion"),
    ({"model_type": "diffusion", "objective": "mdlm", "prime_base": 2}, "need objective=prime"),
    ({"model_type": "diffusion", "objective": "prime", "diffusion_block": 4, "block_size": 16}, "diffusion_block=0"),
    ({"model_type": "diffusion", "objective": "prime", "prime_bits": -1}, ">= 0"),
    ({"model_type": "diffusion", "objective": "prime", "prime_embed": "concat"}, "prime_embed' must be one of"),
    ({"model_type": "diffusion", "objective": "mdlm", "prime_embed": "sum"}, "need objective=prime"),
])
def test_prime_flags_in_the_wrong_place_are_one_line_errors(values: dict, match: str) -> None:
    with pytest.raises(UserError, match=match) as e:
        build_config(TrainConfig, values)
    assert "\n" not in str(e.value)


def test_too_few_prime_bits_for_the_vocabulary_is_a_one_line_error(tiny_values, tmp_path: Path) -> None:
    cfg = build_config(TrainConfig, tiny_values(tmp_path / "r", model_type="diffusion", objective="prime",
                                                prime_bits=2, prime_base=2, max_iters=1))
    with pytest.raises(UserError, match="raise prime_bits to") as e:
        train(cfg)
    assert "\n" not in str(e.value) and "dataset 'tiny'" in str(e.value)


@pytest.mark.parametrize(("perm", "match"), [(None, "it is missing"), (torch.tensor([0] * 65), "not a permutation"),
                                             (torch.arange(64), "shape")])
def test_checkpoint_with_a_bad_shuffle_is_a_one_line_error(perm, match: str) -> None:
    model = tiny(prime_base=2)
    state = model.state_dict()
    if perm is None:
        del state["transformer.wse.perm"]
    else:
        state["transformer.wse.perm"] = perm
    with pytest.raises(UserError, match=match) as e:
        build_model(model.config.to_dict(), state, "ckpt.pt")
    assert "\n" not in str(e.value) and "transformer.wse.perm" in str(e.value)
