"""Fill-in-the-middle for gpt2 models: the layout, training, eval, infilling through the generation library."""

from __future__ import annotations

import pytest
import torch

from nanodlm.core.errors import UserError
from nanodlm.diffusion.fim import N_SENTINELS, fim_ids, fim_layout, fim_prompt, fim_restore, fim_transform
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling.fim import fim_middle_nll, generate_fim
from nanodlm.training.config import TrainConfig, build_config

V = 65
IDS = fim_ids(V)


def test_the_fim_layout_is_a_permutation_of_the_window_plus_sentinels_and_back() -> None:
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(0, V, (64, 33), generator=gen)  # (B, T+1)
    out = fim_transform(windows, 0.5, 0.5, IDS, gen)
    assert out.shape == windows.shape  # windows stay block_size + 1 long
    laid = [r for r in range(64) if out[r, 0] == IDS.pre]
    assert 15 < len(laid) < 50  # about half
    spm = 0
    for r in range(64):
        row = out[r].tolist()
        if r not in laid:
            assert row == windows[r].tolist()
            continue
        text = windows[r, :33 - N_SENTINELS].tolist()
        assert sorted(row) == sorted(text + list(IDS))  # a permutation of the text plus the four sentinels
        assert row[-1] == IDS.eom and fim_restore(row, IDS) == text  # and back
        spm += row[1] == IDS.suf
    assert 0 < spm < len(laid)
    assert fim_restore(windows[0].tolist(), IDS) == windows[0].tolist()


def test_layouts_and_prompts_agree() -> None:
    p, m, s = [1, 2], [3, 4, 5], [6]
    for spm in (False, True):
        seq = fim_layout(p, m, s, IDS, spm)
        prompt = fim_prompt(p, s, IDS, spm)
        if spm:
            assert seq[:len(prompt)] == prompt and seq[len(prompt):] == [*m, IDS.eom]
        else:
            assert seq == [*prompt, *m, IDS.eom]
        assert fim_restore(seq, IDS) == p + m + s
    assert fim_restore(fim_layout([], [], [7, 8], IDS), IDS) == [7, 8]


def _model(vocab: int = V + 4, **kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=vocab, fim_sentinels=4, **kw))


def test_a_filled_hole_has_exactly_its_length_and_no_sentinel() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(0)
    mids, info = generate_fim(model, [1, 2, 3], [4, 5], 8, length=7, max_new=7, temperature=1.5, generator=gen)
    assert all(len(m) == 7 and all(0 <= t < V for t in m) for m in mids)
    assert info["forward_passes"] == 7  # one prefill, then one per token after the first
    class EomLover:  # a fake model that always wants <EOM>: a known length is still written whole
        config = model.config

        def __call__(self, idx, **kw):
            logits = torch.zeros(*idx.shape, V + 4)
            logits[..., IDS.eom] = 20.0
            return logits, None

    model = EomLover()
    mids, _ = generate_fim(model, [1], [2], 3, length=5, max_new=5, generator=gen)
    assert [len(m) for m in mids] == [5, 5, 5]
    free, info = generate_fim(model, [1], [2], 3, length=None, max_new=9, generator=gen)
    assert free == [[], [], []] and info["ended_by_eom"] == 3  # without a length: until <EOM>
    with pytest.raises(ValueError, match="do not fit"):
        generate_fim(model, [1] * 20, [2] * 10, 1, length=5, max_new=5, generator=gen)


def test_the_cached_and_uncached_fills_agree_and_the_nll_is_what_greedy_maximizes() -> None:
    model = _model()
    a, _ = generate_fim(model, [1, 2], [3], 2, length=6, max_new=6, temperature=0.0,
                        generator=torch.Generator().manual_seed(1))
    b, _ = generate_fim(model, [1, 2], [3], 2, length=6, max_new=6, temperature=0.0,
                        generator=torch.Generator().manual_seed(1), use_cache=False)
    assert a == b
    greedy = fim_middle_nll(model, [1, 2], a[0], [3])
    other = fim_middle_nll(model, [1, 2], [(t + 1) % V for t in a[0]], [3])
    assert 0 < greedy < other


def test_fim_flags_are_checked() -> None:
    cfg = build_config(TrainConfig, {"model_type": "gpt2", "objective": "fim"})
    assert (cfg.fim_rate, cfg.fim_spm_rate) == (0.5, 0.0)
    with pytest.raises(UserError, match="objective=fim trains a gpt2"):
        build_config(TrainConfig, {"model_type": "diffusion", "objective": "fim"})
    with pytest.raises(UserError, match="needs objective=fim"):
        build_config(TrainConfig, {"model_type": "diffusion", "fim_rate": 0.5})
    with pytest.raises(UserError, match="fim_rate"):
        build_config(TrainConfig, {"model_type": "gpt2", "objective": "fim", "fim_rate": 1.5})
    with pytest.raises(ValueError, match="fim_sentinels"):
        GPTConfig(model_type="diffusion", vocab_size=70, fim_sentinels=4)


# --- trained tiny models: training, eval, sampling, the bench ------------------------------------------------------

@pytest.fixture(scope="module")
def infill_runs(tmp_path_factory: pytest.TempPathFactory, data_dir: str) -> dict[str, str]:
    """{"fim", "fim_spm", "ar", "diffusion", "judge"}: tiny runs of 20 iterations on the ``tiny`` dataset, block 32."""
    from nanodlm.training.train import train

    rng = torch.get_rng_state()
    root = tmp_path_factory.mktemp("infill-runs")
    runs = {}
    for name, values in (("fim", {"model_type": "gpt2", "objective": "fim", "fim_rate": 0.9}),
                         ("fim_spm", {"model_type": "gpt2", "objective": "fim", "fim_rate": 0.9, "fim_spm_rate": 0.5}),
                         ("ar", {"model_type": "gpt2"}), ("judge", {"model_type": "gpt2", "n_layer": 2}),
                         ("diffusion", {"model_type": "diffusion", "objective": "mdlm"})):
        runs[name] = str(root / name)
        train(build_config(TrainConfig, {
            "out_dir": runs[name], "data_dir": data_dir, "dataset": "tiny", "device": "cpu", "dtype": "float32",
            "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "max_iters": 20,
            "eval_iters": 1, "eval_interval": 1000, "warmup_iters": 0, "progress": False, "plot": False,
            "pos_emb": "rope", **values}))
    torch.set_rng_state(rng)
    return runs


def test_a_fim_run_trains_evaluates_left_to_right_and_samples_without_sentinels(infill_runs) -> None:
    from nanodlm.evaluation.evaluate import EvalConfig, evaluate_checkpoint
    from nanodlm.runs.checkpoint import load_model
    from nanodlm.sampling.generate import Prompt, SamplerOptions, generate

    model, meta, tok = load_model(infill_runs["fim"], "last")
    assert model.config.fim_sentinels == 4 and model.config.text_vocab_size == len(tok.itos)
    result = evaluate_checkpoint(build_config(EvalConfig, {"out_dir": infill_runs["fim"], "num_batches": 1,
                                                           "device": "cpu"}))
    assert result["objective"] == "fim" and 0 < result["loss"] < 10  # plain CE over the text's ids
    plain = generate(model, tok, SamplerOptions(sampler="ar"), Prompt(start="ab", max_new_tokens=20), num_samples=3,
                     seed=0)
    assert plain.tokens.max() < model.config.text_vocab_size and plain.tokens.min() >= 0
    filled = generate(model, tok, SamplerOptions(), Prompt(infill="to be, ____ not"), num_samples=4,
                      seed=0)  # the default options, as `nanodlm sample --infill=...` gives them
    assert all(t.startswith("to be, ") and t.endswith(" not") and len(t) == len("to be, ____ not")
               for t in filled.texts)
    free = generate(model, tok, SamplerOptions(sampler="ar"), Prompt(start="to", suffix="be", max_new_tokens=6),
                    num_samples=4, seed=0)
    assert all(t.startswith("to") and t.endswith("be") and len(t) <= 4 + 6 for t in free.texts)
    assert all(0 <= i < model.config.text_vocab_size for row in free.tokens.tolist() for i in row if i != -1)


def test_fim_bad_inputs_are_one_line_errors(infill_runs) -> None:
    from nanodlm.runs.checkpoint import load_model
    from nanodlm.sampling.generate import Prompt, SamplerOptions, generate

    model, _, tok = load_model(infill_runs["fim"], "last")
    ar, _, _ = load_model(infill_runs["ar"], "last")
    cases = [(model, Prompt(infill="____"), "all gap"), (model, Prompt(infill="a__b__c"), "fills one gap"),
             (model, Prompt(start="a" * 20, suffix="b" * 10, length=40), "do not fit"),
             (ar, Prompt(start="a", suffix="b"), "objective=fim")]
    with pytest.raises(UserError, match="TiDAR"):
        generate(model, tok, SamplerOptions(sampler="speculative"), Prompt(infill="a__b"), seed=0)
    for m, prompt, message in cases:
        with pytest.raises(UserError, match=message):
            generate(m, tok, SamplerOptions(sampler="ar"), prompt, seed=0)


def test_the_hole_only_bound_is_evals_bound_when_the_hole_is_the_whole_window(infill_runs) -> None:
    from nanodlm.evaluation.evaluate import diffusion_nelbo, eval_windows
    from nanodlm.evaluation.infill import diffusion_hole_nll
    from nanodlm.runs.checkpoint import load_model

    model, meta, _ = load_model(infill_runs["diffusion"], "last")
    from nanodlm.data.dataset import open_split
    windows = eval_windows(open_split(meta["config"]["data_dir"], "tiny", "val"), 32, 6)  # (6, 33)
    whole = diffusion_hole_nll(model, windows[:, :32], torch.ones(6, 32, dtype=torch.bool),
                               torch.Generator().manual_seed(3), batch_size=4, n_draws=2)
    ref = diffusion_nelbo(model, windows, 4, torch.Generator().manual_seed(3), n_draws=2)
    assert float(whole.mean()) == pytest.approx(ref["nelbo"], rel=1e-6)
    part = torch.zeros(6, 32, dtype=torch.bool)
    part[:, 10:14] = True
    assert torch.isfinite(diffusion_hole_nll(model, windows[:, :32], part, torch.Generator().manual_seed(3))).all()


def test_bench_infill_runs_end_to_end_and_its_json_has_every_field(infill_runs, tmp_path) -> None:
    from nanodlm.bench.infill import bench_infill

    out = tmp_path / "dev.json"
    argv = [f"--diffusion_run={infill_runs['diffusion']}", f"--fim_run={infill_runs['fim']}",
            f"--fim_spm_run={infill_runs['fim_spm']}", f"--ar_run={infill_runs['ar']}",
            f"--judge={infill_runs['judge']}", "--lengths=1,4", "--windows=3",
            "--seeds=1,2", "--temperatures=0.8,1.2", "--n_draws=2", "--seam=4", f"--json={out}"]
    dev = bench_infill(argv)
    assert out.is_file() and out.with_suffix(".png").is_file()
    ltr = dev["left_to_right"]
    assert ltr["fim_over_ar"] == pytest.approx(ltr["fim"]["ce"] / ltr["ar"]["ce"]) and ltr["fim"]["ce"] > 0
    for row in dev["rows"]:
        assert set(row) == {"L", "likelihood", "greedy_accuracy", "real", "sampled"}
        assert row["likelihood"]["diffusion_l2r"]["mean"] > 0
        assert row["sampled"]["diffusion"]["passes_per_fill"] == row["L"]  # one token per step: L passes a fill
        for k in ("diffusion", "fim", "fim_spm", "ar"):
            assert row["likelihood"][k]["mean"] > 0 and 0 <= row["greedy_accuracy"][k]["mean"] <= 1
            s = row["sampled"][k]
            assert {"curve", "chosen_temperature", "judge_nll_at_real_entropy", "seam_nll_at_real_entropy",
                    "passes_per_fill"} <= set(s)
    from test_tables import load_tables

    table = "\n".join(load_tables().infill([str(out)]))
    assert table.count("| 4 | ") == 6 and f"{dev['rows'][1]['likelihood']['fim']['mean']:.3f}" in table
    assert f"{dev['rows'][1]['likelihood']['diffusion_l2r']['mean']:.3f}" in table
    test = bench_infill([*argv[:-3], "--seeds=5,6", "--split=test", f"--choose_from={out}",
                         f"--json={tmp_path / 'test.json'}"])
    for k in ("fim", "diffusion"):  # the dev pair around the real entropy (or the nearest) only
        assert [p["temperature"] for p in test["rows"][0]["sampled"][k]["curve"]] == dev["rows"][0]["sampled"][k][
            "chosen_temperatures"]
    # the diffusion sampler screened on dev, and taken by the test run
    screened = bench_infill([*argv[:-1], "--samplers=confidence,ancestral", f"--json={tmp_path / 'screen.json'}"])
    assert screened["diffusion_sampler"] in ("confidence", "ancestral")
    scores = screened["sampler_screen"]["judge_nll_at_chosen_temperatures"]
    assert screened["diffusion_sampler"] == min(scores, key=scores.get)
    assert screened["rows"][0]["sampled"]["diffusion"] == screened["rows"][0]["sampled"][
        f"diffusion:{screened['diffusion_sampler']}"]
    again = bench_infill([*argv[:-3], "--seeds=5", "--split=test", f"--choose_from={tmp_path / 'screen.json'}",
                          "--lengths=1", f"--json={tmp_path / 'test2.json'}"])
    assert again["diffusion_sampler"] == screened["diffusion_sampler"] == again["args"]["sampler"]
    with pytest.raises(UserError, match="screens diffusion samplers on dev"):
        bench_infill([*argv[:-3], "--split=test", "--samplers=confidence,ancestral", f"--json={tmp_path / 'z.json'}"])
    with pytest.raises(UserError, match="chose on dev"):
        bench_infill([*argv[:-3], "--split=test", f"--choose_from={out}", f"--json={tmp_path / 'x.json'}"])
    with pytest.raises(UserError, match="fim_spm_rate above 0"):
        bench_infill([*argv[:2], f"--fim_spm_run={infill_runs['fim']}", *argv[3:]])
    with pytest.raises(UserError, match="leaves no context"):
        bench_infill([*argv[:-1], "--lengths=40", f"--json={tmp_path / 'y.json'}"])


def test_the_race_runs_in_infill_mode_against_a_fim_model_and_streams_its_gap(infill_runs) -> None:
    import json

    from nanodlm.runs.checkpoint import load_model
    from nanodlm.sampling.trajectory import Recorder
    from nanodlm.web.serve import Engine, ServeConfig, Server

    def engine(name: str, run: str) -> Engine:
        model, _, tok = load_model(infill_runs[run], "last")
        return Engine(name, infill_runs[run], model, tok, "cpu")

    server = Server({"main": engine("main", "diffusion"), "ar": engine("ar", "fim")},
                    build_config(ServeConfig, {"out_dir": infill_runs["diffusion"]}))
    assert server.info()["models"]["ar"]["infills"] is True
    jobs = server.prepare(json.dumps({"race": True, "infill": "to be, ____ not", "sampler": "remask",
                                      "num_samples": 2}).encode())
    assert [e.name for e, _ in jobs] == ["main", "ar"]
    fim_engine, job = jobs[1]
    assert job.length == len("to be, ____ not") and job.steps == 4
    rec = Recorder(lambda i: fim_engine.tok.decode([i]), mask_token_id=fim_engine.mask_token_id, length=job.length)
    out = job.run(rec)
    assert all(t.startswith("to be, ") and t.endswith(" not") and len(t) == job.length for t in out.texts)
    masked = [len(rec.event(f)["samples"][0]["masked"]) for f in rec.frames]
    assert masked == [4, 3, 2, 1, 0]  # the gap, written left to right one character a step
    plain = Server({"main": engine("main", "diffusion"), "ar": engine("ar", "ar")},
                   build_config(ServeConfig, {"out_dir": infill_runs["diffusion"]}))
    with pytest.raises(UserError, match="objective=fim"):
        plain.prepare(json.dumps({"race": True, "infill": "to be, ____ not"}).encode())


def test_the_left_to_right_hole_likelihood_is_a_distribution_and_exact_for_one_token() -> None:
    from nanodlm.diffusion.diffusion import subs_log_probs
    from nanodlm.evaluation.infill import diffusion_hole_nll_l2r, hole_mask

    torch.manual_seed(0)
    model = GPT(GPTConfig(model_type="diffusion", n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=6)).eval()
    V = model.config.mask_token_id  # the text tokens are 0..V-1, [MASK] is V
    context = torch.randint(0, V, (8,))
    middles = torch.cartesian_prod(torch.arange(V), torch.arange(V))  # (V^2, 2): every middle of a 2-token hole
    windows = context.repeat(len(middles), 1)
    windows[:, 3:5] = middles
    hole = hole_mask(len(windows), 8, [3] * len(windows), 2)
    nll = diffusion_hole_nll_l2r(model, windows, hole, batch_size=7) * 2  # nats per hole -> per middle
    assert float(torch.exp(-nll).sum()) == pytest.approx(1.0, abs=1e-5)  # sums to one over the middles
    one = hole_mask(1, 8, [5], 1)
    with torch.no_grad():
        logits, _ = model(context.masked_fill(one[0], V)[None])
    direct = -subs_log_probs(logits, V)[0, 5, context[5]]
    assert float(diffusion_hole_nll_l2r(model, context[None], one)) == pytest.approx(float(direct), rel=1e-5)
