"""The fair ruler's arithmetic: which text chooses and which text reports, seeds, and the frontier.

Pure functions (numbers and arrays in, numbers out) used by ``bench quality``; no models, no I/O except the
optional plot.

- **Splits.** ``train.bin`` / ``val.bin`` stay as ``prepare`` writes them (val losses stay comparable with
  nanoGPT's). The validation split is cut in two halves that never overlap: *dev* = the first half,
  *test* = the second. Everything the protocol chooses (a model's learning rate and position encoding, a
  sampler knob, a temperature) is chosen on dev; every number it reports is measured on test. The models
  train on ``train.bin`` only (their training loop logs a val loss but never selects on it: the protocol
  uses last checkpoints).
- **Seeds.** Sampling numbers are means over several seeds with a standard error; the seeds that choose
  are never the seeds that report.
- **The frontier.** A sampler buys perplexity with entropy (colder text is more predictable and more
  repetitive), so one (PPL, entropy) point per model compares two dials, not two models. Each model's knob
  is swept; the headline is the judge perplexity each model's curve reaches at real text's entropy,
  interpolated linearly in (entropy, log PPL) between the two swept points around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import UserError
from ..core.report import save_figure
from ..diffusion.diffusion import mean_and_stderr

SELECTION_SPLIT = "dev: the first half of val.bin (tokens [0, len(val) // 2))"
REPORT_SPLIT = "test: the second half of val.bin (tokens [len(val) // 2, len(val)))"


# --- splits ---------------------------------------------------------------------------------------------------

def dev_test(val: np.ndarray) -> dict[str, np.ndarray]:
    """{"dev": first half, "test": second half} of a validation split: views, disjoint, together all of it."""
    half = len(val) // 2
    if half < 2:
        raise UserError(f"the val split holds {len(val)} tokens, too few to cut into dev and test halves; "
                        "prepare more text or a larger --val_fraction")
    return {"dev": val[:half], "test": val[half:]}


def passages(data: np.ndarray, decode, num: int, length: int, seed: int) -> list[str]:
    """``num`` passages of ``length`` tokens from ``data`` at offsets drawn from ``seed``, decoded: as many
    tokens as a sample of ``length`` tokens (a char token is one character, a BPE token usually several)."""
    if num < 1 or length < 1:
        raise UserError(f"num and length must be positive, got {num} and {length}")
    if len(data) < length:
        raise UserError(f"the text holds {len(data)} tokens, too few for passages of {length}; use shorter samples")
    starts = np.random.default_rng(seed).integers(0, len(data) - length + 1, size=num)  # (num,)
    return [decode(np.asarray(data[s:s + length])) for s in starts]


# --- choosing and averaging -----------------------------------------------------------------------------------

def argmin(scores: Sequence[float]) -> int:
    """Index of the lowest finite score (the first on ties); a UserError when none is finite."""
    finite = [(s, i) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    if not finite:
        raise UserError("no candidate has a finite score to choose by (every run diverged?)")
    return min(finite)[1]


def choose_on(rows: Sequence[Mapping[str, Any]], score: Callable[[Mapping[str, Any]], float | None],
              uses: Sequence[Mapping[str, Any]] = ()) -> int:
    """Index of the row with the lowest ``score`` (``argmin``: the first on ties, non-finite scores skipped).

    Every choice the protocol makes goes through here (a run by its dev loss, a knob value by its dev entropy,
    a bench parallel point by its dev speed). Each row, and each measurement in ``uses`` that the score compares
    against (real text's entropy), carries the ``split`` it was measured on, stamped by the code that chose the
    text; one measured on anything but dev fails loudly instead of leaking the report split into a choice."""
    for row in (*rows, *uses):
        split = row.get("split")
        if split != "dev":
            raise UserError(f"the protocol chooses on dev only, and this choice reads a measurement made on "
                            f"{split!r}: {REPORT_SPLIT.split(':')[0]} text is for reporting")
    return argmin([score(row) for row in rows])


def seed_mean(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """{key: mean over rows, key_se: standard error of that mean} for each key (one row per sampling seed);
    the standard error is nan with a single row."""
    if not rows:
        raise UserError("no rows to average")
    out: dict[str, Any] = {}
    for key in keys:
        out[key], out[f"{key}_se"] = mean_and_stderr(torch.tensor([float(r[key]) for r in rows], dtype=torch.float64))
    return out


# --- the frontier ---------------------------------------------------------------------------------------------

def ppl_at_entropy(entropy: Sequence[float], ppl: Sequence[float], target: float) -> float | None:
    """Judge PPL at ``target`` entropy on a curve of (entropy, PPL) points: linear in (entropy, log PPL)
    between the nearest swept points on either side. None when ``target`` lies outside the swept entropies
    (an extrapolation would be a guess) or when fewer than one finite point exists."""
    pts = sorted((e, math.log(p)) for e, p in zip(entropy, ppl, strict=True)
                 if e is not None and p is not None and math.isfinite(e) and math.isfinite(p) and p > 0)
    if not pts or not pts[0][0] <= target <= pts[-1][0]:
        return None
    for (e0, y0), (e1, y1) in zip(pts, pts[1:], strict=False):
        if e0 <= target <= e1:
            w = 0.0 if e1 == e0 else (target - e0) / (e1 - e0)
            return math.exp(y0 + w * (y1 - y0))
    return math.exp(pts[0][1])  # a single point exactly at the target


def frontier_at(curve: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """The headline of one model's curve (rows with ``entropy_bits``, ``judge_ppl`` and per-seed
    ``per_seed`` rows): PPL at ``target`` on the mean curve, and its standard error from each seed's own
    curve (nan unless every seed's curve reaches the target)."""
    value = ppl_at_entropy([r["entropy_bits"] for r in curve], [r["judge_ppl"] for r in curve], target)
    n_seeds = min(len(r["per_seed"]) for r in curve) if curve else 0
    per_seed = [ppl_at_entropy([r["per_seed"][s]["entropy_bits"] for r in curve],
                               [r["per_seed"][s]["judge_ppl"] for r in curve], target) for s in range(n_seeds)]
    se = float("nan")
    if value is not None and n_seeds >= 2 and all(p is not None for p in per_seed):
        se = mean_and_stderr(torch.tensor(per_seed, dtype=torch.float64))[1]
    lo = min((r["entropy_bits"] for r in curve), default=None)
    hi = max((r["entropy_bits"] for r in curve), default=None)
    return {"ppl_at_real_entropy": value, "ppl_at_real_entropy_se": se, "swept_entropy_bits": [lo, hi],
            "real_entropy_in_range": value is not None}


def plot_frontier(curves: dict[str, dict[str, Any]], real: dict[str, float], png_path: str | Path,
                  title: str = "") -> bool:
    """Judge PPL (log y) against entropy for each model's swept curve, error bars from the seeds, each point
    labelled with its knob value; real text as a star and a vertical line. False without matplotlib.

    ``curves``: name -> {"knob": str, "rows": [{"value", "entropy_bits", "entropy_bits_se", "judge_ppl",
    "judge_ppl_se"}]}; ``real``: {"entropy_bits", "judge_ppl"}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for i, (name, curve) in enumerate(curves.items()):
        rows = sorted(curve["rows"], key=lambda r: r["entropy_bits"])
        x, y = [r["entropy_bits"] for r in rows], [r["judge_ppl"] for r in rows]
        xerr = [_or0(r.get("entropy_bits_se")) for r in rows]
        yerr = [_or0(r.get("judge_ppl_se")) for r in rows]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o-", color=f"C{i}", capsize=2, label=f"{name} ({curve['knob']})")
        for r in rows:
            ax.annotate(f"{r['value']:g}", (r["entropy_bits"], r["judge_ppl"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=f"C{i}")
    ax.axvline(real["entropy_bits"], color="gray", ls=":", lw=1)
    ax.plot([real["entropy_bits"]], [real["judge_ppl"]], "*", ms=12, color="k", label="real text")
    ax.set_yscale("log")
    ax.set_xlabel("character entropy (bits)")
    ax.set_ylabel("judge perplexity (log; lower is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png_path)


def _or0(v: float | None) -> float:
    return v if v is not None and math.isfinite(v) else 0.0
