"""`nanodlm bench parallel` at smoke size: every JSON key, the PNG, and its one-line errors (no timing asserts)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nanodlm import bench
from nanodlm.cli import main as cli_main
from nanodlm.core.errors import UserError
from nanodlm.sample import list_sample_presets, load_sample_args


@pytest.fixture(scope="module")
def block_run(tmp_path_factory: pytest.TempPathFactory, data_dir: str) -> str:
    from nanodlm.training.config import TrainConfig, build_config
    from nanodlm.training.train import train

    rng = torch.get_rng_state()
    out_dir = str(tmp_path_factory.mktemp("parallel") / "block")
    train(build_config(TrainConfig, dict(
        out_dir=out_dir, data_dir=data_dir, dataset="tiny", device="cpu", dtype="float32", model_type="diffusion",
        diffusion_block=4, n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=2, eval_iters=1,
        eval_interval=1000, warmup_iters=0, progress=False, plot=False)))
    torch.set_rng_state(rng)
    return out_dir


def test_parallel_bench_writes_every_key_and_the_png(tiny_runs: dict[str, str], block_run: str, tmp_path: Path) -> None:
    out = tmp_path / "parallel.json"
    argv = ["parallel", f"--runs={tiny_runs['diffusion']},{block_run}", f"--judge={tiny_runs['gpt2']}",
            f"--ar_out_dir={tiny_runs['gpt2']}", "--taus=0,0.5", "--steps=8", "--samplers=confidence",
            "--semi_ar_blocks=0,4", "--approx_caches=none,dual", "--seeds=1,2", "--num_samples=2", "--length=12",
            "--batch1_reps=1", "--device=cpu", f"--json={out}"]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())
    # bidirectional: whole canvas, semi-AR 4 without and with the dual cache; block model: its own blocks
    assert [(c["semi_ar_block"], c["approx_cache"]) for c in r["curves"]] == [(0, "none"), (4, "none"), (4, "dual"),
                                                                              (0, "none")]
    for c in r["curves"]:
        assert [p["tau"] for p in c["points"]] == [0.0, 0.5]
        for p in c["points"]:
            for key in ("judge_ppl", "judge_ppl_se", "entropy_bits", "distinct_4", "passes_per_256",
                        "chars_per_s_b1", "chars_per_s_bN", "speedup_b1", "speedup_bN"):
                assert isinstance(p[key], float) and math.isfinite(p[key]), (c["name"], key, p[key])
            assert [s["seed"] for s in p["per_seed"]] == [1, 2]
            assert 1 <= p["passes_per_256"] <= 8 * 256 / 12 * (1 + 1e-6)  # at most the step budget per 12 chars
    for key in ("judge_ppl", "entropy_bits", "chars_per_s_b1", "chars_per_s_bN"):
        assert math.isfinite(r["ar"][key])
    assert r["ar"]["passes_per_256"] == 256 and r["real"]["split"] == "dev"
    assert r["options"]["sampler"] == "remask" and r["args"]["taus"] == "0,0.5"  # the swept keys live in args
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_the_ar_rows_passes_are_counted_from_its_generations(tiny_runs: dict[str, str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """AR's passes per 256 characters come from what its generations report (they used to be written as 256)."""
    real = bench.parallel.generate

    def two_calls_per_token(model, *args, **kwargs):  # an AR generator that made two model calls a token
        out = real(model, *args, **kwargs)
        if model.config.model_type == "gpt2":
            out.info["passes_per_sample"] = [2 * p for p in out.info["passes_per_sample"]]
        return out

    monkeypatch.setattr(bench.parallel, "generate", two_calls_per_token)
    r = bench.parallel.bench_parallel([f"--runs={tiny_runs['diffusion']}", f"--judge={tiny_runs['gpt2']}",
                                       f"--ar_out_dir={tiny_runs['gpt2']}", "--taus=0", "--steps=4", "--seeds=1",
                                       "--num_samples=1", "--length=12", "--batch1_reps=1", "--device=cpu",
                                       f"--json={tmp_path / 'p.json'}"])
    assert r["ar"]["passes_per_256"] == 512


def test_report_measures_only_the_points_chosen_on_dev_and_refuses_a_test_choice(
        tiny_runs: dict[str, str], block_run: str, tmp_path: Path) -> None:
    dev, test = tmp_path / "dev.json", tmp_path / "test.json"
    common = [f"--runs={tiny_runs['diffusion']},{block_run}", f"--judge={tiny_runs['gpt2']}",
              f"--ar_out_dir={tiny_runs['gpt2']}", "--steps=8", "--samplers=confidence", "--num_samples=2",
              "--length=12", "--batch1_reps=1", "--device=cpu"]
    assert bench.main(["parallel", *common, "--taus=0,0.5,0.9", "--schedules=cosine,threshold", "--seeds=1",
                       f"--json={dev}"]) == 0
    d = json.loads(dev.read_text())
    assert [len(c["points"]) for c in d["curves"]] == [3, 2, 3, 2]  # threshold needs tau > 0
    assert bench.main(["parallel", *common, "--seeds=5,6,7", "--split=test", f"--choose_from={dev}",
                       f"--json={test}"]) == 0
    t = json.loads(test.read_text())
    assert len(t["chosen_on_dev"]) == 4 and all(len(c["points"]) == 1 for c in t["curves"])
    for pick, curve in zip(t["chosen_on_dev"], t["curves"]):
        assert curve["points"][0]["tau"] == pick["tau"] and curve["schedule"] == pick["schedule"]
        dev_curve = next(c for c in d["curves"] if c["name"] == curve["name"])
        assert pick["tau"] in [p["tau"] for p in dev_curve["points"]]
    assert all(p["split"] == "test" for c in t["curves"] for p in c["points"])  # each point says where it was measured
    with pytest.raises(UserError, match="chooses on dev only"):
        bench.parallel.choose(t, [9])
    with pytest.raises(UserError, match="chooses on dev only"):  # an older file: the run's --split decides
        bench.parallel.choose({**t, "curves": [{**c, "points": [{k: v for k, v in p.items() if k != "split"}
                                                                for p in c["points"]]} for c in t["curves"]]}, [9])
    with pytest.raises(UserError, match="chose on dev"):
        bench.parallel.choose(d, [1, 9])


def test_a_tidar_run_is_a_speculative_curve_per_draft_length(tiny_runs: dict[str, str], tidar_run: str,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev, test = tmp_path / "dev.json", tmp_path / "test.json"
    common = [f"--runs={tidar_run}", f"--judge={tiny_runs['gpt2']}", f"--ar_out_dir={tiny_runs['gpt2']}",
              "--draft_lens=2,0", "--num_samples=2", "--length=12", "--batch1_reps=1", "--device=cpu"]
    assert bench.main(["parallel", *common, "--taus=0.5,0.9", "--seeds=1", f"--json={dev}"]) == 0
    d = json.loads(dev.read_text())
    assert [c["name"].rsplit(", ", 1)[1] for c in d["curves"]] == ["speculative k=2", "speculative k=4"]
    for c in d["curves"]:
        assert c["sampler"] == "speculative" and [p["tau"] for p in c["points"]] == [0.0]  # no threshold to sweep
        p = c["points"][0]
        assert 256 / 12 <= p["passes_per_256"] <= 256 and math.isfinite(p["speedup_b1"])  # 1..12 passes per text
    assert bench.main(["parallel", *common, "--seeds=5,6,7", "--split=test", f"--choose_from={dev}",
                       f"--json={test}"]) == 0
    t = json.loads(test.read_text())
    assert [p["draft_len"] for p in t["chosen_on_dev"]] == [2, None] and len(t["curves"]) == 2
    # a dev file of other runs fails at once, before any model loads (it used to end in "no rows to average")
    monkeypatch.setattr(bench.parallel, "load_model", lambda *a: pytest.fail("a model loaded"))
    other = [f"--runs={tiny_runs['diffusion']}", *common[1:]]
    with pytest.raises(UserError, match="has no curves for .*give the dev result of the same --runs"):
        bench.parallel.bench_parallel([*other, "--seeds=5", "--split=test", f"--choose_from={dev}"])


def test_parallel_bench_errors_are_one_line(tiny_runs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "parallel", f"--runs={tiny_runs['diffusion']}"]) == 1
    assert "bench parallel needs" in capsys.readouterr().err
    argv = ["bench", "parallel", f"--runs={tiny_runs['gpt2']}", f"--judge={tiny_runs['gpt2']}",
            f"--ar_out_dir={tiny_runs['gpt2']}", "--device=cpu", "--num_samples=1", "--length=8", "--seeds=1"]
    assert cli_main(argv) == 1
    assert "--runs takes diffusion runs or TiDAR runs" in capsys.readouterr().err
    assert cli_main([*argv[:4], "--taus=0,x"]) == 1
    assert "--taus must be a comma-separated list of float" in capsys.readouterr().err


# --- sampling presets (configs/sample/) -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_sample_presets())
def test_every_sampling_preset_builds_valid_options(name: str) -> None:
    cfg, options, _ = load_sample_args([name, "--out_dir=x"])
    assert cfg.out_dir == "x" and options.steps >= 1


def test_fast_preset_is_parallel_decoding_and_flags_override_it() -> None:
    _, options, _ = load_sample_args(["fast", "--out_dir=x", "--steps=32"])
    assert options.parallel_threshold > 0 and options.steps == 32


def test_sample_with_the_fast_preset(block_run: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sample", "fast", f"--out_dir={block_run}", "--ckpt=last", "--num_samples=2", "--length=8",
            "--device=cpu", "--verbose=true"]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("---------------") == 2 and "forward passes" in captured.err
    assert cli_main(["sample", "nonesuch", f"--out_dir={block_run}"]) == 1
    assert "config file 'nonesuch' not found" in capsys.readouterr().err
