"""Loss curves along one run, for ``bench epochs``: a corpus subset, a budget in epochs, and a run trained in
segments that end at log-spaced epochs, each scored on dev and test, the best-dev checkpoint kept.

One run has one learning-rate schedule, over its whole budget (``lr_decay_iters = max_iters``). ``run_curve``
trains it to the first evaluation point, scores the checkpoint on the dev and test halves of val.bin (AR
cross-entropy, diffusion NELBO: the ruler's windows, ``bench quality``'s loss), appends the row to the run's
``curve.jsonl``, copies the checkpoint to ``best_dev.pt`` when its dev loss is the lowest so far (early stopping
is part of every recipe), and resumes to the next point. train.py's randomness is keyed by (seed, iteration),
so a segmented run is the run an uninterrupted training would be, and a run killed anywhere resumes from its
``ckpt.pt`` and ``curve.jsonl`` to the same curve. ``stop_iters`` ends a run early (the screen) without
changing its schedule: a screened run that goes on continues the same run. ``patience`` ends it for good
once its dev loss has not improved for that many points (the same rule for every recipe, both sides).

Run as a lane's worker: ``python -m nanodlm.bench.curves SPEC.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import UserError
from ..core.fileio import atomic_write, parse_json, read_json, read_text_file
from ..data.dataset import load_meta, open_split
from ..evaluation.evaluate import ar_cross_entropy, diffusion_nelbo, eval_windows
from ..evaluation.protocol import choose_on, dev_test
from ..runs.checkpoint import load_model
from ..training.config import TrainConfig, build_config, config_to_dict
from ..training.train import train
from .runs import finished_iters

CURVE = "curve.jsonl"
BEST = "best_dev.pt"


# --- the subset and the budget -----------------------------------------------------------------------------------

def subset_dataset(data_dir: Path, dataset: str, train_tokens: int, block_size: int) -> str:
    """``data_dir/<dataset>-train<N>``: train.bin the first ``train_tokens`` tokens of the dataset's train split,
    val.bin and meta.json the same as the dataset's (so dev and test are unchanged). Returns its name."""
    train_split = open_split(str(data_dir), dataset, "train")
    if train_tokens > len(train_split):
        raise UserError(f"--train_chars={train_tokens} is more than the train split of {dataset!r} holds "
                        f"({len(train_split)} tokens): ask for at most {len(train_split)}")
    if train_tokens < block_size + 1:
        raise UserError(f"--train_chars={train_tokens} is below one training window (block_size + 1 = "
                        f"{block_size + 1} tokens): ask for more")
    name = f"{dataset}-train{train_tokens}"
    src, dst = data_dir / dataset, data_dir / name
    meta = load_meta(str(data_dir), dataset)
    if (dst / "train.bin").is_file() and (dst / "train.bin").stat().st_size == train_tokens * train_split.itemsize:
        return name
    dst.mkdir(parents=True, exist_ok=True)
    prefix = np.ascontiguousarray(train_split[:train_tokens])
    atomic_write(dst / "train.bin", prefix.tobytes())
    shutil.copyfile(src / "val.bin", dst / "val.bin")
    subset_meta = {**meta, "subset_of": dataset, "train_tokens": train_tokens}
    atomic_write(dst / "meta.json", json.dumps(subset_meta, indent=1).encode())
    return name


def epochs_to_iters(epochs: float, train_tokens: int, tokens_per_iter: int) -> int:
    """The fewest iterations that show ``epochs`` x ``train_tokens`` tokens: ceil(epochs N / tokens_per_iter),
    in exact arithmetic (Fraction: no float rounding at whole numbers)."""
    if not epochs > 0:
        raise UserError(f"a budget in epochs must be positive; got {epochs}")
    return math.ceil(Fraction(epochs) * train_tokens / tokens_per_iter)


def eval_epochs(max_epochs: float, per_octave: int, first: float = 1.0, extra: tuple[float, ...] = ()) -> list[float]:
    """Log-spaced evaluation points: first x 2^(k / per_octave) below max_epochs, then max_epochs, plus ``extra``
    (the screen's stop), sorted."""
    points = {float(max_epochs), *(float(e) for e in extra if 0 < e <= max_epochs)}
    k = 0
    while (e := first * 2 ** (k / per_octave)) < max_epochs * (1 - 1e-9):
        points.add(round(e, 6))
        k += 1
    return sorted(points)


def train_flops(cfg: TrainConfig, iters: int) -> float:
    """Training FLOPs to ``iters``: 6 x non-embedding parameters (12 n_layer n_embd^2) x tokens processed (block
    diffusion runs two streams of block_size: twice the tokens), the attention scores left out."""
    streams = 2 if cfg.diffusion_block else 1
    tokens = iters * cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * streams
    return 6.0 * 12 * cfg.n_layer * cfg.n_embd ** 2 * tokens


# --- the curve cache -----------------------------------------------------------------------------------------------

def read_curve(out_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``out_dir/curve.jsonl`` (fileio's reader, line by line). A broken last line (a kill while it
    was written) is dropped, to be scored again; a broken line before it is a one-line error naming the file."""
    path = out_dir / CURVE
    if not path.exists():
        return []
    lines = [line for line in read_text_file(path, "curve file").splitlines() if line.strip()]
    hint = "; delete the file to score the run again"
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = parse_json(line, f"{path} line {n}", dict, hint)
        except UserError:
            if n == len(lines):
                break
            raise
        if "iters" not in row:
            raise UserError(f"{path} line {n} is not a curve row (no 'iters'){hint}")
        rows.append(row)
    return rows


def _append_row(out_dir: Path, row: dict[str, Any]) -> None:
    with open(out_dir / CURVE, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def seed_curves(result: Path, runs_dir: Path) -> list[str]:
    """Curve rows of an earlier ``bench epochs`` JSON written into ``runs_dir/<run>/curve.jsonl`` wherever the cache
    has none, so a new machine goes on from a committed result. Runs are matched by name (their config hash: a
    changed recipe matches nothing). The JSON holds no weights: a run that trains on from a seeded point first
    retrains from scratch to its next point, to the same weights (train.py's step-keyed randomness). Returns the
    runs seeded."""
    data = read_json(result, "--seed_curves file", dict, "; give a bench epochs JSON")
    seeded = []
    for sub in data.get("subsets", []):
        for run in sub.get("runs", []):
            out_dir = runs_dir / str(run.get("name", ""))
            if not run.get("curve") or not run.get("name") or read_curve(out_dir):
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(out_dir / CURVE, "".join(json.dumps(r) + "\n" for r in run["curve"]).encode())
            seeded.append(run["name"])
    return seeded


# --- scoring -------------------------------------------------------------------------------------------------------

class Scorer:
    """Dev and test loss of a checkpoint on fixed windows of each half of val.bin: AR cross-entropy, diffusion
    NELBO with the same masks at every point (a generator re-seeded per split), so curves compare point to point."""

    SEEDS = {"dev": 1, "test": 1337}

    def __init__(self, data_dir: str, dataset: str, block_size: int, n_windows: int, batch_size: int,
                 device: str) -> None:
        halves = dev_test(open_split(data_dir, dataset, "val"))
        self.windows = {s: eval_windows(h, block_size, min(n_windows, max(1, len(h) // (block_size + 1))))
                        for s, h in halves.items()}
        self.batch_size, self.device = batch_size, device

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for split, windows in self.windows.items():
            if model.config.model_type == "gpt2":
                r = ar_cross_entropy(model, windows, self.batch_size)
                loss = r["loss"]
            else:
                gen = torch.Generator(device=self.device).manual_seed(self.SEEDS[split])
                r = diffusion_nelbo(model, windows, self.batch_size, gen, n_draws=4)
                loss = r["nelbo"]
            out[split], out[f"{split}_stderr"] = loss, r["stderr"]
        return out


# --- one run -------------------------------------------------------------------------------------------------------

def run_curve(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Train and score one run as ``spec`` says: {"config": a TrainConfig dict (max_iters = the whole budget),
    "points": [{"epochs", "iters"}], "stop_iters", "eval_windows", "eval_batch_size"} -> its curve rows."""
    cfg = build_config(TrainConfig, spec["config"])
    out_dir = Path(cfg.out_dir)
    stop = int(spec.get("stop_iters") or cfg.max_iters)
    rows = read_curve(out_dir)
    if rows or (out_dir / CURVE).exists():  # rewrite without a torn last line, so new rows start on their own line
        atomic_write(out_dir / CURVE, "".join(json.dumps(r) + "\n" for r in rows).encode())
    scored = {r["iters"] for r in rows}
    scorer = None
    patience = int(spec.get("patience", 0))
    for point in spec["points"]:
        iters = int(point["iters"])
        if iters > stop:
            break
        if stalled(rows, patience):
            print(f"{out_dir.name}: stopped at epoch {rows[-1]['epochs']:g}, dev not improved for {patience} points "
                  f"(best at epoch {best_row(rows)['epochs']:g})", flush=True)
            break
        if iters in scored:
            continue
        if finished_iters(out_dir) > iters:  # trained past an unscored point (another grid): it cannot be scored now
            continue
        resume = finished_iters(out_dir) >= 0
        segment = build_config(TrainConfig, {**config_to_dict(cfg), "max_iters": iters,
                                             "init_from": "resume" if resume else "scratch"})
        summary = train(segment)
        if summary.get("interrupted"):
            raise KeyboardInterrupt
        if scorer is None:
            scorer = Scorer(cfg.data_dir, cfg.dataset, cfg.block_size, spec["eval_windows"],
                            spec["eval_batch_size"], cfg.device if cfg.device != "auto" else "cpu")
        model, _, _ = load_model(out_dir, "last", scorer.device)
        row = {"epochs": point["epochs"], "iters": iters, **scorer(model), "flops": train_flops(cfg, iters)}
        if all(row["dev"] < r["dev"] for r in rows):  # the lowest dev loss so far: early stopping keeps it
            tmp = out_dir / f".{BEST}.tmp"
            shutil.copyfile(out_dir / "ckpt.pt", tmp)
            os.replace(tmp, out_dir / BEST)
        _append_row(out_dir, row)
        rows.append(row)
        print(f"{out_dir.name}: epoch {point['epochs']:g} (iter {iters}) dev {row['dev']:.4f} test {row['test']:.4f}",
              flush=True)
    return rows


def best_row(rows: list[dict[str, Any]], upto_iters: int | None = None) -> dict[str, Any] | None:
    """The row with the lowest dev loss (the first on ties) among rows at or before ``upto_iters``: the
    early-stopped model of a budget. Its test loss is what the budget reports."""
    rows = [r for r in rows if upto_iters is None or r["iters"] <= upto_iters]
    return rows[choose_dev([r["dev"] for r in rows])] if rows else None


def stalled(rows: list[dict[str, Any]], patience: int) -> bool:
    """True when the best-dev row is ``patience`` or more rows before the last: dev has not improved for that many
    evaluation points, and early stopping ends the run (0: never)."""
    if patience <= 0 or not rows:
        return False
    return len(rows) - 1 - choose_dev([r["dev"] for r in rows]) >= patience


def choose_dev(dev_losses: list[float]) -> int:
    """The index of the lowest of ``dev_losses`` (losses on the dev half), through ``protocol.choose_on``, the
    one path every choice goes through: each is stamped as measured on dev."""
    return choose_on([{"split": "dev", "loss": v} for v in dev_losses], lambda r: r["loss"])


if __name__ == "__main__":  # a lane's worker: python -m nanodlm.bench.curves SPEC.json
    try:
        run_curve(read_json(Path(sys.argv[1]), "lane spec"))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
