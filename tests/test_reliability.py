"""Issue 10: nothing lost, nothing mixed, every bad input a one-line error (training, data, checkpoints, CLI)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nanodlm.training.train as train_mod
from nanodlm.bench.runs import config_hash
from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.core.plotting import read_metrics
from nanodlm.data import datadir
from nanodlm.data.dataset import load_meta, open_split, prepare
from nanodlm.data.tokenizers import load_tokenizer
from nanodlm.runs.checkpoint import load_checkpoint, save_checkpoint
from nanodlm.runs.rundir import open_run_dir, sync_sidecars
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import TrainingDiverged, load_train_config, train


@pytest.fixture
def make_cfg(tiny_values):
    def make(out_dir: Path, **overrides) -> TrainConfig:
        return build_config(TrainConfig, tiny_values(out_dir, **overrides))

    return make


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- prepare: a dataset changes all at once ------------------------------------------------------------------


def test_prepare_replaces_a_dataset_whole(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("abc " * 200)
    b.write_text("xyz! " * 300)
    prepare("text", input_path=str(a), data_dir=str(tmp_path / "d"), out_name="set")
    meta = prepare("text", input_path=str(b), data_dir=str(tmp_path / "d"), out_name="set")
    tok = load_tokenizer(load_meta(str(tmp_path / "d"), "set"))
    assert meta["vocab_size"] == 5 and tok.decode(open_split(str(tmp_path / "d"), "set", "train"))[:5] == "xyz! "
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["set"]  # no staging folder left


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_prepare_failing_midway_keeps_the_old_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      exchange: bool) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello world " * 100)
    prepare("text", input_path=str(src), data_dir=str(tmp_path / "d"), out_name="set")
    before = snapshot(tmp_path / "d" / "set")
    src.write_text("a different text entirely " * 100)
    if not exchange:
        monkeypatch.setattr(datadir, "_exchange", lambda a, b: False)
    real_open, calls = open, {"n": 0}

    def disk_full_on_second_file(path, mode="r", *args, **kwargs):
        if "w" in mode and ".set.new-" in str(path):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", disk_full_on_second_file)
    with pytest.raises(UserError, match="No space left on device.*old dataset is unchanged"):
        prepare("text", input_path=str(src), data_dir=str(tmp_path / "d"), out_name="set")
    monkeypatch.undo()
    assert snapshot(tmp_path / "d" / "set") == before
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["set"]
    if not exchange:  # the fallback path also works when nothing fails
        monkeypatch.setattr(datadir, "_exchange", lambda a, b: False)
    prepare("text", input_path=str(src), data_dir=str(tmp_path / "d"), out_name="set")
    assert load_meta(str(tmp_path / "d"), "set")["source_sha256"] != json.loads(before["meta.json"])["source_sha256"]


def test_dataset_displaced_by_a_killed_prepare_is_put_back(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello world " * 100)
    prepare("text", input_path=str(src), data_dir=str(tmp_path), out_name="set")
    before = snapshot(tmp_path / "set")
    dead_pid = 2**22 + 12345  # above any pid_max default: no such process
    os.rename(tmp_path / "set", tmp_path / f".set.old-{dead_pid}-x1")  # killed between the two renames
    (tmp_path / f".set.new-{dead_pid}-x1").mkdir()  # and its half-written staging folder
    assert load_meta(str(tmp_path), "set")["vocab_size"] == json.loads(before["meta.json"])["vocab_size"]
    assert snapshot(tmp_path / "set") == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".set")) == []


@pytest.mark.parametrize("data_dir", ["/proc/nanodlm-test", "FILE/sub"])
def test_prepare_into_unwritable_data_dir(tmp_path: Path, capsys, data_dir: str) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello world " * 100)
    data_dir = data_dir.replace("FILE", str(src))  # a path under a regular file: even root cannot write there
    assert main(["prepare", "text", f"--input={src}", "--name=x", f"--data_dir={data_dir}"]) == 1
    assert "--data_dir" in one_line_error(capsys)


def test_datasets_and_checkpoints_honour_the_umask(tmp_path: Path, make_cfg) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello world " * 100)
    old = os.umask(0o027)
    try:
        prepare("text", input_path=str(src), data_dir=str(tmp_path / "d"), out_name="set")
        save_checkpoint(tmp_path / "ckpt.pt", {"model": {"w": torch.zeros(2)}, "meta": {}})
    finally:
        os.umask(old)
    assert (tmp_path / "d" / "set").stat().st_mode & 0o777 == 0o750
    for path in [*(tmp_path / "d" / "set").iterdir(), tmp_path / "ckpt.pt", tmp_path / "ckpt.json"]:
        assert path.stat().st_mode & 0o777 == 0o640, path


# --- one run per out_dir, never replaced by accident -----------------------------------------------------------


def test_scratch_run_refuses_to_replace_a_trained_model(tmp_path: Path, make_cfg, tiny_argv, capsys) -> None:
    train(make_cfg(tmp_path, max_iters=4, eval_interval=2))
    before = snapshot(tmp_path)
    assert main(["train", *tiny_argv(tmp_path, max_iters=2)]) == 1
    err = one_line_error(capsys)
    assert "--init_from=resume" in err and "--overwrite=True" in err
    assert snapshot(tmp_path) == before
    assert main(["train", *tiny_argv(tmp_path, max_iters=2), "--overwrite=True"]) == 0
    assert load_checkpoint(tmp_path / "best.pt")["meta"]["iter_num"] == 2  # the old best.pt is gone with the run
    assert max(r["iter"] for r in read_metrics(tmp_path / "metrics.jsonl")) == 2


def test_out_dir_lock(tmp_path: Path, make_cfg, subprocess_env: dict[str, str]) -> None:
    with open_run_dir(tmp_path, "scratch", False):
        with pytest.raises(UserError, match=f"in use by another training \\(pid {os.getpid()}\\)"):
            train(make_cfg(tmp_path, max_iters=1))
    assert not (tmp_path / "ckpt.pt").exists()
    # a holder killed with -9 leaves the lock file (with its pid) behind, but not the lock
    code = "import sys, time; from nanodlm.runs.rundir import open_run_dir; d = open_run_dir(sys.argv[1], 'scratch', " \
           "False); print('locked', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=subprocess_env, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {proc.pid}"):
            train(make_cfg(tmp_path, max_iters=1))
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / ".lock").read_text().strip() == str(proc.pid)
    assert train(make_cfg(tmp_path, max_iters=1))["iter_num"] == 1


def test_resume_of_nothing_creates_nothing(tmp_path: Path, make_cfg) -> None:
    with pytest.raises(UserError, match="no checkpoint at"):
        train(make_cfg(tmp_path / "typo", init_from="resume", max_iters=1))
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("where", ["/proc/nanodlm-test", "FILE/out"])
def test_unwritable_out_dir_fails_before_training(tmp_path: Path, make_cfg, monkeypatch, where: str) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(train_mod, "_train", lambda cfg: pytest.fail("training started"))
    with pytest.raises(UserError, match="is not writable .*choose another --out_dir"):
        train(make_cfg(where.replace("FILE", str(tmp_path / "file")), max_iters=1))


def test_full_disk_at_save_is_one_line_and_keeps_the_old_checkpoint(tmp_path: Path, make_cfg, monkeypatch) -> None:
    train(make_cfg(tmp_path, max_iters=2, eval_interval=2))
    before = snapshot(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_mod, "save_checkpoint", full)
    with pytest.raises(UserError, match="could not write .*ckpt.pt \\(No space left on device\\).*intact"):
        train(make_cfg(tmp_path, max_iters=4, eval_interval=2, init_from="resume"))
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "metrics.jsonl"} == \
        {k: v for k, v in before.items() if k != "metrics.jsonl"}


# --- resume: the checkpoint decides the model --------------------------------------------------------------------


@pytest.mark.parametrize("flag, saved", [("--model_type=gpt2", "model_type=diffusion"), ("--n_layer=2", "n_layer=1"),
                                         ("--block_size=32", "block_size=16"), ("--pos_emb=learned", "pos_emb=rope")])
def test_resume_flag_contradicting_the_checkpoint(tiny_runs, capsys, flag: str, saved: str) -> None:
    out = Path(tiny_runs["diffusion"])
    before = snapshot(out)
    assert main(["train", "--init_from=resume", f"--out_dir={out}", "--max_iters=3", flag]) == 1
    err = one_line_error(capsys)
    assert flag in err and saved in err
    assert snapshot(out) == before


def test_resume_on_another_vocabulary(tiny_runs, tmp_path: Path, capsys) -> None:
    out = Path(tiny_runs["gpt2"])
    (tmp_path / "in.txt").write_text("0123456789 " * 50)
    prepare("text", input_path=str(tmp_path / "in.txt"), data_dir=str(tmp_path), out_name="digits")
    before = snapshot(out)
    argv = ["train", "--init_from=resume", f"--out_dir={out}", "--max_iters=3", f"--data_dir={tmp_path}",
            "--dataset=digits"]
    assert main(argv) == 1
    err = one_line_error(capsys)
    assert "vocab_size 11" in err and "--dataset=tiny" in err
    assert snapshot(out) == before


def test_checkpoint_whose_metadata_does_not_match_its_weights(tiny_runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(tiny_runs["gpt2"], out)
    ckpt = load_checkpoint(out / "ckpt.pt")
    ckpt["meta"]["model_args"]["n_layer"] = 3
    for name in ("ckpt.pt", "best.pt"):
        save_checkpoint(out / name, ckpt)
    assert main(["sample", f"--out_dir={out}", "--device=cpu", "--max_new_tokens=2"]) == 1
    assert "do not match its metadata" in one_line_error(capsys)
    assert main(["eval", f"--out_dir={out}", "--device=cpu", "--num_batches=1"]) == 1
    assert "do not match its metadata" in one_line_error(capsys)
    assert main(["train", "--init_from=resume", f"--out_dir={out}", "--max_iters=4"]) == 1
    assert "do not match its metadata" in one_line_error(capsys)


def test_resume_leaves_no_duplicate_metric_rows_and_heals_the_sidecar(tmp_path: Path, make_cfg) -> None:
    train(make_cfg(tmp_path, max_iters=2, eval_interval=2))
    # a kill after more steps were logged (but before the next save), and one between ckpt.pt and ckpt.json
    with open(tmp_path / "metrics.jsonl", "a") as f:
        for it in (2, 3):
            f.write(json.dumps({"kind": "step", "iter": it, "loss": 9.0, "lr": 0.0, "ms": 1.0}) + "\n")
        f.write('{"kind": "step", "it')  # a row cut short
    sidecar = json.loads((tmp_path / "ckpt.json").read_text())
    (tmp_path / "ckpt.json").write_text(json.dumps({**sidecar, "iter_num": 1}))
    (tmp_path / ".ckpt.pt.k2j3h4.tmp").write_bytes(b"half a model")
    with open_run_dir(tmp_path, "resume", False):
        assert json.loads((tmp_path / "ckpt.json").read_text())["iter_num"] == 2
        assert not (tmp_path / ".ckpt.pt.k2j3h4.tmp").exists()
    train(make_cfg(tmp_path, max_iters=4, eval_interval=2, init_from="resume"))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iter"] for r in rows if r["kind"] == "step"] == [0, 1, 2, 3]
    assert [r["iter"] for r in rows if r["kind"] == "eval"] == [0, 2, 4]
    assert all(r["loss"] != 9.0 for r in rows if r["kind"] == "step")
    sync_sidecars(tmp_path)  # nothing to heal: the sidecars match
    assert json.loads((tmp_path / "ckpt.json").read_text())["iter_num"] == 4


# --- divergence, signals, the end of a run ------------------------------------------------------------------------


def test_diverged_but_finite_model_is_never_saved(tmp_path: Path, make_cfg, monkeypatch) -> None:
    real, calls = train_mod.make_loss_fn, {"eval": 0}

    def exploding(cfg, *ids):
        fn = real(cfg, *ids)

        def loss_fn(model, x, y, gen):
            loss = fn(model, x, y, gen)
            if not model.training:
                calls["eval"] += 1
                if calls["eval"] > 8:  # from the 3rd eval on (2 splits x 2 iters each), a finite explosion
                    return loss * 1e11
            return loss

        return loss_fn

    monkeypatch.setattr(train_mod, "make_loss_fn", exploding)
    with pytest.raises(TrainingDiverged, match="diverged.*ckpt.pt keeps the model of iter 3"):
        train(make_cfg(tmp_path, max_iters=100, eval_interval=3, always_save_checkpoint=True))
    assert load_checkpoint(tmp_path / "ckpt.pt")["meta"]["iter_num"] == 3


def test_divergence_before_any_save_promises_no_checkpoint(tmp_path: Path, make_cfg, monkeypatch) -> None:
    real = train_mod.make_loss_fn
    monkeypatch.setattr(train_mod, "make_loss_fn",
                        lambda cfg, *ids: (lambda model, x, y, gen: real(cfg, *ids)(model, x, y, gen) * float("nan")))
    with pytest.raises(TrainingDiverged) as e:
        train(make_cfg(tmp_path, max_iters=10, eval_interval=5))
    assert "no checkpoint was saved by this run" in str(e.value) and "last good" not in str(e.value)
    assert not (tmp_path / "ckpt.pt").exists()


@pytest.mark.slow
def test_sigterm_saves_and_says_how_to_resume(tmp_path: Path, signal_training) -> None:
    out = tmp_path / "run"
    returncode, stdout, stderr = signal_training(out, signal.SIGTERM)
    assert returncode == 143, stderr
    assert "Traceback" not in stderr and "SIGTERM" in stdout and "--init_from=resume" in stdout
    iter_num = load_checkpoint(out / "ckpt.pt")["meta"]["iter_num"]
    assert train(load_train_config(["--init_from=resume", f"--out_dir={out}", f"--max_iters={iter_num + 1}"])
                 )["iter_num"] == iter_num + 1


def test_end_of_run_names_its_files_and_logs_have_no_carriage_returns(tmp_path: Path, tiny_argv, capsys) -> None:
    assert main(["train", *tiny_argv(tmp_path, max_iters=3, eval_interval=3), "--progress=True"]) == 0
    out, err = capsys.readouterr()
    assert f"wrote {tmp_path / 'ckpt.pt'}, {tmp_path / 'best.pt'}" in out
    assert "\r" not in out + err  # not a terminal: no progress bar redraws
    assert "iter 3: train loss" in out


def test_ctrl_c_during_imports_is_not_a_traceback(subprocess_env: dict[str, str]) -> None:
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see when torch is being imported")
    proc = subprocess.Popen([sys.executable, "-m", "nanodlm", "train", "--help"], env=subprocess_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                maps = Path(f"/proc/{proc.pid}/maps").read_text()
            except OSError:
                break
            if "libtorch" in maps:  # inside `import torch`
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.002)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr


# --- config validation and threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("learning_rate", -1), ("beta2", 2), ("beta1", -0.1), ("weight_decay", -1),
                                        ("grad_clip", -1), ("min_lr", -1), ("warmup_iters", -5), ("threads", -1),
                                        ("repair_rate_max", 1.5), ("copy_weight", -1), ("learning_rate", "nan")])
def test_training_values_out_of_range(tmp_path: Path, tiny_argv, capsys, key: str, value) -> None:
    assert main(["train", *tiny_argv(tmp_path, max_iters=1), f"--{key}={value}"]) == 1
    assert f"'{key}'" in one_line_error(capsys)
    assert not (tmp_path / "ckpt.pt").exists()


def test_threads_key(tmp_path: Path, make_cfg) -> None:
    torch.set_num_threads(2)
    train(make_cfg(tmp_path, max_iters=1, threads=1))
    assert torch.get_num_threads() == 1
    base = make_cfg(tmp_path, max_iters=1)
    assert config_hash(base) == config_hash(make_cfg(tmp_path, max_iters=1, threads=3, overwrite=True))
