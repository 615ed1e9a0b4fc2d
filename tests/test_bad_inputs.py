"""The bad-input matrix (benchmarks/bad_inputs.py), and the warnings and notes of issue 10 that it does not see."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from nanodlm.cli import main
from nanodlm.diffusion.diagnostics import meaning
from nanodlm.evaluation.judge import low_entropy_note

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bad_inputs.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bad_inputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bad_input_matrix(tmp_path: Path) -> None:
    summary = load_script().run_matrix(tmp_path / "world")
    failed = [(r["name"], r["problems"], r["message"], r["traceback"][-600:])
              for r in summary["results"] if not r["ok"]]
    assert not failed
    assert summary["cases"] >= 110
    assert summary["tracebacks"] == summary["silent_acceptances"] == summary["changed_files"] == 0
    assert summary["created_files"] == 0
    kinds = {r["argv"][0] for r in summary["results"]}
    assert {"train", "prepare", "sample", "eval", "judge", "bench"} <= kinds


def test_matrix_detects_what_it_claims_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks themselves can fail: a traceback, a silent acceptance and a changed file are each caught."""
    bad = load_script()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"1")

    def fake_main(argv):
        if argv[0] == "boom":
            raise RuntimeError("boom")
        if argv[0] == "create":  # a failing command that leaves a folder and a file behind
            (tmp_path / "new").mkdir()
            (tmp_path / "new" / "x.json").write_text("{}")
            print("error: created", file=sys.stderr)
            return 1
        if argv[0] == "touch":
            (tmp_path / "d" / "x.bin").write_bytes(b"2")
            print("error: touched", file=sys.stderr)
            return 1
        if argv[0] == "late":  # a web request answered 200, then an error event
            print("late error: boom", file=sys.stderr)
        if argv[0] == "chatty":
            print("warning: ignored --x=1: not read", file=sys.stderr)
        return 0

    monkeypatch.setattr(bad, "cli_main", fake_main)
    assert bad.run_case(bad.Case("t", ["boom"]), tmp_path)["problems"] == ["traceback"]
    assert bad.run_case(bad.Case("s", ["accept"]), tmp_path)["problems"] == ["silently accepted"]
    assert bad.run_case(bad.Case("w", ["accept"], expect="warn"), tmp_path)["problems"] == ["no warning"]
    assert bad.run_case(bad.Case("c", ["touch"]), tmp_path)["problems"] == ["changed d/x.bin"]
    assert bad.run_case(bad.Case("n", ["create"]), tmp_path)["problems"] == ["created new, new/x.json"]
    assert bad.run_case(bad.Case("o", ["accept"], expect="ok"), tmp_path)["ok"]
    assert bad.run_case(bad.Case("o", ["chatty"], expect="ok"), tmp_path)["problems"][0].startswith("not clean")
    assert "error after a 200" in bad.run_case(bad.Case("l", ["late"], expect="warn"), tmp_path)["problems"]


def test_judge_warns_about_low_entropy_samples() -> None:
    real = {"judge_ppl": 4.0, "entropy_bits": 4.2}
    assert "entropy" in low_entropy_note({"judge_ppl": 3.0, "entropy_bits": 3.5}, real)
    assert low_entropy_note({"judge_ppl": 3.0, "entropy_bits": 4.19}, real) is None  # same entropy: a real win
    assert low_entropy_note({"judge_ppl": 5.0, "entropy_bits": 3.5}, real) is None  # worse anyway


def test_eval_explains_its_numbers(tiny_runs, capsys) -> None:
    for key in ("masked_ce@15", "masked_acc@50", "p_mask@masked", "detect_rate", "false_alarm", "copy_acc",
                "unigram_entropy", "bits_per_char"):
        assert meaning(key), key
    assert main(["eval", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--num_batches=1"]) == 0
    out, err = capsys.readouterr()
    assert "scoring" in err and "windows" in err  # says what it is doing before the minutes of work
    assert "ignores context" in " ".join(out.split())  # the meaning column
    assert main(["eval", "--help"]) == 0
    assert "# the training run to evaluate" in capsys.readouterr().out


def test_sample_verbose_says_counts_are_summed(tiny_runs, capsys) -> None:
    assert main(["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--num_samples=2", "--length=8",
                 "--steps=2", "--verbose"]) == 0
    assert "all 2 samples together" in capsys.readouterr().err


def test_sample_output_written_and_threads(tiny_runs, tmp_path: Path, capsys) -> None:
    import torch

    out = tmp_path / "s.jsonl"
    assert main(["sample", f"--out_dir={tiny_runs['gpt2']}", "--device=cpu", "--num_samples=2", "--max_new_tokens=3",
                 f"--output={out}", "--threads=1"]) == 0
    assert len(out.read_text().splitlines()) == 2 and torch.get_num_threads() == 1


def test_train_help_describes_every_key(capsys) -> None:
    assert main(["train", "--help"]) == 0
    keys = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  --")]
    assert len(keys) > 40 and all("  # " in line for line in keys), [k for k in keys if "  # " not in k]


def test_bench_quality_uses_prepared_data_and_names_the_right_command(tmp_path: Path, data_dir: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import urllib.error
    import urllib.request

    from nanodlm.bench.runs import ensure_dataset
    from nanodlm.core.errors import UserError

    monkeypatch.chdir(tmp_path)
    shutil.copytree(Path(data_dir) / "tiny", tmp_path / "data" / "tiny")  # prepared before, in ./data
    meta = ensure_dataset(tmp_path / "work" / "data", "tiny")
    assert meta == json.loads((tmp_path / "data" / "tiny" / "meta.json").read_text())
    assert (tmp_path / "work" / "data" / "tiny" / "train.bin").is_file()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.delenv("NANODLM_DATA_MIRROR", raising=False)
    monkeypatch.setenv("NANODLM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(UserError) as e:
        ensure_dataset(tmp_path / "work" / "data", "shakespeare_char")
    assert "nanodlm prepare shakespeare_char --input=FILE" in str(e.value) and "pass --input" not in str(e.value)
