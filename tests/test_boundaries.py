"""Validation at the boundaries (issue 19): datasets on open, checkpoints on load, config files, absurd sizes, NaN and
inf, schedules that contradict themselves, resume past the end, full disks, and ignored settings said once."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.runs import rundir
from nanodlm.runs.checkpoint import load_checkpoint, save_checkpoint
from nanodlm.sampling.generate import Prompt, SamplerOptions, ignored_settings
from nanodlm.training.config import TrainConfig, build_config, load_config


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def run_error(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 1
    line = error_line(capsys)
    for word in words:
        assert word in line, line
    return line


# --- datasets: meta.json and the token files, checked on open ---------------------------------------------

@pytest.fixture
def broken_data(data_dir, tmp_path) -> Path:
    """A copy of the ``tiny`` dataset that a test may damage."""
    shutil.copytree(Path(data_dir) / "tiny", tmp_path / "data" / "tiny")
    return tmp_path / "data"


def edit_meta(data: Path, **changes) -> None:
    path = data / "tiny" / "meta.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("changes,words", [
    ({"dtype": "uint32"}, ["meta.json records", "dtype"]),  # uint16 files read as uint32
    ({"dtype": "float32"}, ["dtype must be one of uint16, uint32"]),
    ({"dtype": "int128"}, ["dtype must be one of"]),
    ({"vocab_size": "65"}, ["vocab_size must be an integer"]),
    ({"vocab_size": 0}, ["vocab_size must be an integer"]),
    ({"vocab_size": True}, ["vocab_size must be an integer"]),
    ({"vocab_size": 3}, ["outside the vocabulary"]),  # ids in train.bin above it
    ({"vocab_size": 70000}, ["cannot hold vocab_size"]),
    ({"train_tokens": "many"}, ["train_tokens"]),
    ({"tokenizer": "sentencepiece"}, ["unknown tokenizer"]),
])
def test_corrupt_dataset_metadata_is_one_line(broken_data, tmp_path, tiny_argv, capsys, changes, words):
    edit_meta(broken_data, **changes)
    run_error(capsys, ["train", *tiny_argv(tmp_path / "run", data_dir=broken_data, max_iters=1)], *words)
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_token_ids_above_the_vocabulary_are_found(broken_data, tmp_path, tiny_argv, capsys):
    path = broken_data / "tiny" / "train.bin"
    ids = np.fromfile(path, dtype=np.uint16)
    ids[len(ids) // 2] = 60000
    ids.tofile(path)
    run_error(capsys, ["train", *tiny_argv(tmp_path / "run", data_dir=broken_data, max_iters=1)],
              "token id 60000", "outside the vocabulary")


def test_dtype_contradicting_the_files(broken_data, tmp_path, tiny_argv, capsys):
    """uint32 files under a uint16 meta.json: the recorded token counts disagree with the sizes; uint16 files under
    a uint32 meta.json without counts: two ids read as one land far outside the vocabulary."""
    argv = ["train", *tiny_argv(tmp_path / "run", data_dir=broken_data, max_iters=1)]
    for split in ("train", "val"):
        path = broken_data / "tiny" / f"{split}.bin"
        np.fromfile(path, dtype=np.uint16).astype(np.uint32).tofile(path)
    run_error(capsys, argv, "meta.json records")
    for split in ("train", "val"):
        path = broken_data / "tiny" / f"{split}.bin"
        np.fromfile(path, dtype=np.uint32).astype(np.uint16).tofile(path)
    meta = json.loads((broken_data / "tiny" / "meta.json").read_text())
    del meta["train_tokens"], meta["val_tokens"]
    (broken_data / "tiny" / "meta.json").write_text(json.dumps({**meta, "dtype": "uint32"}))
    run_error(capsys, argv, "outside the vocabulary")


# --- config files, sizes, NaN and inf ------------------------------------------------------------------------

def test_config_file_not_utf8_or_a_folder(tmp_path, capsys):
    bad = tmp_path / "latin.py"
    bad.write_bytes("n_layer = 2  # caf\xe9\n".encode("latin-1"))
    run_error(capsys, ["train", str(bad)], "not UTF-8")
    run_error(capsys, ["train", str(tmp_path)], "is a folder")
    nul = tmp_path / "nul.py"
    nul.write_bytes(b"n_layer = 2\x00\n")
    run_error(capsys, ["train", str(nul)], "config file")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    run_error(capsys, ["train", str(deep)], "not valid JSON")


def test_absurd_model_size_is_refused_before_allocation(tmp_path, tiny_argv, tiny_runs, capsys):
    line = run_error(capsys, ["train", *tiny_argv(tmp_path / "run", n_embd=1048576, max_iters=1)],
                     "parameters", "GB", "n_embd")
    assert "1048576" in line
    run_error(capsys, ["train", *tiny_argv(tmp_path / "run", n_layer=100000, max_iters=1)], "n_layer=100000")
    run_error(capsys, ["train", *tiny_argv(tmp_path / "run", batch_size=10**9, max_iters=1)], "batch_size", "GB")
    run_error(capsys, ["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--num_samples=10**9"],
              "expects int")
    run_error(capsys, ["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--num_samples=1000000000"],
              "num_samples", "GB")
    assert not (tmp_path / "run").exists()  # and nothing left behind


@pytest.mark.parametrize("argv_tail,words", [
    (["--temperature=1e999"], ["temperature", "finite"]),
    (["--noise=-1e999"], ["noise", "finite"]),
    (["--top_p=1e999"], ["top_p", "finite"]),
])
def test_inf_sampling_options_are_refused(tiny_runs, capsys, argv_tail, words):
    run_error(capsys, ["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", *argv_tail], *words)


def test_nan_and_inf_from_json_configs(tmp_path, tiny_runs, tiny_argv, capsys):
    for key in ("min_lr", "mdlm_eps", "dropout", "copy_weight"):  # keys tiny_argv does not set
        cfg = tmp_path / f"{key}.json"
        cfg.write_text(f'{{"{key}": NaN}}')
        run_error(capsys, ["train", str(cfg), *tiny_argv(tmp_path / "run", max_iters=1)], key, "finite")
    sample_cfg = tmp_path / "s.json"
    sample_cfg.write_text('{"temperature": Infinity}')
    run_error(capsys, ["sample", str(sample_cfg), f"--out_dir={tiny_runs['diffusion']}", "--device=cpu"],
              "temperature", "finite")
    with pytest.raises(UserError, match="finite"):
        SamplerOptions(temperature=float("nan"))
    with pytest.raises(UserError, match="finite"):
        build_config(TrainConfig, {"beta1": float("nan")})


def test_tiny_temperature_samples_greedily(tiny_runs, capsys):
    for model, flags in (("diffusion", ["--steps=4", "--length=8", "--noise=0"]), ("gpt2", ["--max_new_tokens=4"])):
        assert main(["sample", f"--out_dir={tiny_runs[model]}", "--device=cpu", "--temperature=1e-300",
                     "--num_samples=2", *flags]) == 0
        out = capsys.readouterr().out.split("---------------\n")
        assert out[0] == out[1]  # greedy: both samples the same


# --- schedules, out_dir, resume past the end ---------------------------------------------------------------

@pytest.mark.parametrize("values,words", [
    ({"warmup_iters": 200, "lr_decay_iters": 100}, ["warmup_iters=200", "lr_decay_iters=100"]),
    ({"min_lr": 1e-2, "learning_rate": 1e-3}, ["min_lr", "learning_rate"]),
    ({"lr_decay_iters": 0, "warmup_iters": 0}, ["lr_decay_iters=0"]),
    ({"out_dir": ""}, ["out_dir", "empty"]),
    ({"out_dir": "  "}, ["out_dir", "empty"]),
])
def test_contradictory_training_settings(values, words):
    with pytest.raises(UserError) as e:
        build_config(TrainConfig, values)
    assert all(w in str(e.value) for w in words)
    build_config(TrainConfig, {**values, "decay_lr": False} if "out_dir" not in values else {})  # constant lr: fine


def test_sample_with_empty_out_dir(capsys):
    run_error(capsys, ["sample", "--out_dir="], "--out_dir is empty")


@pytest.fixture
def finished_run(tiny_runs, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(tiny_runs["gpt2"], out)
    return out


def test_resume_below_the_runs_iteration_is_refused_and_writes_nothing(finished_run, capsys):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    run_error(capsys, ["train", "--init_from=resume", f"--out_dir={finished_run}", "--max_iters=1"],
              "max_iters=1 is below", "(2)")
    assert main(["train", "--init_from=resume", f"--out_dir={finished_run}", "--max_iters=2"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}


# --- checkpoints against a schema ------------------------------------------------------------------------------

def tamper(run: Path, edit) -> None:
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, run / "ckpt.pt")
    (run / "best.pt").unlink(missing_ok=True)


@pytest.mark.parametrize("edit,words", [
    (lambda c: c.update(model=[1, 2]), ["'model' is a list"]),
    (lambda c: c.update(meta="x"), ["'meta' is a str"]),
    (lambda c: c["model"].update(extra=3), ["dict of named tensors"]),
    (lambda c: c["meta"].update(iter_num="7"), ["meta.iter_num"]),
    (lambda c: c["meta"].update(best_val_loss=None), ["best_val_loss"]),
    (lambda c: c["meta"].update(model_args=[1]), ["model_args is not a dict"]),
    (lambda c: c.update(optimizer=5), ["'optimizer' is a int"]),
    (lambda c: c["meta"]["model_args"].update(n_embd=1 << 20), ["parameters", "smaller n_embd"]),
])
def test_tampered_checkpoints_are_one_line_for_every_reader(finished_run, capsys, edit, words):
    tamper(finished_run, edit)
    run_error(capsys, ["sample", f"--out_dir={finished_run}", "--device=cpu", "--max_new_tokens=2"], *words)
    run_error(capsys, ["train", "--init_from=resume", f"--out_dir={finished_run}", "--max_iters=4"], *words)


def test_resume_without_iter_num_or_optimizer(finished_run, capsys):
    tamper(finished_run, lambda c: c.pop("optimizer"))
    assert main(["train", "--init_from=resume", f"--out_dir={finished_run}", "--max_iters=3"]) == 0
    assert "no optimizer state" in capsys.readouterr().err
    tamper(finished_run, lambda c: c["meta"].pop("iter_num"))
    run_error(capsys, ["train", "--init_from=resume", f"--out_dir={finished_run}", "--max_iters=5"], "iter_num")
    assert main(["sample", f"--out_dir={finished_run}", "--device=cpu", "--max_new_tokens=2"]) == 0  # samples fine


def test_metrics_with_invalid_utf8_resume(finished_run, capsys):
    with open(finished_run / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "step", "iter": 1, "loss": 3.0, "note": "\xff\xfe"}\n')
    assert main(["train", "--init_from=resume", f"--out_dir={finished_run}", "--max_iters=3"]) == 0
    rows = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["iter"] for r in rows) == 3


def test_full_disk_at_start_is_caught_by_the_write_probe(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "write", full)
    with pytest.raises(UserError, match="No space left"):
        rundir.ensure_writable_dir(tmp_path / "out", "out_dir", "--out_dir")


def test_hf_init_from_with_wrong_types(tmp_path, tiny_argv, capsys):
    pytest.importorskip("transformers")
    hf = tmp_path / "hf"
    hf.mkdir()
    good = {"model_type": "gpt2", "n_positions": 16, "n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 65,
            "activation_function": "gelu_new"}
    for bad, word in (({"n_embd": "32"}, "n_embd"), ({"n_layer": -1}, "n_layer"), ({"n_head": 2.5}, "n_head"),
                      ({"activation_function": 3}, "activation_function"), ({"n_embd": 1 << 20}, "parameters")):
        (hf / "config.json").write_text(json.dumps({**good, **bad}))
        run_error(capsys, ["train", *tiny_argv(tmp_path / "run", init_from=str(hf), max_iters=1)], word)
    (hf / "config.json").write_text("[1, 2")
    run_error(capsys, ["train", *tiny_argv(tmp_path / "run", init_from=str(hf), max_iters=1)], "not valid JSON")


def test_save_and_load_roundtrip_still_works(finished_run):
    ckpt = load_checkpoint(finished_run / "ckpt.pt")
    save_checkpoint(finished_run / "copy.pt", ckpt)
    assert load_checkpoint(finished_run / "copy.pt", resume=True)["meta"]["iter_num"] == 2


# --- ignored settings: one place, one warning each ------------------------------------------------------------

@pytest.mark.parametrize("options,prompt,says", [
    ({"approx_cache": "dual"}, {}, "--approx_cache=dual"),
    ({"semi_ar_block": 16}, {"length": 16}, "--semi_ar_block=16"),
    ({"semi_ar_block": 32}, {}, "--semi_ar_block=32"),
    ({}, {"infill": "a_b", "length": 9}, "--length=9"),
])
def test_ignored_settings_are_named(options, prompt, says):
    lines = ignored_settings("diffusion", SamplerOptions(**options), Prompt(**prompt), block_size=16)
    assert any(line.startswith(says) for line in lines)
    assert ignored_settings("diffusion", SamplerOptions(semi_ar_block=4, approx_cache="dual"), Prompt(length=16),
                            block_size=16) == []


def test_ignored_settings_warn_on_the_cli(tiny_runs, capsys):
    base = ["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--num_samples=1", "--steps=2"]
    for flags, says in ((["--approx_cache=dual"], "--approx_cache=dual"),
                        (["--semi_ar_block=32"], "--semi_ar_block=32"),
                        (["--infill=ab__cd", "--length=12"], "--length=12")):
        assert main([*base, *flags]) == 0
        assert f"warning: ignored {says}" in capsys.readouterr().err
    run_error(capsys, [*base, "--steps=4", "--max_steps=8"], "same setting")
    assert main([*base, "--max_steps=2"]) == 0  # equal values are no contradiction


def test_load_config_rejects_literal_bombs():
    for value in ("[" * 5000, "(" * 500 + "1", "-" * 30000 + "1", "9" * 5000):
        with pytest.raises(UserError):
            load_config(TrainConfig, [f"--max_iters={value}"])


def test_user_text_files_that_are_not_text(tiny_runs, tmp_path, capsys):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    sample = ["sample", f"--out_dir={tiny_runs['gpt2']}", "--device=cpu", "--max_new_tokens=2"]
    run_error(capsys, [*sample, "--start=FILE:/dev/null"], "prompt file", "not a regular file")
    run_error(capsys, [*sample, f"--start=FILE:{tmp_path}"], "prompt file", "directory")
    run_error(capsys, [*sample, f"--start=FILE:{latin}"], "prompt file", "UTF-8")
    judge = ["judge", f"--judge={tiny_runs['gpt2']}", "--device=cpu"]
    run_error(capsys, [*judge, "--samples=/dev/null"], "samples file", "not a regular file")
    run_error(capsys, [*judge, f"--samples={tmp_path}"], "samples file", "directory")
    run_error(capsys, [*judge, f"--samples={latin}"], "samples file", "UTF-8")


def test_seeds_outside_torchs_range_and_a_vanishing_top_p(tiny_runs, capsys):
    base = ["sample", f"--out_dir={tiny_runs['gpt2']}", "--device=cpu", "--max_new_tokens=2", "--num_samples=1"]
    for seed in ("-1", str(2**64 + 1)):
        run_error(capsys, [*base, f"--seed={seed}"], "seed", "2**63")
    run_error(capsys, ["eval", f"--out_dir={tiny_runs['gpt2']}", "--seed=-5"], "seed")
    assert main([*base, "--top_p=1e-300"]) == 0  # 0 in float32: the most likely token is kept
