"""A new user's first hour (issue 19): presets that survive a non-editable install, help and usage that look alike,
sane thread counts on a busy machine, messages that say what is wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanodlm.cli import main
from nanodlm.sample import list_sample_presets
from nanodlm.training.config import PRESET_DIR, list_presets

REPO = Path(__file__).resolve().parents[1]


def test_presets_live_in_the_package():
    assert PRESET_DIR.parent == Path(main.__code__.co_filename).parent  # nanodlm/configs, shipped as package data
    assert {"cpu", "cpu_diffusion", "judge"} <= set(list_presets())
    assert "fast" in list_sample_presets()
    assert (REPO / "configs" / "cpu.py").resolve() == (PRESET_DIR / "cpu.py").resolve()  # the repo path still works


@pytest.mark.slow  # builds a wheel (no network, no build isolation): ~10 s
def test_presets_survive_a_non_editable_install(tmp_path, subprocess_env):
    src, target = tmp_path / "src", tmp_path / "site"
    src.mkdir()  # a copy of the sources: the build writes build/ and *.egg-info beside them
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "nanodlm", src / "nanodlm", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", f"--target={target}", str(src)], check=True, env=subprocess_env,
                   cwd=tmp_path, capture_output=True)
    env = {**subprocess_env, "PYTHONPATH": str(target)}  # the installed copy only, not the checkout
    code = ("import nanodlm.training.config as c, nanodlm.sample as s; print(c.PRESET_DIR); "
            "print(','.join(c.list_presets())); print(','.join(s.list_sample_presets()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert "cpu" in out[1].split(",") and "fast" in out[2].split(",")
    help_text = subprocess.run([sys.executable, "-m", "nanodlm", "train", "--help"], env=env, cwd=tmp_path,
                               capture_output=True, text=True).stdout
    assert "cpu_diffusion" in help_text


def test_an_unknown_sample_preset_lists_the_sampling_presets(capsys):
    assert main(["sample", "turbo"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "sampling presets: fast" in err and "cpu_diffusion" not in err


def test_prepare_help_looks_like_the_others(capsys):
    assert main(["prepare", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: nanodlm prepare KIND") and "keys (defaults):" in text and "--input=None" in text
    assert main(["train", "--help"]) == 0
    assert "keys (defaults):" in capsys.readouterr().out
    assert main(["prepare", "text", "--bogus=1"]) == 1
    assert "unknown config key 'bogus'" in capsys.readouterr().err


def test_bare_nanodlm_prints_usage_and_exits_0(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: nanodlm COMMAND")


def test_input_that_is_not_a_regular_file(tmp_path, capsys):
    assert main(["prepare", "text", "--input=/dev/null", "--name=x", f"--data_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "not a regular file" in err and "does not exist" not in err
    assert not list(tmp_path.iterdir())


def test_sampling_commands_default_to_one_thread(tiny_runs, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["sample", f"--out_dir={tiny_runs['gpt2']}", "--device=cpu", "--num_samples=1",
                     "--max_new_tokens=2"]) == 0
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert main(["sample", f"--out_dir={tiny_runs['gpt2']}", "--device=cpu", "--num_samples=1",
                     "--max_new_tokens=2", "--threads=0"]) == 0
        assert torch.get_num_threads() == 2  # 0: torch's own choice, left alone
    finally:
        torch.set_num_threads(before)


def test_os_errors_are_one_line(capsys):
    assert main(["sample", "--out_dir=" + "a" * 5000]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and len(err) < 400


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    assert main(["eval", "--out_dir=x", f"--json={folder}/r.json"]) == 1
