"""Idle steps: how many of an ancestral sampler's steps change a sample, for a prime model and mdlm (issue 26).

MDM-Prime's motivation (Chao et al. 2025, arXiv 2505.18495, figure 1): with many steps, a masked model's reverse
process often reveals nothing in a step, and the network is run again on an unchanged canvas; revealing digits, a
prime model has more to reveal per character and idles less. Our samplers skip the pass when the canvas is
unchanged (``CachedForward``), so the passes a sample costs at batch 1 (``passes_per_sample``) are its steps that
changed something. For each run and step count: passes per 256 characters, mean over the samples, and the idle
share 1 - passes / steps. Canvas: ``--length`` masks, no prompt, temperature 1.

    OMP_NUM_THREADS=1 ../shared/bin/cpu-slot python benchmarks/prime_passes.py RUN [RUN ...] --steps=64,256,1024 \
        --json=benchmarks/prime-passes-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from nanodlm.runs.checkpoint import load_model
from nanodlm.sampling.generate import Prompt, SamplerOptions, generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--steps", default="64,256,1024")
    ap.add_argument("--sampler", default="ancestral")
    ap.add_argument("--num_samples", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    load_start = list(os.getloadavg())
    rows = []
    for run in a.runs:
        model, meta, tok = load_model(run, "last", "cpu")
        for steps in (int(s) for s in a.steps.split(",")):
            out = generate(model, tok, SamplerOptions(sampler=a.sampler, steps=steps), Prompt(length=a.length),
                           num_samples=a.num_samples, seed=a.seed)
            per = out.info["passes_per_sample"]
            mean = statistics.mean(per)
            c = model.config
            rows.append({"run": run, "objective": meta["config"]["objective"],
                         "prime": [c.prime_base, c.prime_bits] if c.prime_bits else None,
                         "steps": steps, "passes_per_sample": per, "passes_per_256": mean * 256 / a.length,
                         "idle_share": 1 - mean / steps, "example": out.texts[0][:120]})
            print(f"{Path(run).name:16s} {steps:5d} steps: {mean:7.1f} passes per sample, idle {1 - mean / steps:.1%}",
                  flush=True)
    result = {"benchmark": "prime idle steps (ancestral passes per sample, batch 1 equivalent)", "rows": rows,
              "args": vars(a), "load": {"start": load_start, "end": list(os.getloadavg())},
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
