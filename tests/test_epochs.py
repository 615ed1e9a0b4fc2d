"""`bench epochs`: subsets, epoch budgets, curves along one run, the best-dev checkpoint, resume, AR input masking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nanodlm.bench import epochs as epochs_bench
from nanodlm.bench.curves import (
    BEST,
    best_row,
    epochs_to_iters,
    eval_epochs,
    read_curve,
    run_curve,
    stalled,
    subset_dataset,
)
from nanodlm.bench.presets import PRESETS
from nanodlm.core.errors import UserError
from nanodlm.diffusion.diffusion import mask_inputs
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.training.config import TrainConfig, build_config, config_to_dict
from nanodlm.training.step import make_loss_fn

TINY_MODEL = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, learning_rate=3e-3, min_lr=1e-4,
                  warmup_iters=2, eval_interval=1000, eval_iters=2, log_interval=1000, plot=False, progress=False,
                  device="cpu", threads=1)


@pytest.fixture
def work(tmp_path: Path, data_dir: str) -> Path:
    """A bench work dir holding a copy of the ``tiny`` dataset in work/data."""
    shutil.copytree(Path(data_dir) / "tiny", tmp_path / "data" / "tiny")
    return tmp_path


# --- subsets and budgets -------------------------------------------------------------------------------------------

def test_subset_is_a_prefix_of_the_train_split_of_exactly_the_asked_size(work: Path) -> None:
    data = work / "data"
    name = subset_dataset(data, "tiny", 1000, 32)
    full = np.fromfile(data / "tiny" / "train.bin", dtype=np.uint16)
    sub = np.fromfile(data / name / "train.bin", dtype=np.uint16)
    assert len(sub) == 1000 and np.array_equal(sub, full[:1000])
    assert (data / name / "val.bin").read_bytes() == (data / "tiny" / "val.bin").read_bytes()  # dev, test unchanged
    meta = json.loads((data / name / "meta.json").read_text())
    assert meta["train_tokens"] == 1000 and meta["vocab_size"] == json.loads((data / "tiny" / "meta.json").read_text())[
        "vocab_size"]
    assert subset_dataset(data, "tiny", 1000, 32) == name  # reused


def test_subset_larger_than_the_split_or_below_a_window_is_a_one_line_error(work: Path) -> None:
    n = len(np.fromfile(work / "data" / "tiny" / "train.bin", dtype=np.uint16))
    with pytest.raises(UserError, match="more than the train split"):
        subset_dataset(work / "data", "tiny", n + 1, 32)
    with pytest.raises(UserError, match="below one training window"):
        subset_dataset(work / "data", "tiny", 32, 32)
    for bad in ("--epochs=0", "--epochs=-4", "--train_chars=100,200 --epochs=1,2,3", "--knob_values=0,-1",
                "--knob_values=high"):
        with pytest.raises(UserError):
            epochs_bench.bench_epochs([*bad.split(), f"--work_dir={work}", "--dataset=tiny", "--preset=smoke"])
    for bad in ("--knob_values=0,-1", "--knob_values=high", "--knob_values=nan", "--knob_values=0,inf"):
        with pytest.raises(UserError, match="knob_values"):  # named, before any data is read or run trained
            epochs_bench.bench_epochs([bad, f"--work_dir={work}", "--dataset=tiny", "--preset=smoke"])


@pytest.mark.parametrize("epochs,tokens,per_iter,iters", [(256, 125_000, 3072, 10417), (64, 500_000, 3072, 10417),
                                                         (1, 3072, 3072, 1), (3, 1024, 3072, 1), (0.5, 6144, 3072, 1)])
def test_epochs_convert_to_iterations_exactly(epochs: float, tokens: int, per_iter: int, iters: int) -> None:
    got = epochs_to_iters(epochs, tokens, per_iter)
    assert got == iters
    assert got * per_iter >= epochs * tokens > (got - 1) * per_iter  # the fewest iterations that show the epochs


def test_eval_points_are_log_spaced_and_include_the_budget_and_the_screen() -> None:
    points = eval_epochs(256, 2, extra=(64,))
    assert points[0] == 1 and points[-1] == 256 and 64 in points and len(points) == 17
    ratios = np.diff(np.log2(points))
    assert np.allclose(ratios, 0.5)
    assert eval_epochs(10, 1, extra=(2.5,)) == [1, 2, 2.5, 4, 8, 10]
    with pytest.raises(UserError):
        epochs_to_iters(0, 100, 10)


# --- input-token masking for AR ------------------------------------------------------------------------------------

def test_input_masking_masks_inputs_at_the_rate_and_never_a_target() -> None:
    cfg = build_config(TrainConfig, {**TINY_MODEL, "model_type": "gpt2", "input_mask_rate": 0.15, "out_dir": "-"})
    seen = {}

    class Recorder:  # a fake model: records what the loss feeds it
        def __call__(self, idx, targets=None):
            seen["idx"], seen["targets"] = idx.clone(), targets.clone()
            return None, torch.zeros(())

    V = 65
    x = torch.randint(0, V, (64, 32), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, 1)
    make_loss_fn(cfg, V)(Recorder(), x, y, torch.Generator().manual_seed(1))
    assert torch.equal(seen["targets"], y)  # every next token is still predicted, none masked
    masked = seen["idx"] == V
    assert torch.equal(seen["idx"][~masked], x[~masked])
    assert 0.12 < masked.float().mean().item() < 0.18
    assert not (mask_inputs(x, 0.0, V, torch.Generator()) == V).any()


def test_an_input_masked_gpt2_model_has_a_mask_row_but_never_a_mask_logit() -> None:
    cfg = build_config(TrainConfig, {**TINY_MODEL, "model_type": "gpt2", "input_mask_rate": 0.15, "out_dir": "-"})
    gcfg = GPTConfig.for_data(cfg, 65, mask_row=True)
    assert gcfg.mask_token_id == 65 and gcfg.vocab_size == 65
    model = GPT(gcfg)
    logits, _ = model(torch.full((1, 4), 65), all_logits=True)
    assert logits.shape[-1] == 65  # [MASK] is an input row only
    with pytest.raises(UserError, match="input_mask_rate"):
        build_config(TrainConfig, {"model_type": "diffusion", "input_mask_rate": 0.1})
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(UserError):
            build_config(TrainConfig, {"model_type": "gpt2", "input_mask_rate": bad})


# --- one run: the curve, the best-dev checkpoint, resume -----------------------------------------------------------

def _spec(work: Path, name: str, stop: int | None = None, patience: int = 0, **over) -> dict:
    data = work / "data"
    ds = subset_dataset(data, "tiny", 2000, 32)
    values = {**TINY_MODEL, "model_type": "gpt2", "dataset": ds, "data_dir": str(data), "out_dir": str(work / name),
              **over}
    total = epochs_to_iters(8, 2000, 4 * 32)
    cfg = build_config(TrainConfig, {**values, "max_iters": total, "lr_decay_iters": total})
    points = [{"epochs": e, "iters": epochs_to_iters(e, 2000, 4 * 32)} for e in eval_epochs(8, 1)]
    return {"config": config_to_dict(cfg), "points": points, "stop_iters": stop or total, "eval_windows": 4,
            "eval_batch_size": 4, "patience": patience}


def test_the_best_dev_checkpoint_is_the_one_kept(work: Path) -> None:
    spec = _spec(work, "run", learning_rate=3e-2)  # a high rate: the dev loss is not monotone
    rows = run_curve(spec)
    assert [r["iters"] for r in rows] == [p["iters"] for p in spec["points"]]
    best = best_row(rows)
    assert best["dev"] == min(r["dev"] for r in rows)
    kept = torch.load(work / "run" / BEST, weights_only=True, map_location="cpu")
    assert kept["meta"]["iter_num"] == best["iters"]
    assert best_row(rows, upto_iters=rows[1]["iters"])["iters"] <= rows[1]["iters"]


def test_resume_from_the_cache_gives_the_same_curve(work: Path) -> None:
    whole = run_curve(_spec(work, "whole", input_mask_rate=0.15))
    part = _spec(work, "parts", input_mask_rate=0.15)
    first = run_curve({**part, "stop_iters": part["points"][1]["iters"]})  # the screen stops here
    assert len(first) == 2
    with open(work / "parts" / "curve.jsonl", "a") as f:
        f.write('{"epochs": 4, "iters"')  # a kill while a row was written: dropped and scored again
    again = run_curve(part)
    assert [(r["iters"], r["dev"], r["test"]) for r in again] == [(r["iters"], r["dev"], r["test"]) for r in whole]
    assert read_curve(work / "parts") == again


def test_early_stopping_ends_a_run_whose_dev_loss_has_not_improved_for_patience_points(work: Path) -> None:
    rows = [{"iters": i, "dev": d} for i, d in enumerate([3.0, 2.0, 2.5, 2.1, 2.2])]
    assert stalled(rows, 3) and not stalled(rows, 4) and not stalled(rows, 0)
    assert not stalled([*rows, {"iters": 5, "dev": 1.9}], 3)  # a new best resets the count
    spec = _spec(work, "run", patience=1)
    first = run_curve({**spec, "stop_iters": spec["points"][1]["iters"]})
    assert len(first) == 2
    # the second point made worse on dev: with patience 1 the run stops there, its checkpoint untouched
    worse = [first[0], {**first[1], "dev": first[0]["dev"] + 1.0}]
    (work / "run" / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in worse))
    before = (work / "run" / "ckpt.pt").read_bytes()
    assert run_curve(spec) == worse
    assert (work / "run" / "ckpt.pt").read_bytes() == before
    on = run_curve({**spec, "patience": 0})  # without early stopping it trains to the budget
    assert [r["iters"] for r in on] == [p["iters"] for p in spec["points"]]


def test_a_curve_file_broken_before_its_last_line_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "curve.jsonl").write_text('{"iters": 1}\nnot json\n{"iters": 2}\n')
    with pytest.raises(UserError, match="curve.jsonl line 2"):
        read_curve(tmp_path)


# --- the bench ------------------------------------------------------------------------------------------------------

def test_bench_epochs_end_to_end_screens_on_dev_and_reports_on_test(work: Path) -> None:
    out = work / "epochs.json"
    argv = ["--preset=smoke", "--dataset=tiny", "--train_chars=2000", "--epochs=8", "--evals_per_octave=1",
            "--recipes=ar,ar_dropout,ar_mask,diffusion", "--keep=2", "--extra_seeds=7", "--ar_budgets=2",
            f"--work_dir={work}", f"--json={out}"]
    result = epochs_bench.bench_epochs(argv)
    assert json.loads(out.read_text())["benchmark"] == "epochs" and out.with_suffix(".png").is_file()
    sub = result["subsets"][0]
    main = [r for r in sub["runs"] if r["seed"] == 1337]
    ar = [r for r in main if r["side"] == "ar" and "@" not in r["recipe"]]
    assert len(ar) == 3 and sum(r["finished"] for r in ar) == 2  # the screen kept two of three
    short = [r for r in main if "@" in r["recipe"]]  # the kept recipes with their own 2-epoch schedule
    assert sorted(r["recipe"] for r in short) == sorted(f"{r['recipe']}@2" for r in ar if r["finished"])
    assert all(r["finished"] and r["max_iters"] == epochs_to_iters(2, 2000, 4 * 64) for r in short)
    stopped = next(r for r in ar if not r["finished"])
    assert stopped["reached_iters"] == stopped["screen_iters"]
    assert all(r["screen_iters"] is None for r in sub["runs"] if r["side"] == "diffusion" or "@" in r["recipe"])
    screen_dev = {r["recipe"]: best_row(r["curve"], r["screen_iters"])["dev"] for r in ar}
    assert screen_dev[stopped["recipe"]] == max(screen_dev.values())  # the worst on dev was dropped
    for s in ("ar", "diffusion"):
        side = sub["sides"][s]
        assert set(side) >= {"recipe", "test", "best_epochs", "dev", "seeds", "test_over_seeds"}
        assert side["seeds"] == [1337, 7]  # the extra seed ran for each side's best recipe
    last = sub["budget_curve"][-1]
    assert last["diffusion_over_ar"] == pytest.approx(last["diffusion"]["test"] / last["ar"]["test"])
    assert sub["crossover_epochs"] is None or sub["crossover_epochs"] in [r["epochs"] for r in sub["budget_curve"]]
    assert all(row["flops"] > 0 for r in main for row in r["curve"])
    again = epochs_bench.bench_epochs([*argv, "--report_only=true", f"--json={work / 'again.json'}"])
    assert again["subsets"][0]["sides"] == sub["sides"]  # the cache reports the same figures without training
    from test_tables import load_tables

    table = "\n".join(load_tables().epochs([str(out)]))
    assert f"{stopped['recipe']} (1337) | 2 (the screen's stop)" in table and "crossover:" in table
    assert f"{sub['sides']['ar']['test']:.4f}" in table


def test_bench_epochs_judges_each_sides_best_dev_checkpoint(work: Path) -> None:
    argv = ["--preset=smoke", "--dataset=tiny", "--train_chars=2000", "--epochs=4", "--evals_per_octave=1",
            "--recipes=ar,diffusion", "--extra_seeds=", "--ar_budgets=", "--judge=true", f"--work_dir={work}",
            f"--json={work / 'e.json'}", "--knob_values=0,2"]
    judged = epochs_bench.bench_epochs(argv)["subsets"][0]["judge"]
    # the widened grid replaces the preset's prior_weights (0, 0.7, 1.5) for diffusion only; AR keeps its temperatures
    assert [p["value"] for p in judged["diffusion"]["frontier"]["dev"]] == judged["diffusion"]["values"] == [0, 2]
    assert judged["ar"]["values"] == PRESETS["smoke"]["temperature"]
    for s in ("ar", "diffusion"):
        assert judged[s]["checkpoint"].endswith("best_dev.pt") and judged[s]["knob"] in ("temperature", "prior_weight")
        assert {p["value"] for p in judged[s]["frontier"]["test"]} == {p["value"] for p in judged[s]["frontier"]["dev"]}
    ratio = judged["diffusion_over_ar"]
    a, d = judged["ar"]["ppl_at_real_entropy"], judged["diffusion"]["ppl_at_real_entropy"]
    assert ratio == (d / a if a and d else None)


def test_a_new_machine_goes_on_from_the_committed_curves(work: Path, tmp_path_factory) -> None:
    argv = ["--preset=smoke", "--dataset=tiny", "--train_chars=2000", "--epochs=4", "--evals_per_octave=1",
            "--recipes=ar,diffusion", "--extra_seeds=9", "--ar_budgets="]
    first = epochs_bench.bench_epochs([*argv, f"--work_dir={work}", f"--json={work / 'a.json'}"])
    data = json.loads((work / "a.json").read_text())
    ar_run = next(r for r in data["subsets"][0]["runs"] if r["recipe"] == "ar" and r["seed"] == 1337)
    ar_run["curve"] = ar_run["curve"][:1]  # as if the session ended after the first point of this run
    (work / "partial.json").write_text(json.dumps(data))
    fresh = tmp_path_factory.mktemp("fresh")
    shutil.copytree(work / "data" / "tiny", fresh / "data" / "tiny")
    again = epochs_bench.bench_epochs([*argv, f"--work_dir={fresh}", f"--seed_curves={work / 'partial.json'}",
                                       f"--json={fresh / 'b.json'}"])
    same = json.dumps(again["subsets"][0]["sides"], sort_keys=True) == json.dumps(first["subsets"][0]["sides"],
                                                                                   sort_keys=True)
    assert same  # (compared as JSON: a one-seed standard error is nan)
    runs = {r["recipe"]: r for r in again["subsets"][0]["runs"] if r["seed"] == 1337}
    assert {r["seed"] for r in again["subsets"][0]["runs"]} == {1337, 9}  # the extra seed came from the JSON
    assert not (Path(runs["diffusion"]["out_dir"]) / "ckpt.pt").exists()  # finished: nothing trained again
    assert (Path(runs["ar"]["out_dir"]) / "ckpt.pt").exists()  # went on: retrained to the same curve
    assert runs["ar"]["curve"] == next(r for r in first["subsets"][0]["runs"]
                                       if r["recipe"] == "ar" and r["seed"] == 1337)["curve"]


def test_the_trend_is_a_line_in_log_epochs_through_the_last_two_octaves() -> None:
    from nanodlm.bench.epochs_report import trend

    curve = [{"epochs": 2.0 ** k, "test": 3.0 - 0.1 * k} for k in range(8)]  # falls 0.1 an octave
    curve[0]["test"] = 9.0  # outside the last two octaves: not in the fit
    t = trend(curve, target=2.0)
    assert t["points"] == 3 and t["slope_per_octave"] == pytest.approx(-0.1)
    assert t["line_reaches_target_at_epochs"] == pytest.approx(2.0 ** 10)  # 2.3 at 2^7, 0.3 more = 3 octaves
    assert trend(curve, target=2.5)["line_reaches_target_at_epochs"] is None  # already below: nothing to reach
    flat = [{"epochs": 2.0 ** k, "test": 2.4 + 0.01 * k} for k in range(4)]
    assert trend(flat, target=2.0)["line_reaches_target_at_epochs"] is None and trend(flat[:2], 2.0) is None


def test_a_job_the_cache_already_holds_launches_nothing(tmp_path: Path) -> None:
    ran = []
    job = epochs_bench.Job((0, 0, 0), "run", {"stop_iters": 1})
    pool = epochs_bench.Pool(1, ["false"], tmp_path, ran.append, done=lambda j: True)  # `false` would fail the job
    pool.submit(job)
    pool.drain()
    assert ran == [job] and not (tmp_path / "run.log").exists()
    failing = epochs_bench.Pool(1, ["false"], tmp_path, ran.append)
    failing.submit(job)
    with pytest.raises(UserError, match="run run failed"):
        failing.drain()


def _copying_module():
    import importlib.util
    import sys
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "epochs_copying.py"
    spec = importlib.util.spec_from_file_location("epochs_copying", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_copying_measures_verbatim_training_text():
    """benchmarks/epochs_copying.py: the longest verbatim span and the share of n-character windows found in
    the training text, checked against spans planted by hand."""
    copying = _copying_module()
    train = "the quick brown fox jumps over the lazy dog; " * 3
    planted = "zzzz" + "brown fox jumps over the" + "qqqq"  # a 24-character span of the training text
    assert copying.longest_copy(planted, train) == 24
    assert copying.longest_copy("zzzzzzzzzzzzzzzz", train) == 0
    seen = {8: set(copying.windows(train, 8))}
    share = copying.copy_share([planted], seen)[8]
    # windows wholly inside the planted span: 24 - 8 + 1 of the text's 32 - 8 + 1
    assert share == pytest.approx(17 / 25)
    assert copying.copy_share(["abcdefghijklmnop"], seen)[8] == 0.0


def test_only_a_screened_run_is_labelled_as_stopped_by_the_screen() -> None:
    from test_tables import load_tables

    state = load_tables().run_state
    at_quarter = {"finished": False, "reached_iters": 25, "screen_iters": 25}
    assert state(at_quarter) == " (the screen's stop)"
    assert state({**at_quarter, "screen_iters": None}) == " (unfinished)"  # never screened: diffusion, ar_mask@32
    assert state({**at_quarter, "reached_iters": 40}) == " (unfinished)"  # past the screen, not finished
    assert state({**at_quarter, "finished": True}) == ""
