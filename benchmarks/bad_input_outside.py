"""The classes of bad input that issue 27's outside matrix found, as cases for ``bad_inputs.py`` (which imports
this). Each class has several members, so a fix of one case does not pass the class:

- **files read back** (a run cache's sidecar, a metrics log, a dataset's meta.json, a results file): one reader
  (``fileio.read_json`` / ``read_jsonl``), a one-line error naming the file;
- **text that is not text**: UTF-16 without a byte-order mark, NUL bytes, in a corpus or a prompt file;
- **sizes that cannot fit**: a draft length of block_size or more, at training and at sampling;
- **settings given and not read** (``sampling/settings.py``): warned about once, whatever their value;
- **a resume under another loss**: the best val loss of the other loss is not kept (warned);
- **inputs that can be checked before the work**: a bench parallel dev file of other runs.

- **the web demo's requests** (``POST`` cases, answered by an in-process server of the world's runs): every field
  of its JSON type, a sampler a panel cannot use refused up front (a 400, not a 200 and then an ``error`` event),
  a setting given and not read a ``warning`` event, and the README's pairings racing (``ok`` cases).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

from nanodlm.bench.quality import bench_quality
from nanodlm.core.errors import UserError
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import train
from nanodlm.web.serve import ServeConfig, Server, load_server

SERVERS: dict[str, Server] = {}  # the world's two pairings, loaded once: "diffusion" and "tidar" main models


def build(root: Path, w: dict[str, str], tiny: dict[str, Any]) -> dict[str, str]:
    """A TiDAR run, bench quality's run cache (trained once) and damaged copies of it, odd text files."""
    tidar = root / "tidar"
    train(build_config(TrainConfig, {**tiny, "data_dir": w["data"], "out_dir": str(tidar), "model_type": "gpt2",
                                     "objective": "tidar", "draft_len": 4, "max_iters": 2}))
    cache = root / "qcache"
    with contextlib.redirect_stdout(io.StringIO()):
        bench_quality(["--preset=smoke", f"--work_dir={cache}", "--dataset=tiny", "--train_only=true",
                       "--device=cpu", "--progress=false", "--threads=1"])
    runs = sorted((cache / "runs").iterdir())
    damaged = {}
    for name, run, file, cut in (("qcache_sidecar", runs[0], "ckpt.json", 40), ("qcache_metrics", runs[-1],
                                                                                  "metrics.jsonl", -7)):
        copy = root / name
        shutil.copytree(cache, copy)
        path = copy / "runs" / run.name / file
        path.write_bytes(path.read_bytes()[:cut])  # cut short, as a crash or a full disk leaves it
        damaged[name] = str(copy)
    shutil.copytree(w["dm"], root / "dm_repair")  # resumed under another objective
    (root / "utf16.txt").write_bytes(("To be, or not to be. " * 200).encode("utf-16-le"))
    (root / "nul.txt").write_bytes(b"To be, or not\x00 to be. " * 200)
    (root / "nul_prompt.txt").write_bytes(b"the\x00cat")
    other = {"args": {"split": "dev", "seeds": "1"}, "ar": {"judge_ppl": 5.0, "entropy_bits": 4.0},
             "curves": [{"run": str(root / "elsewhere"), "sampler": "confidence", "steps": 8, "schedule": "cosine",
                         "semi_ar_block": 0, "approx_cache": "none",
                         "points": [{"tau": 0.0, "judge_ppl": 6.0, "entropy_bits": 4.0, "speedup_b1": 0.5,
                                     "split": "dev"}]}]}
    (root / "dev-other.json").write_text(json.dumps(other))
    (root / "dev-cut.json").write_text(json.dumps(other)[:40])
    shutil.copytree(Path(w["data"]) / "tiny", Path(w["data"]) / "meta_cut")
    meta = Path(w["data"]) / "meta_cut" / "meta.json"
    meta.write_bytes(meta.read_bytes()[:30])
    SERVERS.clear()
    SERVERS.update({name: load_server(ServeConfig(out_dir=main, ar_out_dir=w["ar"], ckpt="last", device="cpu"))
                    for name, main in (("diffusion", w["dm"]), ("tidar", str(tidar)))})
    return {"tidar": str(tidar), "qcache": str(cache), **damaged, "dm_repair": str(root / "dm_repair")}


def post(argv: list[str]) -> int:
    """A ``["POST", server, body]`` case as the web demo answers it, in the CLI's terms: a 400 is ``error: ...`` and
    exit 1; a 200 prints each ``warning`` event's lines as ``warning: ignored ...``, runs the jobs, and an ``error``
    event after the 200 is ``late error: ...`` with exit 0 (the matrix counts it as a silent acceptance)."""
    import sys
    import threading

    server = SERVERS[argv[1]]
    try:
        jobs = server.prepare(argv[2].encode())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for _, job in jobs:
        for line in job.warnings:
            print(f"warning: ignored {line}", file=sys.stderr)
    events, ended = [], threading.Event()

    def emit(event: str | None, data: dict[str, Any]) -> None:
        events.append((event, data))
        if event is None:
            ended.set()

    assert server.slots.acquire(blocking=False)
    server.start(jobs, emit, threading.Event())
    ended.wait(120)
    for event, data in events:
        if event == "error":
            print(f"late error: {data['error']}", file=sys.stderr)
    return 0


def cases(w: dict[str, str], T: list[str], Case: type) -> list[Any]:
    c, root, data = Case, w["root"], w["data"]
    new = f"--out_dir={root}/new27"
    S = ["--device=cpu", "--num_samples=1"]
    ar = [f"--out_dir={w['ar']}", *S, "--max_new_tokens=4"]
    dm = [f"--out_dir={w['dm']}", *S, "--steps=2", "--length=8"]
    tidar = [f"--out_dir={w['tidar']}", "--ckpt=last", *S, "--max_new_tokens=4", "--sampler=speculative"]
    quality = ["bench", "quality", "--preset=smoke", "--dataset=tiny", "--train_only=true", "--device=cpu",
               "--progress=false", "--threads=1"]
    prep = ["prepare", "text", "--name=x27", f"--data_dir={data}"]
    return [
        # --- files read back: one reader, one line naming the file
        c("bench quality cache, truncated ckpt.json", [*quality, f"--work_dir={w['qcache_sidecar']}"],
          must_say="ckpt.json"),
        c("bench quality cache, broken metrics.jsonl", [*quality, f"--work_dir={w['qcache_metrics']}"],
          must_say="metrics.jsonl line"),
        c("train dataset with a truncated meta.json", ["train", *T, new, "--dataset=meta_cut"], must_say="meta.json"),
        c("bench parallel --choose_from truncated", ["bench", "parallel", f"--runs={w['dm']}", f"--judge={w['ar']}",
                                                    f"--ar_out_dir={w['ar']}", f"--choose_from={root}/dev-cut.json"],
          must_say="--choose_from"),
        # --- text that is not text
        c("prepare UTF-16 without a BOM", [*prep, f"--input={root}/utf16.txt"], must_say="NUL"),
        c("prepare text with NUL bytes", [*prep, f"--input={root}/nul.txt"], must_say="NUL"),
        c("sample prompt file with NUL", ["sample", *ar, f"--start=FILE:{root}/nul_prompt.txt"], must_say="NUL"),
        # --- sizes that cannot fit
        c("train draft_len = block_size", ["train", *T, new, "--objective=tidar", "--draft_len=16"],
          must_say="draft_len"),
        c("train draft_len > block_size", ["train", *T, new, "--objective=tidar", "--draft_len=40"],
          must_say="draft_len"),
        c("sample draft_len=1000", ["sample", *tidar, "--draft_len=1000"], must_say="--draft_len"),
        c("sample speculative on a plain gpt2", ["sample", *ar, "--sampler=speculative"], must_say="TiDAR"),
        c("sample rolling_cache, learned positions", ["sample", *ar, "--rolling_cache=True"], must_say="pos_emb=rope"),
        # --- settings given and not read: warned whatever their value
        c("sample sampler=remask (the default) on gpt2", ["sample", *ar, "--sampler=remask"], expect="warn",
          must_say="--sampler=remask"),
        c("sample steps on a TiDAR model", ["sample", *tidar, "--steps=8"], expect="warn", must_say="--steps"),
        c("sample use_kv_cache=False with speculative", ["sample", *tidar, "--use_kv_cache=False"], expect="warn",
          must_say="--use_kv_cache"),
        c("sample show when piped", ["sample", *dm, "--show"], expect="warn", must_say="--show"),
        c("sample rolling_cache on diffusion", ["sample", *dm, "--rolling_cache=True"], expect="warn",
          must_say="--rolling_cache"),
        c("sample max_new_tokens=500 on diffusion", ["sample", *dm, "--max_new_tokens=500"], expect="warn",
          must_say="--max_new_tokens"),
        # --- a resume under another loss
        c("resume an mdlm run with objective=repair", ["train", "--init_from=resume", f"--out_dir={w['dm_repair']}",
                                                       "--max_iters=3", "--objective=repair"],
          expect="warn", must_say="--objective=repair", owns=w["dm_repair"]),
        # --- the web demo: JSON types, what cannot run a 400, what is not read a warning, the README's pairings
        *[c(f"POST {server} {body}", ["POST", server, body], expect=expect, must_say=say)
          for server, body, expect, say in (
              ("tidar", '{"max_new_tokens": 99999999999}', "error", "limit"),
              ("diffusion", '{"length": "16"}', "error", "length"),
              ("diffusion", '{"race": "yes"}', "error", "race"),
              ("tidar", '{"predraft": "no"}', "error", "predraft"),
              ("tidar", '{"rolling_cache": "yes"}', "error", "rolling_cache"),
              ("diffusion", '{"model": "ar", "rolling_cache": true}', "error", "pos_emb=rope"),
              ("tidar", '{"model": "ar", "sampler": "speculative"}', "error", "TiDAR"),
              ("diffusion", '{"race": true, "sampler": "ar"}', "error", "AR models"),
              ("tidar", '{"race": true, "sampler": "remask"}', "error", "diffusion sampler"),
              ("diffusion", '{"model": "ar", "sampler": "remask", "num_samples": 1}', "warn", "sampler=remask"),
              ("tidar", '{"steps": 8, "num_samples": 1}', "warn", "steps=8"),
              ("diffusion", '{"race": true, "max_new_tokens": 30, "steps": 2, "num_samples": 1}', "warn",
               "max_new_tokens=30"),
              ("diffusion", '{"model": "ar", "num_samples": 1}', "ok", ""),
              ("tidar", '{"race": true, "sampler": "speculative", "num_samples": 1}', "ok", ""),
              ("tidar", '{"race": true, "sampler": "speculative", "length": 16, "temperature": 1, "seed": 1337, '
                        '"num_samples": 1, "start": "the"}', "ok", ""),  # the page's defaults
              ("diffusion", '{"race": true, "sampler": "remask", "steps": 4, "num_samples": 1}', "ok", ""),
          )],
        # --- checked before the work
        c("bench parallel --choose_from of other runs", ["bench", "parallel", f"--runs={w['dm']}", f"--judge={w['ar']}",
                                                         f"--ar_out_dir={w['ar']}", "--split=test", "--seeds=5",
                                                         f"--choose_from={root}/dev-other.json"],
          must_say="no curves for"),
    ]
