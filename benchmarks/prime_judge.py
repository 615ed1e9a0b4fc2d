"""Judge PPL at real entropy for prime and mdlm runs, the fair ruler's way (issue 26), beside the ruler's AR.

The sampling half of ``bench quality --preset=cpu`` (``bench/frontier.py``: ``real_text``, ``sweep``,
``operating_point``), reused on runs trained outside it: the ruler's judge (``judge-e2a0abbc``: configs/judge.py on
the whole train split) and AR (``ar-ecd752d1``) from ``~/.cache/nanodlm/quality/runs``, real dev / test text of
``~/.cache/nanodlm/quality/data``, the preset's seeds (selection 1, 2 on dev; report 1337, 1338, 1339 on test), 32
samples of 256 characters. A diffusion run's knob (prior_weight, the preset's grid) is swept with the ruler's
sampler settings as ``quality-fair-cpu-2026-12-03.json`` records them (remask, 64 steps, cosine), or another
sampler (``NAME:SAMPLER``, e.g. ``prime3-s1337:confidence``: the sub-token confidence sampler); the operating point
is chosen on dev (entropy nearest real dev text's) and the headline is the test curve's PPL at real test text's
entropy. ``forward_passes`` at the operating point: the batch's passes for 256 characters.

    OMP_NUM_THREADS=1 ../shared/bin/cpu-slot python benchmarks/prime_judge.py ar prime3-s1337 mdlm-s1337 \
        --json=benchmarks/prime-judge-cpu-DATE.json

Each entry (``ar``, or a run under ``~/.cache/nanodlm/prime/runs``) is computed once and cached in
``~/.cache/nanodlm/prime/judge/``: a killed job loses only the entry it was on, and a later call with more entries
computes only the new ones. The JSON holds every listed entry that is cached. Its test frontiers as a plot:

    python benchmarks/prime_judge.py plot --json=benchmarks/prime-judge-cpu-DATE.json   # -> the same name, .png
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from nanodlm.bench.frontier import Judge, operating_point, real_text, sweep
from nanodlm.bench.presets import PRESETS
from nanodlm.bench.runs import CKPT
from nanodlm.core.fileio import read_json
from nanodlm.data.dataset import load_meta, open_split
from nanodlm.data.tokenizers import load_tokenizer
from nanodlm.evaluation.protocol import dev_test, plot_frontier
from nanodlm.runs.checkpoint import load_model
from nanodlm.sampling.generate import Prompt, SamplerOptions, generate

REPO = Path(__file__).resolve().parents[1]
FAIR = REPO / "benchmarks" / "quality-fair-cpu-2026-12-03.json"
QUALITY = Path("~/.cache/nanodlm/quality").expanduser()
WORK = Path(os.environ.get("PRIME_WORK", "~/.cache/nanodlm/prime")).expanduser()
P = PRESETS["cpu"]
SEEDS = {"dev": P["selection_seeds"], "test": P["report_seeds"]}
NUM, LENGTH = P["num_samples"], P["length"]
GRIDS = {"temperature": P["temperature"], "prior_weight": P["knob"]["prior_weight"]}  # AR's / diffusion's knob
# the ruler's judge and AR as they stand in the quality work dir (both retrained 2026-12-07 with the 2026-12-03
# configs; the judge's hash moved from 2ff06651 when attn_dropout joined its config): AR is swept again here
JUDGE_DIR, AR_DIR = QUALITY / "runs" / "judge-e2a0abbc", QUALITY / "runs" / "ar-ecd752d1"


def ruler_options(fair: dict[str, Any]) -> SamplerOptions:
    """The diffusion sampler settings the fair ruler used (its JSON's ``config.sampling``), as SamplerOptions."""
    saved = fair["diffusion"]["config"]["sampling"]
    names = {f.name for f in dataclasses.fields(SamplerOptions)}
    return SamplerOptions(**{k: v for k, v in saved.items() if k in names})


def entry(name: str, fair: dict[str, Any], judge: Judge, real: dict[str, Any]) -> dict[str, Any]:
    """One model's frontier and operating point: ``ar`` (temperature swept) or ``RUN[:SAMPLER]`` (prior_weight)."""
    base = ruler_options(fair)
    if name == "ar":
        out_dir, knob, values, prompt, options = (str(AR_DIR), "temperature", GRIDS["temperature"],
                                                  Prompt(max_new_tokens=LENGTH), base)  # as bench quality: one options
    else:
        run, _, sampler = name.partition(":")
        out_dir, knob, values, prompt = str(WORK / "runs" / run), "prior_weight", GRIDS["prior_weight"], \
            Prompt(length=LENGTH)
        options = dataclasses.replace(base, sampler=sampler or base.sampler)
    model, meta, tok = load_model(out_dir, CKPT, "cpu")
    generate(model, tok, dataclasses.replace(options, steps=1), prompt, num_samples=NUM, seed=0)  # warm-up
    print(f"{name} ({out_dir}): sweeping {knob} over {values}", flush=True)
    curves = sweep(model, tok, options, prompt, judge, knob, values, SEEDS, NUM)
    op = operating_point(curves, real)
    c = model.config
    return {"name": name, "out_dir": out_dir, "objective": meta["config"].get("objective"),
            "prime": [c.prime_base, c.prime_bits] if getattr(c, "prime_bits", 0) else None, "knob": knob,
            "sampling": {"sampler": "ar" if name == "ar" else options.sampler, "steps": LENGTH if name == "ar" else
                         options.steps, **({} if name == "ar" else options.sampler_kwargs())},
            "chosen": op["chosen"], **{k: op[k] for k in ("ppl_at_real_entropy", "ppl_at_real_entropy_se",
                                                          "real_entropy_in_range", "swept_entropy_bits")},
            "point": {k: v for k, v in op["point"].items() if k != "per_seed"},
            "passes_per_256": None if op["point"].get("forward_passes") is None else
            op["point"]["forward_passes"] * 256 / LENGTH, "frontier": curves}


def plot(path: Path) -> None:
    """Each entry's test frontier (judge PPL against entropy, knob values labelled) and real test text."""
    r = read_json(path, "prime_judge JSON")
    curves = {x["name"]: {"knob": x["knob"], "rows": x["frontier"]["test"]} for x in r["rows"]}
    png = path.with_suffix(".png")
    plot_frontier(curves, r["real"], png, "prime and mdlm (seed 1337) against the ruler's AR: test frontiers, "
                  "judge-e2a0abbc")
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("entries", nargs="+", help="ar | RUN | RUN:SAMPLER (RUN under ~/.cache/nanodlm/prime/runs)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--smoke", action="store_true", help="a seconds-long check of the plumbing: 2 samples of 32 "
                    "characters, one seed a split, two knob values, cached apart")
    a = ap.parse_args()
    if a.entries == ["plot"]:
        return plot(Path(a.json))
    cache = WORK / ("judge-smoke" if a.smoke else "judge")
    if a.smoke:
        global NUM, LENGTH, SEEDS
        NUM, LENGTH, SEEDS = 2, 32, {"dev": [1], "test": [1337]}
        for k in GRIDS:
            GRIDS[k] = GRIDS[k][-2:]
    torch.set_num_threads(1)
    started, load = datetime.datetime.now().isoformat(timespec="seconds"), list(os.getloadavg())
    fair = read_json(FAIR, "the fair ruler's result")
    cache.mkdir(parents=True, exist_ok=True)
    todo = [e for e in a.entries if not (cache / f"{e.replace(':', '@')}.json").is_file()]
    data = QUALITY / "data"
    splits = dev_test(open_split(str(data), "shakespeare_char", "val"))
    jm, _, jt = load_model(str(JUDGE_DIR), CKPT, "cpu")
    judge = Judge(jm, jt)
    real = real_text(splits, load_tokenizer(load_meta(str(data), "shakespeare_char")).decode, judge, SEEDS, NUM,
                     LENGTH)
    print(f"real test text: entropy {real['test']['entropy_bits']:.4f} bits, judge PPL {real['test']['judge_ppl']:.3f}"
          f" (the ruler's JSON: {fair['real']['entropy_bits']:.4f}, {fair['real']['judge_ppl']:.3f})", flush=True)
    for e in todo:
        row = {**entry(e, fair, judge, real), "load": list(os.getloadavg()),
               "date": datetime.datetime.now().isoformat(timespec="seconds")}
        (cache / f"{e.replace(':', '@')}.json").write_text(json.dumps(row) + "\n")
        print(f"{e}: PPL at real entropy {row['ppl_at_real_entropy']} (chosen {row['knob']}={row['chosen']}, "
              f"{row['passes_per_256']} passes per 256 chars)", flush=True)
    rows = [read_json(cache / f"{e.replace(':', '@')}.json", "a cached judge entry") for e in a.entries]
    ar = next((r for r in rows if r["name"] == "ar"), None)
    for r in rows:
        ok = ar and ar["ppl_at_real_entropy"] and r["ppl_at_real_entropy"]
        r["ppl_at_real_entropy_over_ar"] = r["ppl_at_real_entropy"] / ar["ppl_at_real_entropy"] if ok else None
    result = {"benchmark": "prime judge PPL at real entropy (the fair ruler's sampling half)",
              "real": {k: real[s][k] for s in ("test",) for k in ("judge_ppl", "judge_ppl_se", "entropy_bits",
                                                                  "entropy_bits_se")} | {"dev": real["dev"]},
              "rows": rows, "ruler": {"json": str(FAIR.relative_to(REPO)),
                                      "ar_ppl_at_real_entropy": fair["ar"]["ppl_at_real_entropy"],
                                      "repair_ppl_at_real_entropy": fair["diffusion"]["ppl_at_real_entropy"],
                                      "repair_over_ar": fair["ratios"]["ppl_at_real_entropy_over_ar"]},
              "protocol": {"seeds": SEEDS, "num_samples": NUM, "length": LENGTH, "judge": str(JUDGE_DIR),
                           "checkpoint": CKPT, "threads": 1, "goal": "ppl_at_real_entropy_over_ar <= 1.5"},
              "started": started, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
              "load": {"start": load, "end": list(os.getloadavg())}, "command": " ".join(sys.argv)}
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
