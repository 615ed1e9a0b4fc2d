"""Checkpoints: safe round trip, prefix cleaning, clear errors, JSON sidecar, and atomic saves under kill -9."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanodlm.core.errors import UserError
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.runs.checkpoint import (
    FORMAT_VERSION,
    clean_state_dict,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def strict_json(text: str):
    """json.loads that rejects NaN/Infinity, which are not JSON."""

    def reject(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def tiny_checkpoint() -> tuple[GPT, dict]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=66, n_layer=1, n_head=2, n_embd=32, model_type="diffusion"))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    model(torch.randint(66, (2, 16)), torch.randint(66, (2, 16)))[1].backward()
    opt.step()
    meta = {"model_args": {"model_type": "diffusion", "vocab_size": 66, "mask_token_id": 65}, "iter_num": 7,
            "best_val_loss": 1.5, "itos": ["a", "é", "\n"]}
    return model, {"model": model.state_dict(), "optimizer": opt.state_dict(), "meta": meta}


def test_round_trip(tmp_path: Path) -> None:
    model, ckpt = tiny_checkpoint()
    path = tmp_path / "run" / "ckpt.pt"  # the folder is created
    save_checkpoint(path, ckpt)
    raw = torch.load(path, weights_only=True)  # the file holds only safe types
    assert raw["meta"]["format_version"] == FORMAT_VERSION
    loaded = load_checkpoint(path)
    assert loaded["model"].keys() == ckpt["model"].keys()
    for key, value in ckpt["model"].items():
        assert torch.equal(loaded["model"][key], value), key
    assert loaded["meta"]["iter_num"] == 7 and loaded["meta"]["itos"] == ["a", "é", "\n"]
    assert loaded["meta"]["model_args"]["mask_token_id"] == 65
    fresh = GPT(model.config)
    fresh.load_state_dict(loaded["model"])
    opt = fresh.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    opt.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], ckpt["optimizer"]["state"][0]["exp_avg"])


def test_json_sidecar(tmp_path: Path) -> None:
    _, ckpt = tiny_checkpoint()
    save_checkpoint(tmp_path / "best.pt", ckpt)
    sidecar = tmp_path / "best.json"
    assert sidecar.is_file()
    meta = strict_json(sidecar.read_text())
    assert meta["iter_num"] == 7 and meta["format_version"] == FORMAT_VERSION
    assert meta["model_args"]["model_type"] == "diffusion"
    assert not list(tmp_path.glob("*.tmp"))  # no temp files left behind


def test_prefixes_stripped(tmp_path: Path) -> None:
    w = torch.arange(4.0)
    state = {"_orig_mod.a.weight": w, "module.b.bias": w + 1, "module._orig_mod.c": w + 2, "d": w + 3}
    assert list(clean_state_dict(state)) == ["a.weight", "b.bias", "c", "d"]
    save_checkpoint(tmp_path / "x.pt", {"model": state, "meta": {}})
    assert list(load_checkpoint(tmp_path / "x.pt")["model"]) == ["a.weight", "b.bias", "c", "d"]
    # a file written by someone else, prefixes and all, is cleaned on load
    torch.save({"model": state, "meta": {}}, tmp_path / "y.pt")
    loaded = load_checkpoint(tmp_path / "y.pt")
    assert list(loaded["model"]) == ["a.weight", "b.bias", "c", "d"]
    assert torch.equal(loaded["model"]["c"], w + 2)


def test_old_checkpoint_meta_patched(tmp_path: Path) -> None:
    torch.save({"model": {}, "meta": {"iter_num": 3}}, tmp_path / "old.pt")
    meta = load_checkpoint(tmp_path / "old.pt")["meta"]
    assert meta["format_version"] == 0
    assert meta["model_args"]["model_type"] == "gpt2" and meta["model_args"]["pos_emb"] == "learned"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


class Evil:  # not an allowed type for the weights-only unpickler
    pass


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "unsafe", "not_nanodlm"])
def test_corrupt_file(tmp_path: Path, kind: str) -> None:
    _, ckpt = tiny_checkpoint()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, ckpt)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unsafe":
        torch.save({"model": {}, "meta": {}, "x": Evil()}, path)
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="ckpt.pt") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_find_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        find_checkpoint(tmp_path / "none")
    with pytest.raises(UserError, match="best or last"):
        find_checkpoint(tmp_path, "newest")
    assert find_checkpoint(tmp_path, "best") == tmp_path / "ckpt.pt"  # falls back to the last
    (tmp_path / "best.pt").write_bytes(b"")
    assert find_checkpoint(tmp_path, "best") == tmp_path / "best.pt"
    assert find_checkpoint(tmp_path, "last") == tmp_path / "ckpt.pt"


SAVER = """
import sys, torch
from nanodlm.runs.checkpoint import save_checkpoint
path = sys.argv[1]
w = torch.empty(5_000_000)  # ~20 MB
print("ready", flush=True)
i = 0
while True:
    i += 1
    w.fill_(i)
    save_checkpoint(path, {"model": {"w": w}, "meta": {"i": i}})
"""


@pytest.mark.slow  # kill -9 of a saving subprocess
def test_kill_9_mid_save_never_corrupts(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = tmp_path / "ckpt.pt"
    rng = random.Random(1234)
    seen, mid_save_kills = set(), 0
    for attempt in range(12):  # at least 5 kills, and more until two of them hit a save in flight
        if attempt >= 5 and mid_save_kills >= 2:
            break
        temps_before = set(tmp_path.glob(".ckpt.pt.*.tmp"))
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], env=subprocess_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            if attempt == 0:  # let one save complete so there is something to protect
                deadline = time.monotonic() + 60
                while not path.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.8))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # kill -9 leaves the temp file of an interrupted save behind: a new one means this kill hit a save
        mid_save_kills += bool(set(tmp_path.glob(".ckpt.pt.*.tmp")) - temps_before)
        assert path.exists()
        ckpt = load_checkpoint(path)  # raises UserError if the kill left a half-written file
        i = ckpt["meta"]["i"]
        w = ckpt["model"]["w"]
        assert w.numel() == 5_000_000 and bool((w == i).all())  # weights and meta from the same save
        seen.add(i)
    assert seen  # saves finished
    assert mid_save_kills >= 1, "no kill landed mid-save"
