"""What a shorter budget costs: the evaluator of the 2026-11-28 protocol (200 evenly spaced windows of block_size
characters over all of val.bin, 4 mask draws, seed 1337) on any runs, to compare with that protocol's JSON.

    OMP_NUM_THREADS=1 python benchmarks/budget_cmp.py RUN [RUN ...]
"""

from __future__ import annotations

import json
import sys

import torch

from nanodlm.data.dataset import open_split
from nanodlm.evaluation.evaluate import ar_cross_entropy, diffusion_nelbo, eval_windows
from nanodlm.runs.checkpoint import load_model


def main(runs: list[str]) -> dict:
    torch.set_num_threads(1)
    out = {}
    for run in runs:
        model, meta, _ = load_model(run, "last", "cpu")
        cfg = meta["config"]
        windows = eval_windows(open_split(cfg["data_dir"], cfg["dataset"], "val"), model.config.block_size, 200)
        if model.config.model_type == "gpt2":
            r = ar_cross_entropy(model, windows, 32)
            out[run] = {"loss": r["loss"], "stderr": r["stderr"]}
        else:
            r = diffusion_nelbo(model, windows, 32, torch.Generator().manual_seed(1337), n_draws=4)
            out[run] = {"nelbo": r["nelbo"], "stderr": r["stderr"]}
        out[run].update(iter=meta.get("iter_num"), lr=cfg["learning_rate"], dropout=cfg["dropout"])
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
