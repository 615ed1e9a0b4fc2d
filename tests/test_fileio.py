"""Files read back (nanodlm/core/fileio.py): one JSON and one JSON-lines reader, each problem a one-line error that
names the file; text without NUL; and no other reader of JSON in the project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nanodlm.bench import runs as bench_runs
from nanodlm.core.errors import UserError
from nanodlm.core.fileio import decode_text, read_json, read_jsonl
from nanodlm.core.plotting import read_metrics
from nanodlm.data.dataset import load_meta, prepare
from nanodlm.evaluation.judge import load_samples

ROOT = Path(__file__).resolve().parents[1]
# the only places that turn JSON text into values: the readers themselves, and the HTTP body (a 400, not a file)
JSON_PARSERS = {"nanodlm/core/fileio.py", "nanodlm/web/request.py"}


def test_no_json_is_read_back_outside_the_one_reader() -> None:
    found = []
    for path in [*ROOT.glob("nanodlm/**/*.py"), *ROOT.glob("benchmarks/*.py")]:
        rel = str(path.relative_to(ROOT))
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bjson\.loads?\(", line) and rel not in JSON_PARSERS and not line.lstrip().startswith(
                    ("#", '"', "'")):
                found.append(f"{rel}:{n}")
    assert not found, f"read JSON with fileio.read_json / read_jsonl (a one-line error naming the file): {found}"


@pytest.mark.parametrize("content, says", [
    ('{"iter_num": 3', "not valid JSON"),  # truncated by a crash or a full disk
    ("[1, 2]", "holds a list, not a JSON dict"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{\x00}", "NUL"),
])
def test_read_json_is_one_line_naming_the_file(tmp_path: Path, content: str | bytes, says: str) -> None:
    path = tmp_path / "ckpt.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=says) as e:
        read_json(path, "run sidecar", dict, "; delete it")
    assert str(path) in str(e.value) and "\n" not in str(e.value) and str(e.value).endswith("; delete it")
    with pytest.raises(UserError, match="not found"):
        read_json(tmp_path / "nope.json", "run sidecar")


def test_read_jsonl_names_the_broken_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iter": 0}\n\n{"iter": 1}\n{"iter": 2, "lo')
    with pytest.raises(UserError, match=r"metrics.jsonl line 4 is not valid JSON"):
        read_jsonl(path, "metrics log")
    path.write_text('{"iter": 0}\n\n{"iter": 1}\n')
    assert read_jsonl(path, "metrics log") == [{"iter": 0}, {"iter": 1}]


def test_text_with_nul_is_refused_as_utf16_or_binary() -> None:
    assert decode_text("héllo\n".encode(), "x") == "héllo\n"
    with pytest.raises(UserError, match="NUL character"):
        decode_text("hello".encode("utf-16-le"), "input.txt")  # UTF-16 without a byte-order mark


# --- the readers' callers: every file the project reads back ------------------------------------------------

def test_a_cached_run_with_a_truncated_sidecar_or_a_broken_log(tmp_path: Path) -> None:
    run = tmp_path / "ar-1234abcd"
    run.mkdir()
    (run / "ckpt.pt").write_bytes(b"weights")
    (run / "ckpt.json").write_text('{"iter_num": 20')  # bench quality's run cache, cut short
    with pytest.raises(UserError, match="run sidecar .*ckpt.json is not valid JSON.*delete it"):
        bench_runs.finished_iters(run)
    (run / "ckpt.json").write_text('{"iter_num": "20"}')
    with pytest.raises(UserError, match="iter_num '20'"):
        bench_runs.finished_iters(run)
    (run / "ckpt.json").write_text('{"iter_num": 20}')
    assert bench_runs.finished_iters(run) == 20
    (run / "metrics.jsonl").write_text('{"kind": "step", "ms": 5.0}\n{"kind": "st')
    with pytest.raises(UserError, match="metrics log .*metrics.jsonl line 2"):
        read_metrics(run / "metrics.jsonl")
    with pytest.raises(UserError, match="metrics.jsonl line 2"):
        bench_runs.finish_run({"out_dir": str(run), "cfg": type("C", (), {"max_iters": 20})(), "done": True})


def test_dataset_meta_and_samples_files(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("hello world " * 200)
    prepare("text", input_path=str(src), data_dir=str(tmp_path / "data"), out_name="d")
    (tmp_path / "data" / "d" / "meta.json").write_text('{"vocab_size": ')
    with pytest.raises(UserError, match="dataset meta .*meta.json is not valid JSON.*prepare text"):
        load_meta(str(tmp_path / "data"), "d")
    samples = tmp_path / "s.jsonl"
    samples.write_text('"one"\n"tw')
    with pytest.raises(UserError, match="s.jsonl line 2"):
        load_samples(samples)


@pytest.mark.parametrize("raw", ["hello world, ".encode("utf-16-le") * 100, b"hello\x00world " * 100])
def test_prepare_refuses_utf16_without_bom_and_nul_bytes(tmp_path: Path, raw: bytes) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(raw)
    with pytest.raises(UserError, match="NUL character"):
        prepare("text", input_path=str(src), data_dir=str(tmp_path / "data"), out_name="x")
    assert not (tmp_path / "data" / "x").exists()
