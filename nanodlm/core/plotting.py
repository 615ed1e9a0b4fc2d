"""Loss curves as a PNG, read back from the JSONL metrics log (matplotlib is an optional extra)."""

from __future__ import annotations

from pathlib import Path

from .fileio import read_jsonl


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` ([] when there is none); a broken line is a one-line error naming it."""
    p = Path(path)
    if not p.exists():
        return []
    return read_jsonl(p, "metrics log", dict, "; delete that line (a crash cut it short) or move the log away")


def plot_loss_curves(metrics_path: str | Path, png_path: str | Path, title: str = "") -> bool:
    """Train (per log line) and eval (train/val) losses against iteration; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = read_metrics(metrics_path)
    steps = [r for r in rows if r.get("kind") == "step"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if steps:
        ax.plot([r["iter"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.45, label="train (batch)")
    if evals:
        ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", ms=3, label="train (eval)")
        ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", ms=3, label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)
    return True
