"""The bad-input matrix (issue 10): every bad input a one-line error, nothing it did not own changed.

    python benchmarks/bad_inputs.py [--work_dir=DIR] [--json=FILE] [-v]

Builds a scratch world (a tiny char dataset, a second dataset of another vocabulary, tiny gpt2 and diffusion
runs, a tampered and a truncated checkpoint, odd prompt files), then runs each case through ``nanodlm.cli.main``
in this process and checks:

- no traceback: the command returns (an exception escaping ``main`` counts as a traceback);
- no silent acceptance: an ``error`` case exits non-zero with exactly one ``error: ...`` line on stderr, a
  ``warn`` case (a setting the model ignores) exits 0 with a ``warning:`` line;
- no collateral damage: the bytes of every dataset and checkpoint file (``*.bin``, ``*.pt``, ``*.json``,
  ``metrics.jsonl``) are unchanged after a failing command, and a failing command leaves no new file or folder
  behind (an out_dir it made, a half-written output).

The cases of issue 19's classes (corrupted datasets, tampered checkpoints, NaN and inf, outputs over run files, ...)
live in ``bad_input_classes.py`` beside this file, issue 27's (files read back, text that is not text, sizes that
cannot fit, settings given and not read, ...) in ``bad_input_outside.py``.

Exit status 0 when every case passes. ``tests/test_bad_inputs.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bad_input_classes  # noqa: E402
import bad_input_outside  # noqa: E402
import torch  # noqa: E402

from nanodlm.cli import main as cli_main  # noqa: E402
from nanodlm.data.dataset import prepare  # noqa: E402
from nanodlm.runs.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from nanodlm.training.config import TrainConfig, build_config  # noqa: E402
from nanodlm.training.train import train  # noqa: E402

PROTECTED = (".bin", ".pt", ".json", ".jsonl")  # dataset and checkpoint files a failing command must not touch
TINY = dict(dataset="tiny", device="cpu", dtype="float32", n_layer=1, n_head=2, n_embd=32, block_size=16,
            batch_size=4, eval_iters=1, eval_interval=1000, warmup_iters=0, progress=False, plot=False,
            compile=False, learning_rate=1e-3, lr_decay_iters=100)


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str = "error"  # error | warn | ok (a case that used to fail: it must now pass without a word)
    must_say: str = ""  # a word the message must contain (the key or the fix)
    owns: str = ""  # a folder the command writes as its own (a resumed run): its changes are not collateral


def build_world(root: Path) -> dict[str, str]:
    """Datasets, runs and files the cases point at; returns the names the case table formats in."""
    words = "the a to of and in is it you that he was for on are with as his they be at one have this".split()
    text = "\n".join(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(3 + i % 9)).capitalize() + "."
                     for i in range(3000))
    (root / "corpus.txt").write_text(text)
    (root / "digits.txt").write_text("0123456789 " * 400)
    (root / "short.txt").write_text("To be, or not to be, that is the question.")
    data = root / "data"
    prepare("text", input_path=str(root / "corpus.txt"), data_dir=str(data), out_name="tiny")
    prepare("text", input_path=str(root / "digits.txt"), data_dir=str(data), out_name="digits")
    prepare("text", input_path=str(root / "short.txt"), data_dir=str(data), out_name="short")
    runs = {}
    for model_type in ("gpt2", "diffusion"):
        runs[model_type] = str(root / model_type)
        extra = {"objective": "mdlm"} if model_type == "diffusion" else {}
        train(build_config(TrainConfig, {**TINY, "data_dir": str(data), "out_dir": runs[model_type],
                                         "model_type": model_type, "max_iters": 2, **extra}))
    tampered = root / "tampered"
    tampered.mkdir()
    ckpt = load_checkpoint(Path(runs["gpt2"]) / "ckpt.pt")
    ckpt["meta"]["model_args"]["n_layer"] = 3
    save_checkpoint(tampered / "ckpt.pt", ckpt)
    truncated = root / "truncated"
    truncated.mkdir()
    (truncated / "ckpt.pt").write_bytes((Path(runs["gpt2"]) / "ckpt.pt").read_bytes()[:5000])
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (root / "code.py").write_text("import os\nos.system('echo owned')\n")
    (root / "a_file").write_text("not a folder")
    (root / "samples.jsonl").write_text('"the cat"\n"a dog"\n')
    w = {"root": str(root), "data": str(data), "ar": runs["gpt2"], "dm": runs["diffusion"],
         "tampered": str(tampered), "truncated": str(truncated), "latin1": str(root / "latin1.txt"),
         "code": str(root / "code.py"), "file": str(root / "a_file"), "samples": str(root / "samples.jsonl")}
    return {**w, **bad_input_classes.build(root, w), **bad_input_outside.build(root, w, TINY)}


def cases(w: dict[str, str]) -> list[Case]:
    T = [f"--{k}={v}" for k, v in {**TINY, "data_dir": w["data"], "max_iters": 1}.items()]
    new = f"--out_dir={w['root']}/new"
    resume = ["train", "--init_from=resume", "--max_iters=3"]
    S = ["--device=cpu", "--num_samples=1"]
    ar, dm = [f"--out_dir={w['ar']}", *S, "--max_new_tokens=4"], [f"--out_dir={w['dm']}", *S, "--steps=2",
                                                                   "--length=8"]
    c = Case
    return [
        # --- training configs
        c("train learning_rate<0", ["train", *T, new, "--learning_rate=-1"], must_say="learning_rate"),
        c("train beta2>=1", ["train", *T, new, "--beta2=2"], must_say="beta2"),
        c("train weight_decay<0", ["train", *T, new, "--weight_decay=-1"], must_say="weight_decay"),
        c("train dropout>=1", ["train", *T, new, "--dropout=1.5"], must_say="dropout"),
        c("train n_layer=0", ["train", *T, new, "--n_layer=0"], must_say="n_layer"),
        c("train n_embd % n_head", ["train", *T, new, "--n_head=3"], must_say="n_head"),
        c("train bad model_type", ["train", *T, new, "--model_type=rnn"], must_say="model_type"),
        c("train unknown key", ["train", *T, new, "--n_layers=2"], must_say="n_layers"),
        c("train int from text", ["train", *T, new, "--max_iters=lots"], must_say="max_iters"),
        c("train bad device", ["train", *T, new, "--device=tpu"], must_say="device"),
        c("train diffusion_block on gpt2", ["train", *T, new, "--diffusion_block=4"], must_say="diffusion_block"),
        c("train threads<0", ["train", *T, new, "--threads=-2"], must_say="threads"),
        c("train missing config file", ["train", f"{w['root']}/nope.py", *T, new], must_say="not found"),
        c("train config file with code", ["train", w["code"], *T, new], must_say="literal"),
        c("train missing dataset", ["train", *T, new, "--dataset=nope"], must_say="prepare"),
        c("train block_size > corpus", ["train", *T, new, "--dataset=short", "--block_size=64"],
          must_say="block_size"),
        c("train out_dir under a file", ["train", *T, f"--out_dir={w['file']}/run"], must_say="--out_dir"),
        # --- runs and checkpoints
        c("scratch over a trained run", ["train", *T, f"--out_dir={w['ar']}"], must_say="--overwrite=True"),
        c("resume model_type flip", [*resume, f"--out_dir={w['dm']}", "--model_type=gpt2"], must_say="model_type"),
        c("resume n_layer change", [*resume, f"--out_dir={w['ar']}", "--n_layer=2"], must_say="n_layer"),
        c("resume block_size change", [*resume, f"--out_dir={w['ar']}", "--block_size=8"], must_say="block_size"),
        c("resume another vocabulary", [*resume, f"--out_dir={w['ar']}", "--dataset=digits"], must_say="vocab"),
        c("resume without checkpoint", [*resume, f"--out_dir={w['root']}/empty"], must_say="no checkpoint"),
        c("resume tampered checkpoint", [*resume, f"--out_dir={w['tampered']}"], must_say="metadata"),
        c("sample tampered checkpoint", ["sample", f"--out_dir={w['tampered']}", *S], must_say="metadata"),
        c("sample truncated checkpoint", ["sample", f"--out_dir={w['truncated']}", *S], must_say="corrupt"),
        c("sample missing out_dir", ["sample", f"--out_dir={w['root']}/nope", *S], must_say="out_dir"),
        c("sample bad ckpt", ["sample", *ar, "--ckpt=newest"], must_say="ckpt"),
        # --- data
        c("prepare into /proc", ["prepare", "text", f"--input={w['root']}/corpus.txt", "--name=x",
                                 "--data_dir=/proc/nanodlm-x"], must_say="--data_dir"),
        c("prepare under a file", ["prepare", "text", f"--input={w['root']}/corpus.txt", "--name=x",
                                   f"--data_dir={w['file']}/d"], must_say="--data_dir"),
        c("prepare text without input", ["prepare", "text", "--name=x", f"--data_dir={w['data']}"],
          must_say="--input"),
        c("prepare missing input", ["prepare", "text", "--input=/nonexistent.txt", "--name=x",
                                    f"--data_dir={w['data']}"], must_say="--input"),
        c("prepare non-UTF-8 input", ["prepare", "text", f"--input={w['latin1']}", "--name=x",
                                      f"--data_dir={w['data']}"], must_say="UTF-8"),
        c("prepare input is a folder", ["prepare", "text", f"--input={w['data']}", "--name=x",
                                        f"--data_dir={w['data']}"], must_say="folder"),
        c("prepare name with a slash", ["prepare", "text", f"--input={w['root']}/corpus.txt", "--name=../x",
                                        f"--data_dir={w['data']}"], must_say="--name"),
        c("prepare val_fraction>1", ["prepare", "text", f"--input={w['root']}/corpus.txt", "--name=x",
                                     f"--data_dir={w['data']}", "--val_fraction=1.5"], must_say="val_fraction"),
        # --- sampling options and prompts
        c("sample temperature<0 (gpt2)", ["sample", *ar, "--temperature=-1"], must_say="temperature"),
        c("sample temperature<0 (diffusion)", ["sample", *dm, "--temperature=-1"], must_say="temperature"),
        c("sample top_p>1", ["sample", *ar, "--top_p=1.5"], must_say="top_p"),
        c("sample top_p=0", ["sample", *ar, "--top_p=0"], must_say="top_p"),
        c("sample top_k<0", ["sample", *ar, "--top_k=-1"], must_say="top_k"),
        c("sample bad schedule", ["sample", *dm, "--schedule=bogus"], must_say="schedule"),
        c("sample bad order", ["sample", *dm, "--order=bogus"], must_say="order"),
        c("sample new_block=0", ["sample", *dm, "--new_block=0"], must_say="new_block"),
        c("sample remask_frac>1", ["sample", *dm, "--remask_frac=5"], must_say="remask_frac"),
        c("sample length=0", ["sample", *dm, "--length=0"], must_say="length"),
        c("sample num_samples=0", ["sample", *ar, "--num_samples=0"], must_say="num_samples"),
        c("sample prompt file is a folder", ["sample", *ar, f"--start=FILE:{w['data']}"], must_say="directory"),
        c("sample prompt file not UTF-8", ["sample", *ar, f"--start=FILE:{w['latin1']}"], must_say="UTF-8"),
        c("sample output in missing folder", ["sample", *ar, f"--output={w['root']}/no/dir/out.jsonl"],
          must_say="--output"),
        c("sample infill on gpt2", ["sample", *ar, "--infill=the ___ one"], must_say="diffusion"),
        c("sample suffix on gpt2", ["sample", *ar, "--suffix=end"], must_say="diffusion"),
        c("sample infill without placeholder", ["sample", *dm, "--infill=the one"], must_say="placeholder"),
        c("sample sampler on gpt2", ["sample", *ar, "--sampler=confidence"], expect="warn", must_say="--sampler"),
        c("sample show on gpt2", ["sample", *ar, "--show"], expect="warn", must_say="--show"),
        c("sample max_new_tokens on diffusion", ["sample", *dm, "--max_new_tokens=9"], expect="warn",
          must_say="--max_new_tokens"),
        c("sample noise with ancestral", ["sample", *dm, "--sampler=ancestral", "--noise=0.5"], expect="warn",
          must_say="--noise"),
        # --- eval, judge, bench
        c("eval bad split", ["eval", f"--out_dir={w['ar']}", "--device=cpu", "--split=test"], must_say="split"),
        c("eval num_batches=0", ["eval", f"--out_dir={w['ar']}", "--device=cpu", "--num_batches=0"],
          must_say="num_batches"),
        c("eval another vocabulary", ["eval", f"--out_dir={w['ar']}", "--device=cpu", "--dataset=digits",
                                      f"--data_dir={w['data']}"], must_say="vocabulary"),
        c("eval missing out_dir", ["eval", f"--out_dir={w['root']}/nope", "--device=cpu"], must_say="out_dir"),
        c("judge with a diffusion judge", ["judge", f"--judge={w['dm']}", f"--samples={w['samples']}",
                                           "--device=cpu"], must_say="autoregressive"),
        c("judge missing judge", ["judge", f"--judge={w['root']}/nope", f"--samples={w['samples']}"],
          must_say="--judge"),
        c("judge missing samples file", ["judge", f"--judge={w['ar']}", f"--samples={w['root']}/nope.jsonl",
                                         "--device=cpu"], must_say="nope.jsonl"),
        c("bench sample swapped dirs", ["bench", "sample", f"--out_dir_ar={w['dm']}", f"--out_dir_diffusion={w['ar']}",
                                        "--device=cpu", "--num_samples=1", "--length=8", "--steps=2",
                                        "--repeats=1"], must_say="swapped"),
        c("bench unknown subcommand", ["bench", "speed"], must_say="bench"),
        c("bench quality unknown key", ["bench", "quality", "--input=x.txt", f"--work_dir={w['root']}/bench"],
          must_say="input"),
        *bad_input_classes.cases(w, T, Case),
        *bad_input_outside.cases(w, T, Case),
    ]


def fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every dataset and checkpoint file under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in PROTECTED:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def listing(root: Path) -> set[str]:
    """Every file and folder under root (bytecode caches aside)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def run_case(case: Case, root: Path) -> dict[str, object]:
    before, paths_before = fingerprint(root), listing(root)
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    rc: int | None
    tb = ""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = (bad_input_outside.post if case.argv[0] == "POST" else cli_main)(case.argv)
        except SystemExit as e:  # argparse errors exit 2 with a usage line: a clear error, not a traceback
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - an escaped exception is exactly what the matrix looks for
            rc, tb = None, traceback.format_exc()
    torch.set_num_threads(1)
    stderr = err.getvalue()
    owned = str(Path(case.owns).resolve().relative_to(root)) + "/" if case.owns else None
    changed = sorted(k for k, v in before.items() if fingerprint(root).get(k) != v
                     and not (owned and k.startswith(owned)))
    created = sorted(listing(root) - paths_before) if rc != 0 else []  # a failing command leaves nothing behind
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ") or ": error: " in line]
    problems = []
    if tb or "Traceback" in stderr:
        problems.append("traceback")
    elif case.expect == "error":
        if rc == 0:
            problems.append("silently accepted")
        elif len(errors) != 1 or lines[-1] != errors[0]:
            problems.append("not one error line")
        elif case.must_say.lower() not in errors[0].lower():
            problems.append(f"message does not mention {case.must_say!r}")
    elif case.expect == "ok":
        if rc != 0 or lines:
            problems.append(f"not clean: {(lines or ['exit ' + str(rc)])[0][:120]}")
    elif rc != 0 or not any(line.startswith("warning:") and case.must_say in line for line in lines):
        problems.append("no warning")
    if any(line.startswith("late error:") for line in lines):  # a web request: a 200, then an error event
        problems.append("error after a 200")
    if changed:
        problems.append(f"changed {', '.join(changed)}")
    if created:
        problems.append(f"created {', '.join(created[:5])}")
    return {"name": case.name, "argv": case.argv, "expect": case.expect, "rc": rc, "ok": not problems,
            "problems": problems, "message": (errors or [ln for ln in lines if ln.startswith("warning:")] or [""])[0],
            "traceback": tb, "seconds": round(time.perf_counter() - t0, 3)}


def run_matrix(work_dir: Path | None = None, verbose: bool = False) -> dict[str, object]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="nanodlm-bad-inputs-") as tmp:
        root = Path(work_dir or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(root)  # relative defaults (data/, out/) land in the scratch world, never in the user's folders
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                world = build_world(root)
            results = [run_case(case, root) for case in cases(world)]
        finally:
            os.chdir(cwd)
    summary = {
        "cases": len(results),
        "passed": sum(r["ok"] for r in results),
        "tracebacks": sum("traceback" in r["problems"] for r in results),
        "silent_acceptances": sum(p in ("silently accepted", "no warning") for r in results for p in r["problems"]),
        "changed_files": sum(any(p.startswith("changed") for p in r["problems"]) for r in results),
        "created_files": sum(any(p.startswith("created") for p in r["problems"]) for r in results),
        "results": results,
    }
    if verbose:
        for r in results:
            mark = "ok  " if r["ok"] else "FAIL"
            print(f"{mark} {r['name']:<38} {r['message'][:110]}" + ("" if r["ok"] else f"  <- {r['problems']}"))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=None, help="keep the scratch world here (default: a temp folder)")
    parser.add_argument("--json", default=None, help="write every case and its result here")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = parser.parse_args()
    summary = run_matrix(Path(args.work_dir) if args.work_dir else None, verbose=args.verbose)
    for r in summary["results"]:
        if r["traceback"]:
            print(f"--- {r['name']}\n{r['traceback']}", file=sys.stderr)
    print(f"{summary['cases']} bad inputs: {summary['passed']} passed; {summary['tracebacks']} tracebacks, "
          f"{summary['silent_acceptances']} silent acceptances, {summary['changed_files']} with changed files, "
          f"{summary['created_files']} leaving new files")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if summary["passed"] == summary["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
