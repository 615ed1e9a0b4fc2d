"""Shared fixtures: a tiny char dataset, tiny training configs, and a clean global state per test."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanodlm.data.dataset import prepare

# one intra-op thread: tiny models gain nothing from more, and on a shared 2-core machine OpenMP threads that
# wait for each other turn a 2 ms step into a 700 ms one
torch.set_num_threads(1)

# offline inputs: $NANODLM_DATA_MIRROR (tinyshakespeare.txt) and $TIKTOKEN_CACHE_DIR (GPT-2 BPE files) when set, else
# the shared folder beside the checkout; tests that need a missing one skip
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _env_dir(var: str, fallback: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else fallback


MIRROR_DIR = _env_dir("NANODLM_DATA_MIRROR", SHARED / "data")
TIKTOKEN_CACHE = _env_dir("TIKTOKEN_CACHE_DIR", SHARED / "tiktoken_cache")
SHAKESPEARE = MIRROR_DIR / "tinyshakespeare.txt"
CORPUS_CHARS = 50_000

# the smallest model and loop that still exercise every code path
TINY = dict(
    dataset="tiny", device="cpu", dtype="float32", n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=4,
    eval_iters=2, eval_interval=1000, log_interval=1, progress=False, plot=False, warmup_iters=0,
    learning_rate=1e-3, lr_decay_iters=1000, compile=False,
)


def _corpus() -> str:
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")[:CORPUS_CHARS]
    rng = random.Random(0)
    words = "the a to of and in is it you that he was for on are with as his they be at one have this".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))).capitalize() + "." for _ in range(4000)]
    return "\n".join(lines)[:CORPUS_CHARS]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A prepared char dataset named ``tiny`` (~50 KB of text); returns its data_dir."""
    root = tmp_path_factory.mktemp("data")
    src = root / "input.txt"
    src.write_text(_corpus(), encoding="utf-8")
    prepare("text", input_path=str(src), data_dir=str(root), out_name="tiny")
    return str(root)


@pytest.fixture
def tiny_values(data_dir: str):
    """``tiny_values(out_dir, **overrides)`` -> dict of TrainConfig values for a tiny CPU run."""

    def make(out_dir: str | Path, **overrides) -> dict:
        return {**TINY, "data_dir": data_dir, "out_dir": str(out_dir), **overrides}

    return make


@pytest.fixture
def tiny_argv(tiny_values):
    """``tiny_argv(out_dir, **overrides)`` -> ``["--key=value", ...]`` for the CLI or load_train_config."""

    def make(out_dir: str | Path, **overrides) -> list[str]:
        return [f"--{k}={v}" for k, v in tiny_values(out_dir, **overrides).items()]

    return make


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child Pythons: one thread each (2-core machines), the repo importable."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


@pytest.fixture
def signal_training(tiny_argv, subprocess_env):
    """``signal_training(out_dir, signum)``: start a long tiny training in a subprocess, wait for 3 logged steps,
    send ``signum`` -> (returncode, stdout, stderr)."""
    import json

    def run(out: Path, signum: int) -> tuple[int, str, str]:
        cmd = [sys.executable, "-m", "nanodlm", "train", *tiny_argv(out, max_iters=100000, lr_decay_iters=100000)]
        proc = subprocess.Popen(cmd, env=subprocess_env, cwd=out.parent, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

        def steps() -> int:
            path = out / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            return sum(1 for line in lines if line.strip() and json.loads(line).get("kind") == "step")

        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None and steps() < 3:
                time.sleep(0.1)
            assert proc.poll() is None, proc.communicate()[1]
            assert steps() >= 3, "training did not start in time"
            proc.send_signal(signum)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, stdout, stderr

    return run


@pytest.fixture(autouse=True)
def restore_global_state():
    """Training seeds torch's global RNG and installs a SIGINT handler: put both back after each test."""
    rng = torch.get_rng_state()
    handler = signal.getsignal(signal.SIGINT)
    threads = torch.get_num_threads()
    yield
    torch.set_rng_state(rng)
    signal.signal(signal.SIGINT, handler)
    torch.set_num_threads(threads)



@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, data_dir: str) -> dict[str, str]:
    """Two checkpoints trained for 2 iterations on the ``tiny`` dataset: {"gpt2": dir, "diffusion": dir (mdlm)}."""
    from nanodlm.training.config import TrainConfig, build_config
    from nanodlm.training.train import train

    rng = torch.get_rng_state()
    root = tmp_path_factory.mktemp("tiny-runs")
    runs = {}
    for model_type in ("gpt2", "diffusion"):
        out_dir = str(root / model_type)
        train(build_config(TrainConfig, dict(
            out_dir=out_dir, data_dir=data_dir, dataset="tiny", device="cpu", dtype="float32", model_type=model_type,
            objective="mdlm", n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=2, eval_iters=1,
            eval_interval=1000, warmup_iters=0, progress=False, plot=False)))
        runs[model_type] = out_dir
    torch.set_rng_state(rng)
    return runs


@pytest.fixture(scope="session")
def tidar_run(tmp_path_factory: pytest.TempPathFactory, data_dir: str) -> str:
    """A TiDAR checkpoint (objective=tidar, draft_len 4) trained for 2 iterations on the ``tiny`` dataset."""
    from nanodlm.training.config import TrainConfig, build_config
    from nanodlm.training.train import train

    rng = torch.get_rng_state()
    out_dir = str(tmp_path_factory.mktemp("tidar-run") / "tidar")
    summary = train(build_config(TrainConfig, dict(
        out_dir=out_dir, data_dir=data_dir, dataset="tiny", device="cpu", dtype="float32", objective="tidar",
        draft_len=4, pos_emb="rope", n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=2,
        eval_iters=1, eval_interval=1000, warmup_iters=0, progress=False, plot=False)))
    torch.set_rng_state(rng)
    assert math.isfinite(summary["val_loss"])
    return out_dir


@pytest.fixture(scope="module")
def live(tiny_runs):
    """The web demo on a free localhost port, serving the tiny diffusion run with the tiny AR run beside it
    (test_serve.py, test_serve_guard.py; both skip without the serve extra before asking for it)."""
    from webtools import LiveServer

    from nanodlm.web.serve import ServeConfig, load_server

    cfg = ServeConfig(out_dir=tiny_runs["diffusion"], ar_out_dir=tiny_runs["gpt2"], device="cpu", limit_concurrent=2,
                      limit_steps=64)
    server = LiveServer(load_server(cfg))
    yield server
    server.close()
