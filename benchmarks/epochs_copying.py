"""Do the many-epoch models copy their training text? (issue 24: the judge's blind spot)

``bench epochs --judge`` scores each side's best checkpoint with the ruler's judge, which was trained on the
**whole** train split, so a model that learnt its 125k-character subset by heart and recites it would look good
to the judge. This measures how much of each side's samples is verbatim training text: the samples are drawn
exactly as the judge's operating point drew them (the knob value chosen on dev, the report seeds, 32 samples of
256 characters; AR: its temperature; diffusion: remask, 64 steps, its prior_weight), and for each n the share of
the samples' n-character windows that occur anywhere in the subset's training text. Real test text (the same
number of passages, the same seeds) gives the share that honest Shakespeare-like text reaches by itself.

    OMP_NUM_THREADS=1 ../shared/bin/cpu-slot python benchmarks/epochs_copying.py \
        benchmarks/epochs-cpu-DATE.json --json=benchmarks/epochs-copying-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanodlm.bench.common import mean_se, now, write_json
from nanodlm.bench.epochs_judge import side_sampling
from nanodlm.bench.presets import PRESETS
from nanodlm.core.fileio import read_json
from nanodlm.data.dataset import load_meta, open_split
from nanodlm.data.tokenizers import load_tokenizer
from nanodlm.evaluation.protocol import dev_test, passages
from nanodlm.runs.checkpoint import load_model
from nanodlm.sampling.generate import generate

P = PRESETS["cpu"]


def windows(text: str, n: int) -> list[str]:
    """Every n-character window of ``text`` (len(text) - n + 1 of them)."""
    return [text[i:i + n] for i in range(len(text) - n + 1)]


def copy_share(texts: list[str], train_windows: dict[int, set[str]]) -> dict[int, float]:
    """For each n: the share of the texts' n-character windows found verbatim in the training text."""
    out = {}
    for n, seen in train_windows.items():
        ws = [w for t in texts for w in windows(t, n)]
        out[n] = sum(w in seen for w in ws) / max(len(ws), 1)
    return out


def longest_copy(text: str, train: str, start: int = 8) -> int:
    """The longest substring of ``text`` that occurs in ``train`` (characters), by doubling then bisection."""
    def found(n: int) -> bool:
        return any(text[i:i + n] in train for i in range(len(text) - n + 1))
    if not found(start):
        return 0
    lo, hi = start, start * 2
    while hi <= len(text) and found(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, len(text) + 1)
    while hi - lo > 1:  # found(lo), not found(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if found(mid) else (lo, mid)
    return lo


def summarize(per_seed: list[dict[str, Any]], ns: list[int]) -> dict[str, Any]:
    """Mean and standard error over seeds of each n's share, and the longest copies' median and max."""
    longest = [x for row in per_seed for x in row["longest"]]
    return {"share": {str(n): mean_se([row["share"][n] for row in per_seed]) for n in ns},
            "longest_median": statistics.median(longest), "longest_max": max(longest),
            "example": per_seed[0]["example"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("epochs_json", help="a bench epochs JSON made with --judge=True")
    ap.add_argument("--work_dir", default="~/.cache/nanodlm/epochs", help="the bench's cache (data/ and runs/)")
    ap.add_argument("--ns", default="16,32,64", help="window lengths in characters")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = read_json(Path(args.epochs_json), what="a bench epochs JSON")
    ns = [int(n) for n in args.ns.split(",")]
    work = Path(args.work_dir).expanduser()
    seeds, num, length = P["report_seeds"], P["num_samples"], P["length"]
    out: dict[str, Any] = {"benchmark": "epochs copying", "source": args.epochs_json, "ns": ns, "seeds": seeds,
                           "num_samples": num, "length": length, "subsets": [],
                           "load_start": os.getloadavg()}
    for sub in result["subsets"]:
        judge = sub.get("judge")
        if not judge:
            continue
        name = f"{result['protocol'].get('dataset', 'shakespeare_char')}-train{sub['train_tokens']}"
        meta = load_meta(str(work / "data"), name)
        decode = load_tokenizer(meta).decode
        train = decode(np.asarray(open_split(str(work / "data"), name, "train")))
        train_windows = {n: set(windows(train, n)) for n in ns}
        test = dev_test(open_split(str(work / "data"), name, "val"))["test"]
        rows: dict[str, Any] = {"train_tokens": sub["train_tokens"], "train_chars": len(train)}
        real = []
        for seed in seeds:
            texts = passages(test, decode, num, length, seed)
            real.append({"share": copy_share(texts, train_windows), "longest": [longest_copy(t, train) for t in texts],
                         "example": texts[0]})
        rows["real_test_text"] = summarize(real, ns)
        for side in ("ar", "diffusion"):
            ckpt = Path(judge[side]["checkpoint"])
            model, _, tok = load_model(str(ckpt.parent), ckpt.name, "cpu")
            knob, _, prompt, options = side_sampling(model, side, "cpu")  # as the judge sampled it
            options = dataclasses.replace(options, **{knob: judge[side]["chosen"]})
            per_seed = []
            for seed in seeds:
                texts = generate(model, tok, options, prompt, num_samples=num, seed=seed).completions
                per_seed.append({"share": copy_share(texts, train_windows),
                                 "longest": [longest_copy(t, train) for t in texts], "example": texts[0]})
            rows[side] = {"recipe": judge[side]["recipe"], "checkpoint": str(ckpt), "knob": judge[side]["knob"],
                          "chosen": judge[side]["chosen"], **summarize(per_seed, ns)}
            shares = ", ".join(f"{n}: {rows[side]['share'][str(n)]['mean']:.3f}" for n in ns)
            print(f"{sub['train_tokens']} {side} {judge[side]['recipe']}: copied share {shares}; longest median "
                  f"{rows[side]['longest_median']}", flush=True)
        shares = ", ".join(f"{n}: {rows['real_test_text']['share'][str(n)]['mean']:.3f}" for n in ns)
        print(f"{sub['train_tokens']} real test text: {shares}", flush=True)
        out["subsets"].append(rows)
    out.update(load_end=os.getloadavg(), date=now(),
               command="python benchmarks/epochs_copying.py " + args.epochs_json + f" --ns={args.ns}")
    write_json(args.json, out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
