"""Outputs never land on a checkpoint, a dataset, a run's own files or a file of another kind (issue 19)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.core.fileio import check_output_path


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture
def run_copy(tiny_runs, tmp_path) -> Path:
    """A copy of the tiny diffusion run: its files may be targeted without touching the shared one."""
    out = tmp_path / "run"
    shutil.copytree(tiny_runs["diffusion"], out)
    shutil.copy(out / "ckpt.pt", out / "best.pt")
    return out


@pytest.mark.parametrize("argv", [
    ["sample", "--output={run}/ckpt.pt"],
    ["sample", "--output={run}/best.pt"],
    ["sample", "--output={run}/ckpt.json"],
    ["sample", "--output={run}/metrics.jsonl"],
    ["sample", "--output={run}/weights.bin"],
    ["sample", "--output={run}/notes.md"],  # an existing file of another kind
    ["sample", "--output={run}/renamed.jsonl"],  # a checkpoint under a text name
    ["sample", "--trajectory={run}/best.html"],  # an existing .html that is really a checkpoint
    ["eval", "--json={run}/best.pt"],
    ["eval", "--json={run}/ckpt.json"],
    ["eval", "--json={run}/renamed.jsonl"],
    ["eval", "--json={run}"],
])
def test_outputs_never_replace_run_files(run_copy, capsys, argv):
    (run_copy / "notes.md").write_text("# my notes\n")
    shutil.copy(run_copy / "ckpt.pt", run_copy / "renamed.jsonl")
    shutil.copy(run_copy / "ckpt.pt", run_copy / "best.html")
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    flags = [a.format(run=run_copy) for a in argv]
    assert main([*flags, f"--out_dir={run_copy}", "--device=cpu", "--num_samples=1", "--steps=2", "--length=8"]
                if argv[0] == "sample" else [*flags, f"--out_dir={run_copy}", "--device=cpu", "--num_batches=1"]) == 1
    assert "--" in one_error(capsys)
    after = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    assert after == before


def test_outputs_of_their_own_kind_are_replaced(run_copy, capsys):
    out = run_copy / "samples.jsonl"
    out.write_text('"old"\n')
    assert main(["sample", f"--out_dir={run_copy}", "--device=cpu", "--num_samples=1", "--steps=2", "--length=8",
                 f"--output={out}"]) == 0
    assert out.read_text() != '"old"\n'


@pytest.mark.parametrize("name,content,ok", [
    ("new.json", None, True),
    ("old.json", b'{"a": 1}', True),
    ("results", b"x", True),
    ("x.pt", None, False),
    ("model.safetensors", None, False),
    ("meta.json", None, False),
    ("old.json", b"PK\x03\x04rest", False),
    ("old.json", b"\x80\x02}q", False),
    ("old.json", b"abc\x00def", False),
    ("old.csv", b"a,b\n", False),
])
def test_check_output_path_rules(tmp_path, name, content, ok):
    target = tmp_path / name
    if content is not None:
        target.write_bytes(content)
    if ok:
        check_output_path(target, "--json")
    else:
        with pytest.raises(UserError) as e:
            check_output_path(target, "--json")
        assert "\n" not in str(e.value) and "--json" in str(e.value)


def test_png_over_png_is_fine_but_not_over_a_gif(tmp_path):
    png, gif = tmp_path / "a.png", tmp_path / "b.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    gif.write_bytes(b"GIF89a")
    check_output_path(png, "--png", (".png",), binary_ok=("a PNG image",))
    with pytest.raises(UserError):
        check_output_path(gif, "--png", (".png",), binary_ok=("a PNG image",))


def test_prepare_never_replaces_a_folder_that_is_not_a_dataset(run_copy, tmp_path, capsys):
    src = tmp_path / "text.txt"
    src.write_text("hello world, a short text to prepare. " * 50)
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    assert main(["prepare", "text", f"--input={src}", f"--name={run_copy.name}", f"--data_dir={run_copy.parent}"]) == 1
    assert "not a dataset's" in one_error(capsys)
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before
    assert main(["prepare", "text", f"--input={src}", "--name=d", f"--data_dir={tmp_path}"]) == 0  # a dataset:
    assert main(["prepare", "text", f"--input={src}", "--name=d", f"--data_dir={tmp_path}"]) == 0  # replaced
