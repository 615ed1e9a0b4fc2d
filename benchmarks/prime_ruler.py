"""Partial masking (issue 26) on the fair ruler's terms, resumable, one run at a time through ../shared/bin/cpu-slot.

Every run is the diffusion contestant of ``bench quality --preset=cpu`` (BENCHMARKS.md section 9: 4 layers x 128,
block 256, batch 12, 2,000 iterations, lr 3e-3 as that protocol's diffusion screen chose, dropout 0, rope, on
``~/.cache/nanodlm/quality/data``) with only the objective changed: ``mdlm``, or ``prime`` at a given
``prime_bits``. Scoring is the protocol's own: ``diffusion_nelbo`` on the 200 evenly spaced windows of dev (the
first half of val.bin, masks seeded 1) or test (the second half, masks seeded 1337), 4 mask draws, last checkpoint.

    python benchmarks/prime_ruler.py screen    # prime_bits 2, 3, 7 at seed 1337 -> dev NELBO; the winner is chosen
    python benchmarks/prime_ruler.py report    # the winner and mdlm at seeds 1337, 1338, 1339 -> test NELBO
    python benchmarks/prime_ruler.py status    # what is trained, where each run stands
    python benchmarks/prime_ruler.py plot SCREEN.json REPORT.json --png=OUT.png   # val NELBO against iterations
    python benchmarks/prime_ruler.py summarize REPORT.json   # (re)writes its summary over seeds (report does too)

Each phase trains what is missing (a killed run resumes from its last checkpoint: the same numbers), scores it in a
cpu-slot process, and writes ``benchmarks/prime-<phase>-cpu-DATE.json`` (``--json`` to name it). Long runs go from
a frozen copy of the code (``git archive``), which trains and scores with its own ``nanodlm``; ``$CPU_SLOT`` names
the launcher when the copy does not stand beside ``shared/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from nanodlm.core.fileio import parse_json, read_json
from nanodlm.core.plotting import read_metrics
from nanodlm.runs.rundir import saved_iter

REPO = Path(__file__).resolve().parents[1]
SLOT = Path(os.environ.get("CPU_SLOT", REPO.parent / "shared" / "bin" / "cpu-slot"))
WORK = Path(os.environ.get("PRIME_WORK", "~/.cache/nanodlm/prime")).expanduser()
DATA = Path("~/.cache/nanodlm/quality/data").expanduser()
FAIR = REPO / "benchmarks" / "quality-fair-cpu-2026-12-03.json"  # AR's CE and repair's NELBO, the same evaluator
RULER = dict(model_type="diffusion", n_layer=4, n_head=4, n_embd=128, block_size=256, batch_size=12, dropout=0.0,
             attn_dropout=0.0, learning_rate=3e-3, min_lr=1e-4, warmup_iters=100, beta2=0.99, max_iters=2000,
             lr_decay_iters=2000, eval_interval=500, eval_iters=20, log_interval=10, pos_emb="rope",
             copy_weight=0.1, dataset="shakespeare_char", data_dir=str(DATA), threads=1, progress=False, plot=False,
             device="cpu")
SCREEN_BITS = (2, 3, 7)
SEEDS = (1337, 1338, 1339)
MASK_SEEDS = {"dev": 1, "test": 1337}  # bench quality's: the first selection seed / the first report seed
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # this checkout's nanodlm, one thread


def run_dir(name: str, seed: int) -> Path:
    return WORK / "runs" / f"{name}-s{seed}"


def flags(name: str) -> dict[str, object]:
    """mdlm | prime<bits> -> the TrainConfig keys that differ from the ruler's contestant."""
    if name == "mdlm":
        return {"objective": "mdlm"}
    return {"objective": "prime", "prime_bits": int(name.removeprefix("prime"))}


def finished(name: str, seed: int) -> bool:
    meta = run_dir(name, seed) / "ckpt.json"
    return saved_iter(meta.parent) == RULER["max_iters"]


def train(name: str, seed: int) -> None:
    """Train (or resume) one run in a cpu-slot process; nothing to do when it is finished."""
    if finished(name, seed):
        return
    out = run_dir(name, seed)
    init = "resume" if (out / "ckpt.pt").is_file() else "scratch"
    keys = {**RULER, **flags(name), "seed": seed, "out_dir": str(out), "init_from": init}
    cmd = [str(SLOT), sys.executable, "-m", "nanodlm", "train", *[f"--{k}={v}" for k, v in keys.items()]]
    print(f"{datetime.datetime.now():%H:%M:%S} train {name} seed {seed} ({init}); load {os.getloadavg()[0]:.1f}",
          flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=ENV)


def score(runs: list[tuple[str, int]], split: str) -> list[dict]:
    """The protocol's NELBO on ``split`` for each run, computed in one cpu-slot process (``_score``)."""
    cmd = [str(SLOT), sys.executable, __file__, "_score", split, *[str(run_dir(n, s)) for n, s in runs]]
    done = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True, env=ENV)
    rows = parse_json(done.stdout.strip().splitlines()[-1], "the scorer's last output line", list)
    return [{"name": n, "seed": s, **row} for (n, s), row in zip(runs, rows)]


def _score(split: str, dirs: list[str]) -> None:
    import torch

    from nanodlm.data.dataset import open_split
    from nanodlm.evaluation.evaluate import diffusion_nelbo, eval_windows
    from nanodlm.evaluation.protocol import dev_test
    from nanodlm.runs.checkpoint import load_model

    torch.set_num_threads(1)
    data = dev_test(open_split(str(DATA), "shakespeare_char", "val"))[split]
    rows = []
    for d in dirs:
        model, meta, _ = load_model(d, "last", "cpu")
        T = model.config.block_size
        windows = eval_windows(data, T, min(200, max(1, len(data) // (T + 1))))
        out = diffusion_nelbo(model, windows, 32, torch.Generator().manual_seed(MASK_SEEDS[split]), n_draws=4)
        curve = [[r["iter"], r["val_loss"]] for r in read_metrics(Path(d) / "metrics.jsonl") if r.get("kind") == "eval"]
        rows.append({"split": split, "nelbo": out["nelbo"], "stderr": out["stderr"], "windows": int(windows.size(0)),
                     "iter": meta["iter_num"], "prime": [model.config.prime_base, model.config.prime_bits],
                     "prime_embed": model.config.prime_embed if model.config.prime_bits else None,
                     "val_curve": curve, "out_dir": d,
                     "ms_per_iter": _ms_per_iter(Path(d) / "metrics.jsonl")})
    print(json.dumps(rows))


def _ms_per_iter(path: Path) -> float | None:
    rows = read_metrics(path)
    ms = sorted(r["ms"] for r in rows if r.get("kind") == "step" and r.get("iter", 0) >= 10)
    return ms[len(ms) // 2] if ms else None


def fair() -> dict:
    """AR's cross-entropy and repair's NELBO (seed 1337) from the fair ruler's JSON, on the same windows and masks."""
    d = read_json(FAIR, "the fair ruler's result")
    ar_dev = min(c["dev_loss"] for c in d["ar"]["selection"]["candidates"])
    rep_dev = d["diffusion"]["selection"]["candidates"][0]["dev_loss"]
    return {"json": str(FAIR.relative_to(REPO)), "ar": {"dev": ar_dev, "test": d["ar"]["val_loss"],
                                                         "test_stderr": d["ar"]["val_loss_stderr"]},
            "repair": {"dev": rep_dev, "test": d["diffusion"]["nelbo"], "test_stderr": d["diffusion"]["nelbo_stderr"]}}


def _mean_se(vals: list[float]) -> dict[str, float | None]:
    """Mean, standard error over the values (seeds; None for one) and the spread (min, max)."""
    m = sum(vals) / len(vals)
    se = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1) / len(vals)) ** 0.5 if len(vals) > 1 else None
    return {"mean": m, "se": se, "min": min(vals), "max": max(vals)}


def summary(result: dict) -> dict:
    """Per objective and split: the NELBO over training seeds (mean, s.e., spread) and its ratio to AR's CE of that
    split; and the chosen objective minus mdlm, paired by seed (the same seed's data order and masks)."""
    out: dict = {"by": "training seed; s.e. = sample std / sqrt(seeds)"}
    for split in ("test", "dev"):
        ar = result["fair"]["ar"][split]
        got = {}
        for name in (result["chosen"], "mdlm"):
            rows = sorted((r for r in result["rows"] if r["name"] == name and r["split"] == split),
                          key=lambda r: r["seed"])
            s = _mean_se([r["nelbo"] for r in rows])
            got[name] = {r["seed"]: r["nelbo"] for r in rows}
            out[f"{name}_{split}"] = {"seeds": [r["seed"] for r in rows], **s, "mean_over_ar": s["mean"] / ar,
                                      "min_over_ar": s["min"] / ar, "max_over_ar": s["max"] / ar}
        paired = [v - got["mdlm"][k] for k, v in got[result["chosen"]].items() if k in got["mdlm"]]
        out[f"{result['chosen']}_minus_mdlm_{split}"] = _mean_se(paired) if paired else None
    return out


def plot(paths: list[str], png: str) -> None:
    """Each scored run's val loss (the training objective on val batches: the NELBO estimate for mdlm and prime)
    against iterations, one line per run (a colour per objective; seed 1337 solid, 1338 dashed, 1339 dotted), from
    the screen and report JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen, colors = set(), {}
    for path in paths:
        for r in read_json(Path(path), "prime_ruler JSON")["rows"]:
            if (r["name"], r["seed"]) in seen:
                continue
            seen.add((r["name"], r["seed"]))
            its, vals = zip(*[(i, v) for i, v in r["val_curve"] if i > 0])
            color = colors.setdefault(r["name"], f"C{len(colors)}")  # one colour per objective, a style per seed
            ax.plot(its, vals, {SEEDS[0]: "-o", SEEDS[1]: "--", SEEDS[2]: ":"}.get(r["seed"], "-."), ms=3,
                    color=color, label=f"{r['name']} (seed {r['seed']})")
    ax.axhline(fair()["ar"]["dev"], color="k", lw=0.8, ls="--", label="AR dev CE (the ruler's)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("val loss = NELBO estimate (nats/char)")
    ax.set_title("partial masking vs mdlm, the fair ruler's contestant (4 x 128, 2,000 iterations)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def write(phase: str, result: dict, path: str | None) -> None:
    target = Path(path or REPO / "benchmarks" / f"prime-{phase}-cpu-{datetime.date.today()}.json")
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {target}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["screen", "report", "status", "plot", "summarize", "_score"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--screen", default=None, help="report: the screen's JSON (default: the newest in benchmarks/)")
    ap.add_argument("--png", default=None)
    a = ap.parse_args()
    if a.phase == "_score":
        return _score(a.rest[0], a.rest[1:])
    if a.phase == "plot":
        return plot(a.rest, a.png or str(Path(a.rest[-1]).with_suffix(".png")))
    if a.phase == "summarize":  # a report JSON written before the summary existed: add it, nothing else changes
        path = Path(a.rest[0])
        result = read_json(path, "prime_ruler report JSON")
        result["summary"] = summary(result)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["summary"], indent=1))
        return None
    started, load = datetime.datetime.now().isoformat(timespec="seconds"), list(os.getloadavg())
    screen = [(f"prime{b}", SEEDS[0]) for b in SCREEN_BITS]
    if a.phase == "status":
        for name in ["mdlm", *(n for n, _ in screen)]:
            for seed in SEEDS:
                meta = run_dir(name, seed) / "ckpt.json"
                it = saved_iter(meta.parent)
                print(f"{name:8s} seed {seed}: {'not started' if it is None else f'iter {it}'}")
        return None
    if a.phase == "screen":
        for name, seed in screen:
            train(name, seed)
        rows = score(screen, "dev")
        from nanodlm.evaluation.protocol import choose_on  # the protocol's one path for a choice: dev rows only

        best = rows[choose_on(rows, lambda r: r["nelbo"])]
        result = {"benchmark": "prime screen (dev)", "rows": rows, "chosen": best["name"], "by": "lowest dev NELBO",
                  "fair": fair()}
    else:
        screens = [Path(a.screen)] if a.screen else sorted((REPO / "benchmarks").glob("prime-screen-cpu-*.json"))
        chosen = read_json(screens[-1], "the screen's result")["chosen"]
        seeds = [int(s) for s in a.seeds.split(",")]
        runs = [(name, seed) for seed in seeds for name in (chosen, "mdlm")]
        for name, seed in runs:
            train(name, seed)
        rows = score(runs, "test") + score(runs, "dev")
        result = {"benchmark": "prime report (test)", "chosen": chosen, "rows": rows, "fair": fair()}
        result["summary"] = summary(result)
    result.update(ruler=RULER, started=started, finished=datetime.datetime.now().isoformat(timespec="seconds"),
                  load={"start": load, "end": list(os.getloadavg())}, command=" ".join(sys.argv))
    write(a.phase, result, a.json)
    return None


if __name__ == "__main__":
    main()
