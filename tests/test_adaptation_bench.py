"""benchmarks/adaptation.py at smoke size: stages, JSON rows, reuse, block diffusion, the judge."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "adaptation.py"


@pytest.fixture(scope="module")
def adaptation():
    spec = importlib.util.spec_from_file_location("adaptation_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("block", [0, 4])
def test_adaptation_curve_smoke(tmp_path: Path, tiny_values, adaptation, block: int) -> None:
    ar = tmp_path / "ar"
    train(build_config(TrainConfig, tiny_values(ar, model_type="gpt2", max_iters=3, eval_interval=3)))
    scratch = tmp_path / "scratch"
    train(build_config(TrainConfig, tiny_values(scratch, model_type="diffusion", max_iters=2, eval_interval=2)))
    out = tmp_path / "curve.json"
    argv = [f"--ar_dir={ar}", f"--work_dir={tmp_path / 'work'}", "--evals=2,4", "--attn_anneal_iters=2",
            "--eval_windows=4", "--eval_batch_size=4", f"--judge_dir={ar}", "--num_samples=2", "--length=12",
            "--steps=4", f"--json={out}", "--progress=false", f"--diffusion_block={block}", "--eval_iters=1",
            f"--compare={scratch}", "--ar_iter=3"]
    assert adaptation.main(argv) == 0
    r = json.loads(out.read_text())
    assert [row["iter"] for row in r["rows"]] == [0, 2, 4]
    for row in r["rows"]:
        for split in ("dev", "test"):
            assert math.isfinite(row[split]["nelbo"]) and row[split]["nelbo"] > 0
    assert math.isfinite(r["ar"]["test"]["loss"]) and r["train_config"]["diffusion_block"] == block
    assert r["rows"][-1]["judge"]["judge_ppl"] > 1
    assert r["compare"][str(scratch)]["iter"] == 2 and math.isfinite(r["compare"][str(scratch)]["test"]["nelbo"])
    assert r["rows"][1]["test"]["nelbo"] != r["rows"][0]["test"]["nelbo"]  # training changed the model
    run_dir = tmp_path / "work" / ("adapt-4" if not block else f"adapt-block{block}-4")
    ckpt = json.loads((run_dir / "ckpt.json").read_text())
    assert ckpt["iter_num"] == 4 and ckpt["model_args"]["shift"] is True
    assert ckpt["model_args"]["diffusion_block"] == block
    with pytest.raises(SystemExit, match="not 5000"):
        adaptation.main([*argv, "--ar_iter=5000"])
    with pytest.raises(SystemExit, match="other settings"):
        adaptation.main([*argv, "--learning_rate=5e-4"])
    # a second run reuses the finished stages and measures the same numbers
    assert adaptation.main(argv) == 0
    again = json.loads(out.read_text())
    assert [row["test"]["nelbo"] for row in again["rows"]] == [row["test"]["nelbo"] for row in r["rows"]]
