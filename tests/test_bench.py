"""`nanodlm bench`: structure of every benchmark's output on tiny models (no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import MIRROR_DIR, TINY

from nanodlm import bench
from nanodlm.bench import speed as bench_speed
from nanodlm.cli import main as cli_main
from nanodlm.sampling.generate import SamplerOptions
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import train

MIRROR = MIRROR_DIR
needs_mirror = pytest.mark.skipif(not (MIRROR / "tinyshakespeare.txt").is_file(),
                                  reason=f"no tinyshakespeare.txt in {MIRROR}")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def tiny_runs(data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """4-iteration runs on the tiny dataset: an AR model, a diffusion model, a block diffusion model, an AR judge."""
    root = tmp_path_factory.mktemp("runs")
    rng = torch.get_rng_state()  # train() seeds the global RNG; a module fixture is outside conftest's restore
    runs = {}
    for name, extra in (("ar", {"model_type": "gpt2"}), ("diffusion", {"model_type": "diffusion", "objective": "mdlm"}),
                        ("block", {"model_type": "diffusion", "diffusion_block": 4}),
                        ("judge", {"model_type": "gpt2", "seed": 7})):
        runs[name] = str(root / name)
        train(build_config(TrainConfig, {**TINY, "data_dir": data_dir, "out_dir": runs[name], "max_iters": 4,
                                         "eval_interval": 4, **extra}))
    torch.set_rng_state(rng)
    return runs


# --- bench train ------------------------------------------------------------------------------------------------

SMALL = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=2", "--iters=3", "--warmup=1"]


@pytest.mark.slow  # trains two models in subprocesses
def test_train_pairs_both_models_on_random_tokens(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    assert bench.main(["train", *SMALL, "--data_dir=" + str(tmp_path / "none"), f"--json={out}"]) == 0
    r = json.loads(out.read_text())
    assert r["data"].startswith("random tokens")
    for model in ("gpt2", "diffusion"):
        for key in ("ms_per_iter_median", "ms_per_iter_mean", "tokens_per_s"):
            assert _finite(r[model][key]) and r[model][key] > 0
        assert r[model]["peak_mem_mb"] is None or r[model]["peak_mem_mb"] >= 0
    assert r["gpt2"]["vocab_size"] + 1 == r["diffusion"]["vocab_size"] == 66
    assert (r["gpt2"]["pos_emb"], r["diffusion"]["pos_emb"]) == ("learned", "rope")  # each resolves "auto"
    assert _finite(r["ratio"]["ms_median"]) and _finite(r["ratio"]["ms_mean"])
    assert r["memory_kind"]  # says how memory was measured


def test_train_uses_prepared_data_and_one_pos_emb(data_dir: str) -> None:
    r = bench_speed.bench_train([*SMALL, f"--data_dir={data_dir}", "--dataset=tiny", "--pos_emb=rope", "--memory=false",
                           "--objective=mdlm"])
    assert "tiny" in r["data"] and r["memory_kind"] == "none"
    assert r["gpt2"]["pos_emb"] == r["diffusion"]["pos_emb"] == "rope"
    assert r["config"]["objective"] == "mdlm" and r["gpt2"]["peak_mem_mb"] is None


# --- bench sample / steps ---------------------------------------------------------------------------------------

@pytest.mark.slow  # the 4-model tiny_runs fixture
def test_sample_reports_every_mode(tiny_runs: dict[str, str]) -> None:
    r = bench_speed.bench_sample([f"--out_dir_ar={tiny_runs['ar']}", f"--out_dir_diffusion={tiny_runs['diffusion']}",
                            "--num_samples=2", "--length=12", "--steps=2,4", "--device=cpu"])
    modes = {(row["model"], row["mode"], row["batch"]) for row in r["rows"]}
    assert len(r["rows"]) == len(modes) == 2 * 2 + 2 * 2  # (cache, no cache) + 2 step counts, at batch 1 and 2
    assert ("gpt2", "no-cache", 2) in modes and ("diffusion", f"{SamplerOptions.sampler}, 4 steps", 1) in modes
    for row in r["rows"]:
        assert row["tokens"] == row["batch"] * 12 and row["chars_per_s"] > 0


@pytest.mark.slow  # the 4-model tiny_runs fixture
def test_sample_times_block_diffusion_with_and_without_its_cache(tiny_runs: dict[str, str]) -> None:
    r = bench_speed.bench_sample([f"--out_dir_diffusion={tiny_runs['block']}", "--num_samples=2", "--length=12",
                                  "--steps=3", "--device=cpu"])
    modes = sorted(row["mode"] for row in r["rows"] if row["batch"] == 2)
    assert modes == sorted([f"{SamplerOptions.sampler}, 3 steps" + m for m in ("", ", KV cache")])


@pytest.mark.slow  # the 4-model tiny_runs fixture
def test_steps_writes_json_and_png(tiny_runs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "steps.json"
    argv = ["steps", f"--out_dir={tiny_runs['diffusion']}", f"--judge={tiny_runs['judge']}",
            f"--ar_out_dir={tiny_runs['ar']}", "--steps=1,4", "--num_samples=2", "--length=12", "--device=cpu",
            "--json", str(out)]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())
    assert [row["steps"] for row in r["rows"]] == [1, 4]
    for row in (*r["rows"], r["ar"], r["real"]):
        assert _finite(row["judge_ppl"]) and _finite(row["entropy_bits"])
    assert _finite(r["ar"]["chars_per_s"]) and r["sampler"] == SamplerOptions.sampler
    png = out.with_suffix(".png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


# --- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.slow  # the 4-model tiny_runs fixture
def test_bad_input_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tiny_runs: dict[str, str]) -> None:
    assert cli_main(["bench", "nope"]) == 1
    assert "unknown bench subcommand 'nope'" in capsys.readouterr().err
    assert cli_main(["bench", "sample", f"--out_dir_ar={tiny_runs['ar']}", "--colour=red"]) == 1
    assert "unknown key 'colour'" in capsys.readouterr().err
    assert cli_main(["bench", "steps", f"--out_dir={tiny_runs['ar']}", f"--judge={tiny_runs['judge']}"]) == 1
    assert "needs a diffusion run" in capsys.readouterr().err
    assert cli_main(["bench", "quality", "--preset=huge"]) == 1
    assert "--preset must be one of" in capsys.readouterr().err
    assert cli_main(["bench", "train", "--steps=3"]) == 1  # not a bench key, so a TrainConfig key: unknown
    assert "unknown config key 'steps'" in capsys.readouterr().err
    assert bench.main(["quality", "--help"]) == 0 and "--preset" in capsys.readouterr().out


def test_mean_se_is_the_mean_and_its_standard_error() -> None:
    from nanodlm.bench.common import mean_se

    two = mean_se([2.0, 3.0])  # sample s.d. sqrt(0.5), over sqrt(2): 0.5
    assert two["mean"] == pytest.approx(2.5) and two["se"] == pytest.approx(0.5)
    assert mean_se([1.0, 1.0, 1.0])["se"] == 0.0
    assert math.isnan(mean_se([4.0])["se"]) and mean_se([4.0])["mean"] == 4.0
