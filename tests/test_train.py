"""Training end to end on a tiny CPU model: outputs, learning, bitwise resume, divergence, errors, Ctrl-C."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch

import nanodlm.training.train as train_mod
from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.core.plotting import read_metrics
from nanodlm.data.dataset import prepare
from nanodlm.runs.checkpoint import load_checkpoint
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import TrainingDiverged, load_train_config, train

try:
    import matplotlib  # noqa: F401

    HAS_MATPLOTLIB = True
except ImportError:
    HAS_MATPLOTLIB = False

DIAGNOSTIC_KEYS = ("masked_ce@15", "masked_ce@100", "p_mask@masked", "detect_rate", "false_alarm", "copy_acc")


@pytest.fixture
def make_cfg(tiny_values):
    def make(out_dir: Path, **overrides) -> TrainConfig:
        return build_config(TrainConfig, tiny_values(out_dir, **overrides))

    return make


def rows(out_dir: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(out_dir / "metrics.jsonl") if r["kind"] == kind]


def strict_json(text: str):
    def reject(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


# --- outputs and learning ---------------------------------------------------------------------------


def test_train_writes_outputs_and_loss_decreases(tmp_path: Path, make_cfg) -> None:
    out = tmp_path / "run"
    summary = train(make_cfg(out, max_iters=30, eval_interval=10, learning_rate=3e-3, plot=HAS_MATPLOTLIB))
    assert summary["iter_num"] == 30 and summary["interrupted"] is False
    for name in ("ckpt.pt", "best.pt", "metrics.jsonl", "ckpt.json", "best.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").is_file() == HAS_MATPLOTLIB
    evals, steps = rows(out, "eval"), rows(out, "step")
    assert [r["iter"] for r in evals] == [0, 10, 20, 30]
    assert [r["iter"] for r in steps] == list(range(30))
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in evals)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3
    assert evals[-1]["train_loss"] < evals[0]["train_loss"] - 0.3
    first, last = [r["loss"] for r in steps[:5]], [r["loss"] for r in steps[-5:]]
    assert sum(last) < sum(first)
    ckpt = load_checkpoint(out / "ckpt.pt")
    meta = ckpt["meta"]
    assert meta["iter_num"] == 30 and meta["config"]["max_iters"] == 30
    assert meta["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in evals))
    assert meta["model_args"]["model_type"] == "gpt2" and meta["model_args"]["mask_token_id"] is None
    assert strict_json((out / "ckpt.json").read_text())["iter_num"] == 30
    assert load_checkpoint(out / "best.pt")["meta"]["best_val_loss"] == meta["best_val_loss"]


def test_seed_fixes_the_run(tmp_path: Path, make_cfg) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train(make_cfg(tmp_path / name, max_iters=2, seed=seed))
    a, b, c = (load_checkpoint(tmp_path / name / "ckpt.pt")["model"] for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
def test_plot_written(tmp_path: Path, make_cfg) -> None:
    train(make_cfg(tmp_path, max_iters=2, eval_interval=1, plot=True))
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_runs(tmp_path: Path, tiny_argv) -> None:
    assert main(["train", *tiny_argv(tmp_path, max_iters=2)]) == 0
    assert load_checkpoint(tmp_path / "ckpt.pt")["meta"]["iter_num"] == 2


@pytest.mark.parametrize("objective", ["seed", "mdlm", "repair"])
def test_diffusion_objectives_train(tmp_path: Path, make_cfg, objective: str) -> None:
    summary = train(make_cfg(tmp_path, model_type="diffusion", objective=objective, max_iters=3, eval_interval=3,
                             gradient_accumulation_steps=2))
    assert summary["iter_num"] == 3 and math.isfinite(summary["last_loss"])
    evals = rows(tmp_path, "eval")
    assert [r["iter"] for r in evals] == [0, 3]
    for row in evals:
        for key in DIAGNOSTIC_KEYS:
            assert key in row, key
        assert math.isfinite(row["masked_ce@15"]) and 0.0 <= row["copy_acc"] <= 1.0
    meta = load_checkpoint(tmp_path / "ckpt.pt")["meta"]
    args = meta["model_args"]
    assert args["model_type"] == "diffusion" and args["pos_emb"] == "rope"
    assert args["mask_token_id"] == meta["dataset_meta"]["vocab_size"] == args["vocab_size"] - 1


def test_block_diffusion_trains_resumes_samples_and_evaluates(tmp_path: Path, make_cfg, tiny_argv, capsys) -> None:
    kw = dict(model_type="diffusion", objective="repair", diffusion_block=4, eval_interval=4)
    a, b = tmp_path / "a", tmp_path / "b"
    train(make_cfg(a, max_iters=6, **kw))
    train(make_cfg(b, max_iters=3, **kw))
    assert train(load_train_config([*tiny_argv(b, **kw), "--init_from=resume", "--max_iters=6"]))["iter_num"] == 6
    ca, cb = load_checkpoint(a / "ckpt.pt"), load_checkpoint(b / "ckpt.pt")
    assert cb["meta"]["model_args"]["diffusion_block"] == 4
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    capsys.readouterr()
    assert main(["sample", f"--out_dir={a}", "--ckpt=last", "--device=cpu", "--num_samples=2", "--length=14",
                 "--steps=4", "--start=ab", "--verbose"]) == 0
    out, err = capsys.readouterr()
    samples = out.split("---------------\n")[:2]
    assert all(s.startswith("ab") and len(s) == 14 + 1 for s in samples)  # 14 characters and print's newline
    assert "steps used: 4" in err  # 4 open blocks of 4 (the prefix shares the first), one step each
    assert main(["eval", f"--out_dir={a}", "--ckpt=last", "--device=cpu", "--num_batches=1"]) == 0
    assert "nelbo" in capsys.readouterr().out


# --- resume -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type, objective", [("gpt2", "seed"), ("diffusion", "seed"), ("diffusion", "mdlm")])
def test_resume_is_bitwise(tmp_path: Path, make_cfg, tiny_argv, model_type: str, objective: str) -> None:
    kw = dict(model_type=model_type, objective=objective, eval_interval=4, dropout=0.1)
    a, b = tmp_path / "a", tmp_path / "b"
    train(make_cfg(a, max_iters=8, **kw))
    train(make_cfg(b, max_iters=4, **kw))
    assert load_checkpoint(b / "ckpt.pt")["meta"]["iter_num"] == 4
    cfg = load_train_config([*tiny_argv(b, **kw), "--init_from=resume", "--max_iters=8"])
    assert cfg.init_from == "resume" and cfg.max_iters == 8
    assert train(cfg)["iter_num"] == 8
    ca, cb = load_checkpoint(a / "ckpt.pt"), load_checkpoint(b / "ckpt.pt")
    assert cb["meta"]["iter_num"] == 8
    assert ca["model"].keys() == cb["model"].keys()
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    for pid, state in ca["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], cb["optimizer"]["state"][pid]["exp_avg_sq"])
    # the resumed checkpoint keeps the architecture (nanoGPT dropped model_type and mask_token_id)
    assert cb["meta"]["model_args"] == ca["meta"]["model_args"]
    assert cb["meta"]["model_args"]["model_type"] == model_type
    vocab = ca["meta"]["dataset_meta"]["vocab_size"]
    assert cb["meta"]["model_args"]["mask_token_id"] == (vocab if model_type == "diffusion" else None)
    # the step losses logged after the resume equal the uninterrupted ones
    assert [r["loss"] for r in rows(a, "step")] == [r["loss"] for r in rows(b, "step")]


def test_resume_restores_config_from_checkpoint(tmp_path: Path, make_cfg) -> None:
    train(make_cfg(tmp_path, model_type="diffusion", objective="mdlm", n_layer=1, max_iters=3, eval_interval=3))
    cfg = load_train_config(["--init_from=resume", f"--out_dir={tmp_path}"])
    assert (cfg.model_type, cfg.objective, cfg.n_layer, cfg.n_embd, cfg.block_size) == ("diffusion", "mdlm", 1, 32, 16)
    assert (cfg.dataset, cfg.device, cfg.max_iters, cfg.progress) == ("tiny", "cpu", 3, False)
    assert cfg.init_from == "resume"
    assert main(["train", "--init_from=resume", f"--out_dir={tmp_path}"]) == 0  # already at max_iters
    assert load_checkpoint(tmp_path / "ckpt.pt")["meta"]["iter_num"] == 3
    assert main(["train", "--init_from=resume", f"--out_dir={tmp_path}", "--max_iters=5"]) == 0
    meta = load_checkpoint(tmp_path / "ckpt.pt")["meta"]
    assert meta["iter_num"] == 5 and meta["config"]["objective"] == "mdlm"
    assert meta["model_args"]["model_type"] == "diffusion" and meta["model_args"]["n_layer"] == 1
    assert [r["iter"] for r in rows(tmp_path, "step")] == [0, 1, 2, 3, 4]  # resume appends to the log


def test_resume_under_another_loss_restarts_the_best_val_loss(tmp_path: Path, make_cfg, capsys) -> None:
    """An mdlm run resumed with objective=repair: the old best (an mdlm loss) is not compared with repair losses."""
    train(make_cfg(tmp_path, model_type="diffusion", objective="mdlm", max_iters=3, eval_interval=3))
    old_best = load_checkpoint(tmp_path / "ckpt.pt")["meta"]["best_val_loss"]
    capsys.readouterr()
    assert main(["train", "--init_from=resume", f"--out_dir={tmp_path}", "--max_iters=6", "--objective=repair"]) == 0
    assert "--objective=repair (was mdlm)" in capsys.readouterr().err
    evals = rows(tmp_path, "eval")
    assert evals[-1]["iter"] == 6
    best = load_checkpoint(tmp_path / "ckpt.pt")["meta"]["best_val_loss"]
    assert best == evals[-1]["val_loss"] != min(old_best, evals[-1]["val_loss"])  # the repair loss alone
    assert main(["train", "--init_from=resume", f"--out_dir={tmp_path}", "--max_iters=9"]) == 0  # the same loss
    assert "restarts" not in capsys.readouterr().err


def test_draft_len_must_leave_room_for_text(tmp_path: Path, make_cfg) -> None:
    with pytest.raises(UserError, match="draft_len=16 must be below block_size=16"):
        make_cfg(tmp_path, objective="tidar", draft_len=16)


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--init_from=resume", f"--out_dir={tmp_path / 'none'}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint") and "Traceback" not in err


# --- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["train", "eval"])
def test_nan_loss_stops_without_saving(tmp_path: Path, make_cfg, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    real = train_mod.make_loss_fn
    calls = {"train": 0, "eval": 0}
    saved: dict[str, bytes] = {}

    def make_nan_loss_fn(cfg, *ids):
        fn = real(cfg, *ids)

        def loss_fn(model, x, y, gen):
            loss = fn(model, x, y, gen)
            phase = "train" if model.training else "eval"
            calls[phase] += 1
            # train: NaN from iteration 5 on; eval: 4 calls per eval (2 iters x 2 splits), NaN from the 3rd eval
            nan_from = 6 if where == "train" else 9
            if phase == where and calls[phase] == nan_from:
                saved["ckpt.pt"] = (tmp_path / "ckpt.pt").read_bytes()  # the last good checkpoint
            return loss * float("nan") if phase == where and calls[phase] >= nan_from else loss

        return loss_fn

    monkeypatch.setattr(train_mod, "make_loss_fn", make_nan_loss_fn)
    with pytest.raises(TrainingDiverged, match="nan") as e:
        train(make_cfg(tmp_path, max_iters=100, eval_interval=3))
    assert isinstance(e.value, UserError)
    assert f"iter {5 if where == 'train' else 6}" in str(e.value)
    assert (tmp_path / "ckpt.pt").read_bytes() == saved["ckpt.pt"]  # not overwritten
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["meta"]["iter_num"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert strict_json((tmp_path / "ckpt.json").read_text())["iter_num"] == 3


def test_corpus_shorter_than_block(tmp_path: Path, make_cfg) -> None:
    src = tmp_path / "short.txt"
    src.write_text("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings")
    prepare("text", input_path=str(src), data_dir=str(tmp_path), out_name="short")  # val: 10 chars
    with pytest.raises(UserError, match="block_size"):
        train(make_cfg(tmp_path / "out", dataset="short", data_dir=str(tmp_path), max_iters=1))


def test_missing_dataset(tmp_path: Path, make_cfg, tiny_argv, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserError, match="nanodlm prepare"):
        train(make_cfg(tmp_path, dataset="nothing_here", max_iters=1))
    assert main(["train", *tiny_argv(tmp_path, dataset="nothing_here")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nanodlm prepare" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable(tmp_path: Path, make_cfg) -> None:
    with pytest.raises(UserError, match="CUDA is not available"):
        train(make_cfg(tmp_path, device="cuda", max_iters=1))


# --- Ctrl-C -----------------------------------------------------------------------------------------


@pytest.mark.slow  # SIGINT to a training subprocess
def test_ctrl_c_saves_and_resumes(tmp_path: Path, signal_training) -> None:
    out = tmp_path / "run"
    returncode, stdout, stderr = signal_training(out, signal.SIGINT)
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted at iter" in stdout
    iter_num = load_checkpoint(out / "ckpt.pt")["meta"]["iter_num"]
    assert iter_num >= 3
    assert len(rows(out, "step")) == iter_num  # the saved iteration is the one after the last logged step
    summary = train(load_train_config(["--init_from=resume", f"--out_dir={out}", f"--max_iters={iter_num + 2}"]))
    assert summary["iter_num"] == iter_num + 2 and not summary["interrupted"]
    assert load_checkpoint(out / "ckpt.pt")["meta"]["iter_num"] == iter_num + 2
