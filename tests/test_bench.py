"""`nanodlm bench`: structure of every benchmark's output on tiny models (no timing assertions)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY

from nanodlm import bench, bench_speed
from nanodlm.bench_quality import NOT_HASHED, PRESETS, _route_overrides, config_hash
from nanodlm.cli import main as cli_main
from nanodlm.config import TrainConfig, build_config, config_to_dict
from nanodlm.errors import UserError
from nanodlm.generate import SamplerOptions
from nanodlm.train import train

MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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


# --- bench quality ----------------------------------------------------------------------------------------------

@needs_mirror
def test_quality_smoke_writes_every_key_and_reuses_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANODLM_DATA_MIRROR", str(MIRROR))
    out, work = tmp_path / "quality.json", tmp_path / "work"
    argv = ["quality", "--preset=smoke", f"--json={out}", f"--work_dir={work}", "--device=cpu", "--progress=false"]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())
    required = {
        "real": ("judge_ppl", "entropy_bits"),
        "ar": ("val_loss", "judge_ppl", "entropy_bits", "chars_per_s"),
        "diffusion": ("nelbo", "nelbo_stderr", "judge_ppl", "entropy_bits", "chars_per_s"),
        "judge": ("val_loss",),
        "ratios": ("nelbo_over_ar", "judge_ppl_over_ar"),
    }
    for section, keys in required.items():
        for key in keys:
            assert _finite(r[section][key]), (section, key, r[section].get(key))
    assert r["diffusion"]["steps"] == PRESETS["smoke"]["steps"]
    assert (r["diffusion"]["sampler"], r["diffusion"]["objective"], r["diffusion"]["pos_emb"]) == (
        SamplerOptions.sampler, bench.BENCH_DEFAULTS["objective"], bench.BENCH_DEFAULTS["pos_emb"])
    p = r["protocol"]
    for key in ("num_samples", "length", "temperature", "seed", "date", "machine"):
        assert key in p
    assert {"platform", "torch", "device", "cpu_count"} <= set(p["machine"])
    # the same number of training tokens for AR and diffusion
    assert p["ar"]["tokens_seen"] == p["diffusion"]["tokens_seen"] > 0
    assert p["ar"]["params"] > 0 and p["judge"]["n_layer"] == 2
    assert not any(p[m]["reused"] for m in ("ar", "diffusion", "judge"))
    assert r["ar"]["num_texts"] == p["num_samples"] == 4

    ckpts = sorted((work / "runs").glob("*/ckpt.pt"))
    assert len(ckpts) == 3
    mtimes = [c.stat().st_mtime_ns for c in ckpts]
    assert bench.main(argv) == 0  # same configs: every model is reused, nothing retrains
    r2 = json.loads(out.read_text())
    assert all(r2["protocol"][m]["reused"] for m in ("ar", "diffusion", "judge"))
    assert [c.stat().st_mtime_ns for c in ckpts] == mtimes
    assert r2["ar"]["val_loss"] == r["ar"]["val_loss"] and r2["diffusion"]["nelbo"] == r["diffusion"]["nelbo"]


def test_run_hash_ignores_location_and_display_but_not_the_model() -> None:
    cfg = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "progress": True})
    assert config_hash(cfg) == config_hash(build_config(TrainConfig, {"n_layer": 2, "out_dir": "b", "progress": False}))
    assert config_hash(cfg) != config_hash(build_config(TrainConfig, {"n_layer": 3, "out_dir": "a"}))


def test_run_hash_of_older_runs_survives_new_keys() -> None:
    """Runs hashed before diffusion_block and mdlm_t_max existed keep their folder (and are reused) while
    those keys sit at their defaults."""
    cfg = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "model_type": "diffusion"})
    late = ("diffusion_block", "mdlm_t_max")
    values = {k: v for k, v in config_to_dict(cfg).items() if k not in NOT_HASHED and k not in late}
    old = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
    assert config_hash(cfg) == old
    block = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "model_type": "diffusion", "diffusion_block": 8})
    clipped = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "model_type": "diffusion", "mdlm_t_max": 0.9})
    assert config_hash(block) != old and config_hash(clipped) != old
    ar = {"n_layer": 2, "out_dir": "a", "model_type": "gpt2"}
    assert config_hash(build_config(TrainConfig, ar)) == config_hash(
        build_config(TrainConfig, {**ar, "objective": "seed", "copy_weight": 0.0}))  # keys a gpt2 run never reads


def test_quality_overrides_route_to_the_right_model() -> None:
    routed = _route_overrides({"n_layer": "2", "ar.n_embd": "64", "judge.max_iters": "10"})
    assert routed == {"diffusion": {"n_layer": "2"}, "ar": {"n_embd": "64"}, "judge": {"max_iters": "10"}}
    with pytest.raises(UserError, match="num_sample"):
        _route_overrides({"num_sample": "3"})
    with pytest.raises(UserError, match="fixed by the protocol"):
        _route_overrides({"ar.out_dir": "x"})


# --- bench train ------------------------------------------------------------------------------------------------

SMALL = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=2", "--iters=3", "--warmup=1"]


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

def test_sample_reports_every_mode(tiny_runs: dict[str, str]) -> None:
    r = bench_speed.bench_sample([f"--out_dir_ar={tiny_runs['ar']}", f"--out_dir_diffusion={tiny_runs['diffusion']}",
                            "--num_samples=2", "--length=12", "--steps=2,4", "--device=cpu"])
    modes = {(row["model"], row["mode"], row["batch"]) for row in r["rows"]}
    assert len(r["rows"]) == len(modes) == 2 * 2 + 2 * 2  # (cache, no cache) + 2 step counts, at batch 1 and 2
    assert ("gpt2", "no-cache", 2) in modes and ("diffusion", f"{SamplerOptions.sampler}, 4 steps", 1) in modes
    for row in r["rows"]:
        assert row["tokens"] == row["batch"] * 12 and row["chars_per_s"] > 0


def test_sample_times_block_diffusion_with_and_without_its_cache(tiny_runs: dict[str, str]) -> None:
    r = bench_speed.bench_sample([f"--out_dir_diffusion={tiny_runs['block']}", "--num_samples=2", "--length=12",
                                  "--steps=3", "--device=cpu"])
    modes = sorted(row["mode"] for row in r["rows"] if row["batch"] == 2)
    assert modes == sorted([f"{SamplerOptions.sampler}, 3 steps" + m for m in ("", ", KV cache")])


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
