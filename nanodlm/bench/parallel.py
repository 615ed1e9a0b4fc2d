"""``bench parallel``: how fast each diffusion decoding configuration writes, at what quality, against cached AR.

A configuration is (diffusion run, sampler, step budget, semi-AR block, approximate cache); its curve sweeps the
parallel-decoding threshold tau (``parallel_threshold``; 0 = the step schedule alone). Every point: judge PPL,
character entropy and distinct-4 (mean ± standard error over the sampling seeds), denoising forward passes per
256 characters, and chars/s at batch 1 and at batch ``num_samples``. The reference is the KV-cached AR model
(temperature as the options say) on the same judge. Timing is paired in one process: each diffusion
generation follows an AR generation of the same shape, and speed ratios are medians over those pairs.

Choose tau and friends with ``--split=dev`` and one set of seeds; report with ``--split=test`` and other seeds
(``protocol.py``: the seeds and the text that choose are never the ones that report).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.fileio import read_json
from ..core.report import save_figure
from ..data.dataset import open_split
from ..evaluation.judge import score_texts
from ..evaluation.protocol import choose_on, dev_test, seed_mean
from ..runs.checkpoint import load_model
from ..sampling.generate import Generation, Prompt, SamplerOptions, generate
from ..training.distributed import resolve_device
from .common import machine_info, now, parse_list, parse_sampling_args, print_table, write_json
from .frontier import Judge, real_text

QUALITY_KEYS = ("judge_ppl", "entropy_bits", "distinct_4")


@dataclass
class ParallelArgs:
    runs: str | None = None  # comma-separated runs (out_dir): bidirectional or block diffusion, or TiDAR (speculative)
    judge: str | None = None  # the AR judge's run (required)
    ar_out_dir: str | None = None  # the cached AR reference run (required)
    samplers: str = "confidence"  # comma-separated: confidence | remask (the samplers that take tau)
    steps: str = "256"  # comma-separated step budgets (with tau > 0 an upper bound)
    schedules: str = "cosine"  # comma-separated: cosine | linear (the step schedule a floor) | threshold (tau alone)
    taus: str = "0,0.5,0.7,0.9"  # comma-separated parallel_threshold values: the points of each curve
    semi_ar_blocks: str = "0"  # bidirectional runs: comma-separated semi-AR blocks (0 = the whole canvas)
    approx_caches: str = "none"  # with a semi-AR block: comma-separated none | prefix | dual
    draft_lens: str = "0"  # TiDAR runs (sampler speculative): comma-separated draft lengths k (0 = the model's)
    seeds: str = "1,2,3"  # sampling seeds: each point's quality is the mean over them
    num_samples: int = 32  # texts per seed: the large batch
    length: int = 256  # characters (tokens) per text
    batch1_reps: int = 3  # timed batch-1 generations per point, each paired with an AR one
    split: str = "dev"  # real-text reference passages: dev | test half of val (protocol.py)
    data_dir: str | None = None  # real text: default the AR run's data_dir and dataset
    dataset: str | None = None
    ckpt: str = "last"
    device: str = "auto"
    choose_from: str | None = None  # a dev run's JSON: measure only each curve's point chosen there (see choose)
    json: str | None = None  # default parallel.json
    png: str | None = None  # default: the JSON path with .png

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.length < 2 or self.batch1_reps < 1:
            raise UserError("--num_samples and --batch1_reps must be >= 1 and --length >= 2; got "
                            f"{self.num_samples}, {self.batch1_reps}, {self.length}")
        if self.split not in ("dev", "test"):
            raise UserError(f"--split must be dev or test; got {self.split!r}")
        for key, kind in (("samplers", str), ("steps", int), ("schedules", str), ("taus", float),
                          ("semi_ar_blocks", int), ("approx_caches", str), ("seeds", int), ("draft_lens", int)):
            parse_list(getattr(self, key), kind, key)  # a one-line error now, not after the models load


@dataclass
class _Model:
    name: str
    model: Any
    tok: Any
    meta: dict[str, Any]


def _load(out_dir: str, ckpt: str, device: str) -> _Model:
    model, meta, tok = load_model(out_dir, ckpt, device)
    block = model.config.diffusion_block
    return _Model(Path(out_dir).name + (f" (block {block})" if block else ""), model, tok, meta)


def _run(m: _Model, options: SamplerOptions, length: int, batch: int, seed: int) -> Generation:
    return generate(m.model, m.tok, options, Prompt(length=length, max_new_tokens=length), num_samples=batch,
                    seed=seed)


def _passes_per_256(out: Generation) -> float:
    """Forward passes per 256 characters, per sample: what batch 1 would run."""
    info = out.info
    chars = sum(len(t) for t in out.completions) / len(out.completions)
    return statistics.mean(info.get("passes_per_sample") or [info["forward_passes"]]) * 256 / chars


class _Point:
    """Quality over the seeds and paired speed of one configuration, with the AR reference it ran beside."""

    def __init__(self, args: ParallelArgs, ar: _Model, ar_options: SamplerOptions, judge: Any) -> None:
        self.args, self.ar, self.ar_options, self.judge = args, ar, ar_options, judge
        self.ar_quality: dict[int, dict[str, Any]] = {}  # seed -> judged AR samples (once per seed)
        self.ar_speed: dict[str, list[float]] = {"b1": [], "bN": []}
        self.ar_passes: list[float] = []  # AR's passes per 256 characters, counted like every sampler's

    def measure(self, m: _Model, options: SamplerOptions) -> dict[str, Any]:
        a, per_seed, ratios = self.args, [], {"b1": [], "bN": []}
        speed: dict[str, list[float]] = {"b1": [], "bN": []}
        for seed in parse_list(a.seeds, int, "seeds"):
            ar_out = _run(self.ar, self.ar_options, a.length, a.num_samples, seed)  # paired: AR, then diffusion
            out = _run(m, options, a.length, a.num_samples, seed)
            if seed not in self.ar_quality:
                self.ar_quality[seed] = {**score_texts(*self.judge, ar_out.completions), "seed": seed}
                self.ar_passes.append(_passes_per_256(ar_out))
            per_seed.append({**score_texts(*self.judge, out.completions), "seed": seed,
                             "passes_per_256": _passes_per_256(out), "chars_per_s": out.info["chars_per_s"],
                             "example": out.completions[0][:200]})
            self._pair("bN", ar_out, out, speed, ratios)
        for rep in range(a.batch1_reps):
            seed = 10_000 + rep
            self._pair("b1", _run(self.ar, self.ar_options, a.length, 1, seed), _run(m, options, a.length, 1, seed),
                       speed, ratios)
        row = {**seed_mean(per_seed, (*QUALITY_KEYS, "passes_per_256")), "split": a.split}
        for b in ("b1", "bN"):
            row[f"chars_per_s_{b}"] = statistics.median(speed[b])
            row[f"speedup_{b}"] = statistics.median(ratios[b])  # median over pairs of diffusion / AR chars/s
        return {**row, "example": per_seed[0]["example"], "per_seed": per_seed}

    def _pair(self, b: str, ar_out: Generation, out: Generation, speed: dict[str, list[float]],
              ratios: dict[str, list[float]]) -> None:
        self.ar_speed[b].append(ar_out.info["chars_per_s"])
        speed[b].append(out.info["chars_per_s"])
        ratios[b].append(out.info["chars_per_s"] / ar_out.info["chars_per_s"])

    def ar_row(self) -> dict[str, Any]:
        row = seed_mean(list(self.ar_quality.values()), QUALITY_KEYS)
        return {**row, "passes_per_256": statistics.mean(self.ar_passes),
                "chars_per_s_b1": statistics.median(self.ar_speed["b1"]),
                "chars_per_s_bN": statistics.median(self.ar_speed["bN"])}


def _configurations(args: ParallelArgs, m: _Model) -> list[dict[str, Any]]:
    """The (sampler, steps, schedule, semi_ar_block, approx_cache) of each curve for model m; block models decode
    in their own blocks (semi-AR blocks and approximate caches apply to bidirectional models only)."""
    if m.model.config.model_type == "gpt2":  # a TiDAR model: draft and verify, one curve per draft length
        return [dict(sampler="speculative", steps=args.length, schedule="cosine", semi_ar_block=0, approx_cache="none",
                     draft_len=k or None) for k in parse_list(args.draft_lens, int, "draft_lens")]
    bidirectional = not m.model.config.diffusion_block
    out = []
    for sampler in parse_list(args.samplers, str, "samplers"):
        for steps in parse_list(args.steps, int, "steps"):
            for schedule in parse_list(args.schedules, str, "schedules"):
                for block in (parse_list(args.semi_ar_blocks, int, "semi_ar_blocks") if bidirectional else [0]):
                    for cache in (parse_list(args.approx_caches, str, "approx_caches") if block else ["none"]):
                        out.append(dict(sampler=sampler, steps=steps, schedule=schedule, semi_ar_block=block,
                                        approx_cache=cache))
    return out


def meets_bar(p: dict[str, Any], ar: dict[str, Any], real: dict[str, Any] | None) -> bool:
    """The quality bar: judge PPL <= 1.5 x AR's and character entropy within 3% of real text's (AR's without it)."""
    ref = (real or ar)["entropy_bits"]
    return p["judge_ppl"] <= 1.5 * ar["judge_ppl"] and abs(p["entropy_bits"] / ref - 1) <= 0.03


def choose(dev: dict[str, Any], report_seeds: list[int]) -> list[dict[str, Any]]:
    """Each curve's point chosen on a dev run, through ``choose_on``: the fastest at batch 1 within the quality bar
    (``meets_bar``), or, when none meets it, the one with the lowest judge PPL (marked ``meets_bar: false``).
    Refuses a run measured on test (each point carries its split; older files, the run's ``--split``) or with any
    of the report seeds."""
    used = set(parse_list(dev.get("args", {}).get("seeds", ""), int, "seeds"))
    if used & set(report_seeds):
        raise UserError(f"seeds {sorted(used & set(report_seeds))} chose on dev; report with other --seeds")
    chosen = []
    for c in dev["curves"]:
        points = [{"split": dev.get("args", {}).get("split"), **p} for p in c["points"]]
        ok = [p for p in points if meets_bar(p, dev["ar"], dev.get("real"))]
        if ok:  # the fastest within the bar; else the lowest judge PPL
            best = ok[choose_on(ok, lambda p: -p["speedup_b1"])]
        else:
            best = points[choose_on(points, lambda p: p["judge_ppl"])]
        keys = ("sampler", "steps", "schedule", "semi_ar_block", "approx_cache")
        extra = {"draft_len": c.get("draft_len")} if c["sampler"] == "speculative" else {}
        chosen.append({"run": c["run"], **{k: c.get(k, "cosine" if k == "schedule" else None) for k in keys},
                       **extra, "tau": best["tau"], "meets_bar": bool(ok)})
    return chosen


def read_choices(path: str, runs: list[str], report_seeds: list[int]) -> list[dict[str, Any]]:
    """``choose`` on the dev JSON at ``path``, checked before any model loads: every run of ``--runs`` must have
    curves there (a dev file of other runs would leave nothing to measure)."""
    dev = read_json(Path(path), "--choose_from file", dict, "; give a bench parallel --split=dev result")
    for key in ("args", "curves", "ar"):
        if key not in dev:
            raise UserError(f"--choose_from {path} has no {key!r}; give a bench parallel --split=dev result")
    picks = choose(dev, report_seeds)
    missing = [r for r in runs if not any(Path(p["run"]) == Path(r) for p in picks)]
    if missing:
        raise UserError(f"--choose_from {path} has no curves for {', '.join(missing)} (it measured "
                        f"{', '.join(sorted({p['run'] for p in picks})) or 'nothing'}); give the dev result of "
                        "the same --runs")
    return picks


def _curve_name(m: _Model, c: dict[str, Any]) -> str:
    if c["sampler"] == "speculative":
        return f"{m.name}, speculative k={c.get('draft_len') or m.model.config.draft_len}"
    name = f"{m.name}, {c['sampler']} {c['steps']} steps" + (f" {c['schedule']}" if c["schedule"] != "cosine" else "")
    if c["semi_ar_block"]:
        name += f", semi-AR {c['semi_ar_block']}" + (f" {c['approx_cache']} cache" if c["approx_cache"] != "none"
                                                     else "")
    return name


def _real_text(args: ParallelArgs, ar: _Model, judge: tuple[Any, Any]) -> dict[str, Any] | None:
    """Real passages of the chosen half of val, one set per seed, scored like the samples (the fair ruler's)."""
    cfg = ar.meta.get("config", {})
    data_dir, dataset = args.data_dir or cfg.get("data_dir", "data"), args.dataset or cfg.get("dataset", "")
    try:
        splits = dev_test(open_split(data_dir, dataset, "val"))
    except UserError as e:  # no prepared data here: the table loses its real-text row, not the benchmark
        print(f"no real-text row: {e}")
        return None
    seeds = {args.split: parse_list(args.seeds, int, "seeds")}
    return real_text(splits, judge[1].decode, Judge(*judge), seeds, args.num_samples, args.length)[args.split]


def bench_parallel(argv: list[str]) -> dict[str, Any]:
    """Judge PPL against chars/s for every configuration and tau, with cached AR as the reference point."""
    args, options, _ = parse_sampling_args("parallel", ParallelArgs, argv)
    if not args.runs or not args.judge or not args.ar_out_dir:
        raise UserError("bench parallel needs --runs=DIFFUSION_DIR[,DIR...] --judge=JUDGE_DIR --ar_out_dir=AR_DIR")
    picks = None
    if args.choose_from:  # before any model loads
        picks = read_choices(args.choose_from, parse_list(args.runs, str, "runs"), parse_list(args.seeds, int, "seeds"))
    device = resolve_device(args.device)
    ar, judge_m = _load(args.ar_out_dir, args.ckpt, device), _load(args.judge, args.ckpt, device)
    for m, role in ((ar, "--ar_out_dir"), (judge_m, "--judge")):
        if m.model.config.model_type != "gpt2":
            raise UserError(f"{role} must be a gpt2 run; {m.name} is {m.model.config.model_type}")
    judge = (judge_m.model, judge_m.tok)
    ar_options = SamplerOptions(temperature=options.temperature, top_k=options.top_k, top_p=options.top_p)
    point = _Point(args, ar, ar_options, judge)
    taus = parse_list(args.taus, float, "taus")
    _run(ar, ar_options, args.length, args.num_samples, 0)  # warm-up: library start-up, first-seen shapes
    curves = []
    for out_dir in parse_list(args.runs, str, "runs"):
        m = _load(out_dir, args.ckpt, device)
        if m.model.config.model_type != "diffusion" and not getattr(m.model.config, "draft_len", 0):
            raise UserError(f"--runs takes diffusion runs or TiDAR runs (objective=tidar); {out_dir} is a plain "
                            f"{m.model.config.model_type} model")
        configs = [(c, taus) for c in _configurations(args, m)] if picks is None else [
            ({k: v for k, v in p.items() if k not in ("run", "tau", "meets_bar")}, [p["tau"]])
            for p in picks if Path(p["run"]) == Path(out_dir)]
        for c, curve_taus in configs:
            base = dataclasses.replace(options, **c, parallel_threshold=max(curve_taus) or 0.5)  # replaced per tau
            _run(m, dataclasses.replace(base, steps=1), args.length, args.num_samples, 0)  # warm-up
            points = []
            if c["sampler"] == "speculative":
                curve_taus = [0.0]  # no threshold: the verifier decides what is written
            for tau in curve_taus:
                if tau == 0 and c["schedule"] == "threshold":
                    continue  # no threshold: the threshold schedule needs tau > 0
                row = point.measure(m, dataclasses.replace(base, parallel_threshold=tau))
                points.append({"tau": tau, **row})
                print(f"{_curve_name(m, c)}, tau {tau}: judge PPL {row['judge_ppl']:.2f}, "
                      f"{row['passes_per_256']:.0f} passes/256 chars, {row['chars_per_s_b1']:,.0f} chars/s (batch 1)")
            curves.append({"name": _curve_name(m, c), "run": out_dir, **c, "points": points})
    ar_row = point.ar_row()
    result = {"benchmark": "parallel", "date": now(), "machine": machine_info(device), "judge": args.judge,
              "chosen_on_dev": picks, "load": list(os.getloadavg()),
              "ar_out_dir": args.ar_out_dir, "args": dataclasses.asdict(args), "options": dataclasses.asdict(options),
              "ar": ar_row, "real": _real_text(args, ar, judge), "curves": curves}
    _print(result)
    json_path = args.json or "parallel.json"
    write_json(json_path, result)
    png = args.png or str(Path(json_path).with_suffix(".png"))
    if json_path != "-" and plot_frontier_speed(result, png):
        print(f"wrote {png}")
    return result


def _print(result: dict[str, Any]) -> None:
    ar, real, n = result["ar"], result["real"], result["args"]["num_samples"]

    def ppl(row: dict[str, Any]) -> str:
        return f"{row['judge_ppl']:.3g} ± {row['judge_ppl_se']:.2g}"

    rows = [[c["name"], p["tau"], ppl(p), p["judge_ppl"] / ar["judge_ppl"], p["entropy_bits"], p["passes_per_256"],
             p["chars_per_s_b1"], p["speedup_b1"], p["chars_per_s_bN"], p["speedup_bN"]]
            for c in result["curves"] for p in c["points"]]
    rows.append(["AR (KV cache)", None, ppl(ar), 1.0, ar["entropy_bits"], ar["passes_per_256"], ar["chars_per_s_b1"],
                 1.0, ar["chars_per_s_bN"], 1.0])
    if real:
        rows.append([f"real text ({real['split']})", None, ppl(real), None, real["entropy_bits"], None, None, None,
                     None, None])
    print_table("parallel decoding: diffusion decoding vs cached AR, judged by " + result["judge"],
                ["configuration", "tau", "judge PPL", "× AR", "entropy", "passes/256", "chars/s b1", "× AR",
                 f"chars/s b{n}", "× AR"], rows)


def plot_frontier_speed(result: dict[str, Any], png_path: str | Path) -> bool:
    """Judge PPL (log) against chars/s (log) at batch 1 and batch N: one curve per configuration (its taus
    labelled), AR as a star, the quality bar (1.5 x AR PPL) and the speed target (2 x AR) dashed. False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ar = result["ar"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    for ax, b, label in zip(axes, ("b1", "bN"), ("batch 1", f"batch {result['args']['num_samples']}"), strict=True):
        for i, c in enumerate(result["curves"]):
            pts = c["points"]
            x, y = [p[f"chars_per_s_{b}"] for p in pts], [p["judge_ppl"] for p in pts]
            yerr = [p["judge_ppl_se"] if p["judge_ppl_se"] == p["judge_ppl_se"] else 0.0 for p in pts]
            ax.errorbar(x, y, yerr=yerr, fmt="o-", color=f"C{i % 10}", capsize=2, ms=4, label=c["name"])
            for p in pts:
                ax.annotate(f"{p['tau']:g}", (p[f"chars_per_s_{b}"], p["judge_ppl"]), textcoords="offset points",
                            xytext=(3, 3), fontsize=7, color=f"C{i % 10}")
        ax.plot([ar[f"chars_per_s_{b}"]], [ar["judge_ppl"]], "*", ms=14, color="k", label="AR (KV cache)")
        ax.axhline(1.5 * ar["judge_ppl"], color="gray", ls="--", lw=1, label="1.5 × AR PPL")
        ax.axvline(2 * ar[f"chars_per_s_{b}"], color="gray", ls=":", lw=1, label="2 × AR chars/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"chars / s ({label}, log)")
        ax.set_ylabel("judge perplexity (log; lower is better)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{result['args']['length']} characters; labels: tau (parallel_threshold)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png_path)
