"""kill -9 during prepare, during training and in the middle of a checkpoint write: the dataset is the old one
or the new one, and the resumed run is bit-identical to an uninterrupted one (issue 10)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nanodlm.core.plotting import read_metrics
from nanodlm.data.dataset import load_meta, open_split, prepare
from nanodlm.data.tokenizers import load_tokenizer
from nanodlm.runs.checkpoint import load_checkpoint
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import load_train_config, train


@pytest.fixture
def make_cfg(tiny_values):
    def make(out_dir: Path, **overrides) -> TrainConfig:
        return build_config(TrainConfig, tiny_values(out_dir, **overrides))

    return make


PREPARER = """
import sys
from nanodlm.data.dataset import prepare
src, data_dir = sys.argv[1:]
print("ready", flush=True)
i = 0
while True:
    prepare("text", input_path=f"{src}{i % 2}", data_dir=data_dir, out_name="set")
    i += 1
"""


@pytest.mark.slow
def test_kill_9_during_prepare_leaves_the_old_or_the_new_dataset(tmp_path: Path, subprocess_env) -> None:
    texts = ["".join(chr(97 + (j * 7) % 26) for j in range(200_000)), "The quick brown fox. " * 10_000]
    for i, text in enumerate(texts):
        (tmp_path / f"src{i}").write_text(text)
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", PREPARER, str(tmp_path / "src"), str(tmp_path / "d")],
                                env=subprocess_env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.1, 1.0)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if not (tmp_path / "d" / "set").exists() and not list((tmp_path / "d").glob(".set.old-*")):
            continue  # killed before the first prepare finished: nothing to check yet
        meta = load_meta(str(tmp_path / "d"), "set")
        tok = load_tokenizer(meta)
        text = tok.decode(open_split(str(tmp_path / "d"), "set", "train")) + \
            tok.decode(open_split(str(tmp_path / "d"), "set", "val"))
        assert text in texts  # one whole dataset, never train.bin of one and meta.json of the other
    prepare("text", input_path=str(tmp_path / "src0"), data_dir=str(tmp_path / "d"), out_name="set")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["set"]  # leftovers of the kills are gone


# kill -9 aimed at a checkpoint write: the save of ckpt.pt number TARGET stops half-way (the temp file half written)
# and says so, and the test kills the process there
STALLING_TRAINER = """
import sys, time
import nanodlm.runs.checkpoint as ck
target, real, saves = int(sys.argv[1]), ck.atomic_write, [0]

def stalling(path, data):
    def write(f):
        if path.name == "ckpt.pt":
            saves[0] += 1
            if saves[0] == target:
                f.write(b"half a checkpoint")
                f.flush()
                print("mid-save", flush=True)
                time.sleep(120)
        (data if callable(data) else (lambda g: g.write(data)))(f)
    real(path, write)

ck.atomic_write = stalling
from nanodlm.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_kill_9_during_training_and_checkpoint_writes_then_resume_is_bitwise(tmp_path: Path, make_cfg, tiny_argv,
                                                                             subprocess_env) -> None:
    kw = dict(max_iters=60, eval_interval=5, dropout=0.1, lr_decay_iters=60)
    train(make_cfg(tmp_path / "a", **kw))  # the uninterrupted run
    b = tmp_path / "b"
    rng = np.random.default_rng(0)
    for target in (2, 0):  # aimed at the 2nd save of ckpt.pt, then at a random moment of the resumed run
        argv = [*tiny_argv(b, **kw), *(["--init_from=resume"] if (b / "ckpt.pt").exists() else [])]
        proc = subprocess.Popen([sys.executable, "-c", STALLING_TRAINER, str(target), "train", *argv],
                                env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if target:
                for line in proc.stdout:
                    if line.strip() == "mid-save":
                        break
            else:
                deadline = time.monotonic() + 60
                while not (b / "ckpt.pt").exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(float(rng.uniform(0.0, 0.2)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # a random kill may come after the run finished; the aimed ones never do
        assert proc.returncode == -signal.SIGKILL or (not target and proc.returncode == 0), proc.stderr.read()
        if target:
            assert list(b.glob(".ckpt.pt.*.tmp")), "the kill did not land in a save"
        meta = load_checkpoint(b / "ckpt.pt")["meta"]  # always a whole checkpoint
        assert meta["iter_num"] % 5 == 0
    summary = train(load_train_config(["--init_from=resume", f"--out_dir={b}"]))
    assert summary["iter_num"] == 60 and not list(b.glob(".*.tmp"))
    ca, cb = load_checkpoint(tmp_path / "a" / "ckpt.pt"), load_checkpoint(b / "ckpt.pt")
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    steps = {name: [(r["iter"], r["loss"]) for r in read_metrics(tmp_path / name / "metrics.jsonl")
                    if r["kind"] == "step"] for name in ("a", "b")}
    assert steps["a"] == steps["b"]  # same losses, and no duplicated rows after the resumes
