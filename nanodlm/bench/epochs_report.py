"""``bench epochs``'s report: curves, each side's best recipe chosen on dev, the budget curve and the crossover
(what each figure is: the module docstring of ``epochs.py``), and the plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .common import mean_se
from .curves import best_row, choose_dev, read_curve, stalled

SIDES = ("ar", "diffusion")


def _run_entry(p: dict[str, Any]) -> dict[str, Any]:
    rows = read_curve(Path(p["spec"]["config"]["out_dir"]))
    best = best_row(rows)
    cfg = p["spec"]["config"]
    return {"name": p["name"], "recipe": p["recipe"], "side": p["side"], "seed": p["seed"],
            "out_dir": cfg["out_dir"], "max_iters": p["total"], "screen_iters": p["screen_iters"],
            "reached_iters": max((r["iters"] for r in rows), default=0),
            "finished": any(r["iters"] >= p["total"] for r in rows) or stalled(rows, p["spec"].get("patience", 0)),
            "stopped_early": (rows[-1]["epochs"] if stalled(rows, p["spec"].get("patience", 0))
                              and not any(r["iters"] >= p["total"] for r in rows) else None),
            "settings": {k: cfg[k] for k in ("dropout", "input_mask_rate", "objective", "diffusion_block",
                                             "learning_rate", "weight_decay", "pos_emb") if k in cfg},
            "curve": rows, "best_dev": best}


def _side_at_budget(runs: list[dict[str, Any]], iters: int) -> dict[str, Any] | None:
    """A side early-stopped within ``iters``: over its runs (the main seed) and their rows up to ``iters``, the
    row with the lowest dev loss (chosen on dev), reported with its test loss."""
    cands = [(r, row) for r in runs for row in r["curve"] if row["iters"] <= iters]
    if not cands:
        return None
    run, row = cands[choose_dev([row["dev"] for _, row in cands])]
    return {"recipe": run["recipe"], "epochs": row["epochs"], "iters": row["iters"], "dev": row["dev"],
            "test": row["test"], "test_stderr": row["test_stderr"]}


def trend(curve: list[dict[str, Any]], target: float, octaves: float = 2.0) -> dict[str, Any] | None:
    """Where a falling test curve points: a least-squares line of test loss against log2(epochs) through its
    last ``octaves`` octaves (at least 3 points), its slope per octave, and the epochs at which the line would
    reach ``target`` (None if it does not fall). An extrapolation, not a measurement: said so in the report."""
    if not curve:
        return None
    last = curve[-1]["epochs"]
    pts = [(math.log2(r["epochs"]), r["test"]) for r in curve if r["epochs"] >= last / 2 ** octaves]
    if len(pts) < 3:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    at_last = my + slope * (math.log2(last) - mx)
    reach = 2 ** (math.log2(last) + (target - at_last) / slope) if slope < 0 and target < at_last else None
    return {"from_epochs": 2 ** min(x for x, _ in pts), "to_epochs": last, "points": len(pts),
            "slope_per_octave": slope, "target": target, "line_reaches_target_at_epochs": reach}


def report(args: Any, subsets: list[tuple[int, float]], plans: dict[str, dict[str, Any]],
           work_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": "epochs", "subsets": [], "protocol": {
        "dataset": args.dataset, "preset": args.preset, "evals_per_octave": args.evals_per_octave,
        "screen_fraction": args.screen_fraction, "keep": args.keep, "patience": args.patience, "seed": args.seed,
        "extra_seeds": args.extra_seeds, "work_dir": str(work_dir), "report_only": args.report_only,
        "choose_on": "dev (first half of val.bin): the screen, each side's recipe, early stopping",
        "report_on": "test (second half of val.bin): every figure below named test",
        "loss": "AR: next-token cross-entropy; diffusion: NELBO (an upper bound on its NLL), nats per token",
        "flops": "6 x non-embedding parameters x tokens processed (block diffusion: two streams)",
        "trend": "no crossover: a straight line of diffusion's test loss against log2(epochs) through its last two "
                 "octaves, extended to AR's best test loss (an extrapolation, not a measurement)",
        "judge": "not run: judge PPL at real entropy of each side's best checkpoint is still to do"}}
    for si, (train_tokens, budget) in enumerate(subsets):
        runs = [_run_entry(p) for p in plans.values() if p["subset"] == si]
        runs = [r for r in runs if r["curve"] or "@" not in r["recipe"]]  # shorter AR budgets: only those that ran
        main = [r for r in runs if r["seed"] == args.seed and r["curve"]]  # runs not started (yet) are left out
        sides: dict[str, Any] = {}
        for s in SIDES:
            mine = [r for r in main if r["side"] == s]
            if not mine:
                continue
            best = mine[choose_dev([r["best_dev"]["dev"] for r in mine])]
            seeds = [r for r in runs if r["recipe"] == best["recipe"] and r["finished"]]
            tests = [r["best_dev"]["test"] for r in seeds]
            sides[s] = {"recipe": best["recipe"], "finished": best["finished"],
                        "best_epochs": best["best_dev"]["epochs"],
                        "test": best["best_dev"]["test"], "test_stderr": best["best_dev"]["test_stderr"],
                        "dev": best["best_dev"]["dev"], "seeds": [r["seed"] for r in seeds],
                        "test_over_seeds": mean_se(tests) if tests else None}
        points = sorted({row["iters"]: row["epochs"] for r in main for row in r["curve"]}.items())
        budget_curve, crossover = [], None
        for iters, epochs in points:
            row = {"epochs": epochs, "iters": iters}
            for s in SIDES:
                row[s] = _side_at_budget([r for r in main if r["side"] == s], iters)
            if row["ar"] and row["diffusion"]:
                row["diffusion_over_ar"] = row["diffusion"]["test"] / row["ar"]["test"]
                if crossover is None and row["diffusion_over_ar"] < 1:
                    crossover = epochs
            budget_curve.append(row)
        ratio = (sides["diffusion"]["test"] / sides["ar"]["test"]) if len(sides) == 2 else None
        where = None  # no crossover yet: where diffusion's best recipe's curve points, against AR's best test loss
        if ratio is not None and crossover is None:
            best_run = next(r for r in main if r["side"] == "diffusion" and r["recipe"] == sides["diffusion"]["recipe"])
            where = trend(best_run["curve"], sides["ar"]["test"])
        out["subsets"].append({"train_tokens": train_tokens, "epochs": budget, "runs": runs, "sides": sides,
                               "best_diffusion_over_best_ar": ratio, "budget_curve": budget_curve,
                               "crossover_epochs": crossover, "trend": where})
        if sides:
            line = ", ".join(f"{s} {v['recipe']} test {v['test']:.4f} at epoch {v['best_epochs']:g}"
                             for s, v in sides.items())
            print(f"{train_tokens:,} tokens x {budget:g} epochs: {line}"
                  + (f"; diffusion/AR {ratio:.3f}" if ratio else "")
                  + (f"; crossover at {crossover:g} epochs" if crossover else "; no crossover"))
    return out


def plot(result: dict[str, Any], png: str) -> bool:
    """Test loss against epochs and against training FLOPs, one line per run, one row of panels per subset."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install 'nanodlm[plot]')")
        return False
    subsets = [s for s in result["subsets"] if any(r["curve"] for r in s["runs"])]
    if not subsets:
        return False
    fig, axes = plt.subplots(len(subsets), 2, figsize=(12, 4.2 * len(subsets)), squeeze=False)
    for row_axes, sub in zip(axes, subsets, strict=True):
        for r in sub["runs"]:
            if not r["curve"]:
                continue
            style = "-" if r["side"] == "ar" else "--"
            label = r["recipe"] + ("" if r["seed"] == result["protocol"]["seed"] else f" (seed {r['seed']})")
            for ax, key in zip(row_axes, ("epochs", "flops"), strict=True):
                ax.plot([c[key] for c in r["curve"]], [c["test"] for c in r["curve"]], style, marker=".",
                        label=label)
        for ax, key in zip(row_axes, ("epochs", "training FLOPs"), strict=True):
            ax.set_xscale("log", base=2 if key == "epochs" else 10)
            ax.set_xlabel(key)
            ax.set_ylabel("test loss (AR CE; diffusion NELBO), nats/char")
            ax.set_title(f"{sub['train_tokens']:,} chars of train, up to {sub['epochs']:g} epochs")
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=8)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True
