"""``bench quality``: the AR vs diffusion protocol on any prepared dataset, chosen on dev, reported on test.

In one command (``--dataset``, default shakespeare_char, under ``work_dir/data``):

1. **Runs.** Train (or reuse) every candidate of each side, each in ``work_dir/runs/<side>-<hash8>``
   (``bench/runs.py``): the AR model over positions x learning rates, the diffusion model over learning rates, the
   judge over its own list; the lists are preset data.
2. **Selection on dev** (the first half of val.bin, ``protocol.py``): each side keeps the candidate with the
   lowest dev loss (AR cross-entropy, diffusion NELBO); every model at its last checkpoint.
3. **The frontier.** Each model's sampling knob is swept (AR: temperature; diffusion: ``--knob``, default
   prior_weight) and every point judged at the selection seeds against real dev text and at the report seeds
   against real test text. The operating point is the knob value whose dev entropy is nearest real dev text's.
4. **Report on test** (the second half of val.bin, report seeds only): test loss / NELBO, judge PPL, entropy and
   distinct-4 at the operating point (mean ± standard error over the seeds), and the headline: each model's
   judge PPL at real test text's entropy, interpolated on its test curve (``protocol.ppl_at_entropy``).

Judge perplexity is the "generative perplexity" of MDLM (Sahoo et al. 2024, arXiv:2406.07524).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..core.fileio import read_json
from ..data.dataset import open_split
from ..data.tokenizers import load_tokenizer
from ..evaluation.evaluate import ar_cross_entropy, diffusion_nelbo, eval_windows
from ..evaluation.protocol import REPORT_SPLIT, SELECTION_SPLIT, choose_on, dev_test, plot_frontier
from ..runs.checkpoint import load_model
from ..sampling.generate import Prompt, SamplerOptions, generate
from ..sampling.samplers import DIFFUSION_SAMPLERS, sampler_keys
from ..training.config import TrainConfig, build_config, read_config_file
from ..training.distributed import resolve_device
from .common import BENCH_DEFAULTS, machine_info, now, parse_list, parse_sampling_args, print_table, write_json
from .frontier import Judge, operating_point, point, real_text, sweep
from .presets import FIXED_A_PRIORI, PRESETS
from .runs import CKPT, PROTECTED, ROLES, describe, ensure_dataset, plan_run, route_overrides
from .search import Lanes, estimate, search_all


def _floats(text: str | None, key: str) -> list[float] | None:
    return None if text is None else parse_list(text, float, key)


@dataclass
class QualityArgs:
    preset: str = "cpu"  # cpu | smoke
    dataset: str = "shakespeare_char"  # any dataset prepared in <work_dir>/data (char or BPE)
    json: str | None = None  # default <work_dir>/quality-<dataset>-<preset>.json
    png: str | None = None  # the frontier plot; default: the JSON path with .png
    work_dir: str = "~/.cache/nanodlm/quality"  # data/ and runs/ live here; trained runs are reused from it
    lanes: int = 1  # runs train in this many single-thread worker processes at once (1: in this process)
    launcher: str = ""  # a command each training process starts under, e.g. ../shared/bin/cpu-slot
    screen_iters: int | None = None  # the screen's budget (default: the preset's; 0 = no screen)
    diffusion_run: str | None = None  # judge this trained diffusion run (e.g. an adapted model) instead of searching
    train_only: bool = False  # train (or reuse) every run, print the chosen ones and stop: no sampling, no JSON
    threads: int = 1  # torch CPU threads of this process while runs train (dev losses); 0 = torch's default
    sampling_threads: int | None = None  # threads once every run is trained (sampling, judging); default: one per lane
    objective: str = BENCH_DEFAULTS["objective"]  # the diffusion model's training objective
    pos_emb: str = BENCH_DEFAULTS["pos_emb"]  # the diffusion model's positions
    ar_pos_emb: str | None = None  # AR search, comma lists (default: the preset's), e.g. learned,rope
    ar_learning_rate: str | None = None  # e.g. 1e-3,2e-3,3e-3
    diffusion_learning_rate: str | None = None  # diffusion search (default: the preset's)
    knob: str = "prior_weight"  # the diffusion sampler option swept: prior_weight | noise | temperature
    knob_values: str | None = None  # comma list (default: the preset's for --knob)
    temperatures: str | None = None  # AR's frontier, comma list (default: the preset's)
    selection_seeds: str | None = None  # sampling seeds that choose (default: the preset's)
    report_seeds: str | None = None  # sampling seeds that report, at least 3, none of the selection seeds
    steps: int | None = None  # diffusion sampling steps (default: the preset's)
    compare_sampler: str | None = "ancestral"  # also report the same diffusion model with this sampler
    num_samples: int | None = None  # texts per seed (default: the preset's)
    length: int | None = None  # tokens per sample (default: the preset's)
    device: str = "auto"
    progress: bool = True  # tqdm bars while training

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.lanes < 1:
            raise UserError(f"--lanes must be >= 1; got {self.lanes}")
        if self.threads < 0 or (self.sampling_threads is not None and self.sampling_threads < 0):
            raise UserError("--threads and --sampling_threads must be >= 0 (0: torch's default)")
        if self.screen_iters is not None and self.screen_iters < 0:
            raise UserError(f"--screen_iters must be >= 0 (0: no screen); got {self.screen_iters}")
        for key in ("steps", "num_samples", "length"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"--{key} must be >= 1; got {getattr(self, key)}")
        if self.knob not in PRESETS[self.preset]["knob"]:
            raise UserError(f"--knob must be one of {', '.join(PRESETS[self.preset]['knob'])}; got {self.knob!r}")


def _searches(args: QualityArgs, preset: dict[str, Any]) -> dict[str, dict[str, dict[str, list[Any]]]]:
    search = {role: {grid: dict(values) for grid, values in preset["search"][role].items()} for role in ROLES}
    if args.ar_pos_emb is not None:
        search["ar"]["screen"]["pos_emb"] = [v.strip() for v in args.ar_pos_emb.split(",") if v.strip()]
    for role, text in (("ar", args.ar_learning_rate), ("diffusion", args.diffusion_learning_rate)):
        if text is not None:
            search[role]["screen"]["learning_rate"] = _floats(text, f"{role}_learning_rate")
    return search


def _seeds(args: QualityArgs, preset: dict[str, Any]) -> dict[str, list[int]]:
    seeds = {split: [int(s) for s in (_floats(text, key) or preset[key])]
             for split, text, key in (("dev", args.selection_seeds, "selection_seeds"),
                                      ("test", args.report_seeds, "report_seeds"))}
    if set(seeds["dev"]) & set(seeds["test"]):
        raise UserError(f"a seed cannot both choose and report: selection {seeds['dev']}, report {seeds['test']}")
    if len(seeds["test"]) < 3:
        raise UserError(f"--report_seeds needs at least 3 seeds for a standard error; got {seeds['test']}")
    return seeds


# --- bench quality --------------------------------------------------------------------------------------------

def choose_runs(runs: dict[str, list[dict[str, Any]]],
                dev_loss: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each role's run with the lowest dev loss, through ``choose_on``: ``dev_loss(run)`` (stored as
    ``run["dev"]``) carries the split its windows came from, so a loss measured on test is refused."""
    chosen = {}
    for role, role_runs in runs.items():
        for run in role_runs:
            run["dev"] = dev_loss(run)
            print(f"  {role} {run['search'] or ''}: dev loss {run['dev']['loss']:.4f} ({run['out_dir']})")
        chosen[role] = role_runs[choose_on([run["dev"] for run in role_runs], lambda m: m["loss"])]
    return chosen


def bench_quality(argv: list[str]) -> dict[str, Any]:
    """The whole protocol (see the module docstring) -> the result dict, also written as JSON (and a PNG)."""
    args, options, rest = parse_sampling_args("quality", QualityArgs, argv, strict=False)
    routed = route_overrides(rest, [f.name for f in fields(QualityArgs)])
    preset = PRESETS[args.preset]
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = dataclasses.replace(options, steps=args.steps or preset["steps"])
    num_samples, length = args.num_samples or preset["num_samples"], args.length or preset["length"]
    seeds = _seeds(args, preset)
    knob_values = _floats(args.knob_values, "knob_values") or preset["knob"][args.knob]
    temperatures = _floats(args.temperatures, "temperatures") or preset["temperature"]
    if args.knob != "temperature" and args.knob not in sampler_keys(options.sampler):
        raise UserError(f"sampler {options.sampler} does not take --{args.knob}; choose --knob=temperature or a "
                        f"sampler that takes it")
    searches = _searches(args, preset)
    if args.compare_sampler is not None and args.compare_sampler not in DIFFUSION_SAMPLERS:
        raise UserError(f"--compare_sampler must be one of {', '.join(DIFFUSION_SAMPLERS)} or None; got "
                        f"{args.compare_sampler!r}")

    # ---- data and runs: every candidate of every side, trained once, then reused while its config is unchanged
    work_dir = Path(args.work_dir).expanduser()
    data_dir = work_dir / "data"
    meta = ensure_dataset(data_dir, args.dataset)
    judge_values = preset["judge"]
    if isinstance(judge_values, tuple):  # (a config file, overrides)
        file, extra = judge_values
        judge_values = {**{k: v for k, v in read_config_file(file).items() if k not in PROTECTED}, **extra}
    base = {"ar": {**preset["model"], "model_type": "gpt2"},
            "diffusion": {**preset["model"], "model_type": "diffusion", "objective": args.objective,
                          "pos_emb": args.pos_emb, "learning_rate": BENCH_DEFAULTS["learning_rate"],
                          "copy_weight": BENCH_DEFAULTS["copy_weight"]},
            "judge": {**judge_values, "model_type": "gpt2"}}
    screen_iters = preset["screen_iters"] if args.screen_iters is None else args.screen_iters
    launcher = shlex.split(args.launcher)

    def plan(role: str, values: dict[str, Any]) -> dict[str, Any]:
        return plan_run(role, {**values, **routed[role]}, work_dir, data_dir, args.dataset, device,
                        args.progress and args.lanes == 1 and not launcher)

    # ---- dev loss of any model: selection (screens, finals) on dev; the chosen models' test loss is reported
    splits = dev_test(open_split(str(data_dir), args.dataset, "val"))
    eval_bs = preset["eval_batch_size"]
    windows: dict[tuple[str, int], torch.Tensor] = {}

    def loss(model: torch.nn.Module, split: str) -> dict[str, Any]:  # stamped with its split: choose_on reads it
        T = model.config.block_size  # (N, T+1) windows of that split, shared by every model of that T
        if (split, T) not in windows:
            n = min(preset["eval_windows"], max(1, len(splits[split]) // (T + 1)))
            windows[split, T] = eval_windows(splits[split], T, n)
        if model.config.model_type == "gpt2":
            out = ar_cross_entropy(model, windows[split, T], eval_bs)
            return {"loss": out["loss"], "stderr": out["stderr"], "tokens": out["tokens"], "split": split}
        gen = torch.Generator(device=device).manual_seed(seeds[split][0])  # the masks: a seed of that split
        out = diffusion_nelbo(model, windows[split, T], eval_bs, gen, n_draws=4)
        return {"loss": out["nelbo"], "stderr": out["stderr"], "tokens": out["tokens"], "split": split}

    def dev_loss(run: dict[str, Any]) -> dict[str, Any]:
        model, _, _ = load_model(run["out_dir"], CKPT, device)
        return loss(model, "dev")

    # ---- runs: screens then finals in parallel lanes, each trained once and reused while its config is unchanged
    started, load_start = time.perf_counter(), os.getloadavg()
    est = estimate(searches, base, screen_iters, plan, args.lanes)
    est["sampling_s"] = preset["sampling_minutes"] * 60
    est["wall_s"] = est["train_wall_s"] + est["sampling_s"]
    print(f"estimate: {est['runs'] - est['cached']} of {est['runs']} runs to train ({est['cached']} cached), "
          f"about {est['train_wall_s'] / 60:.0f} min on {args.lanes} lane(s) + {est['sampling_s'] / 60:.0f} min "
          f"sampling and judging = {est['wall_s'] / 60:.0f} min (load now {load_start[0]:.1f})")
    lanes = Lanes(args.lanes, launcher, work_dir / "jobs")
    if args.diffusion_run:
        searches.pop("diffusion")
    runs, screens = search_all(searches, base, screen_iters, plan, dev_loss, lanes)
    if args.diffusion_run:
        runs["diffusion"], screens["diffusion"] = [external_run(args.diffusion_run)], []
    train_s = time.perf_counter() - started
    sampling_threads = args.lanes * args.threads if args.sampling_threads is None else args.sampling_threads
    if sampling_threads:  # both sides sample with the same threads: their chars/s stay comparable
        torch.set_num_threads(sampling_threads)

    print(f"choosing on {SELECTION_SPLIT}")
    models, toks, tests = {}, {}, {}
    chosen = choose_runs(runs, dev_loss)
    for role in runs:
        if args.train_only:
            print(f"  {role}: chosen {chosen[role]['search'] or ''} {chosen[role]['out_dir']}")
            continue
        models[role], _, toks[role] = load_model(chosen[role]["out_dir"], CKPT, device)
        tests[role] = loss(models[role], "test")
    if args.train_only:
        return {role: run["out_dir"] for role, run in chosen.items()}

    # ---- the frontier: dev curves choose the operating point, test curves report it
    judge = Judge(models["judge"], toks["judge"])
    data_tok = load_tokenizer(meta)
    real = real_text(splits, data_tok.decode, judge, seeds, num_samples, length)
    prompts = {"ar": Prompt(max_new_tokens=length), "diffusion": Prompt(length=length)}
    knobs = {"ar": ("temperature", temperatures), "diffusion": (args.knob, knob_values)}
    curves, points = {}, {}
    for role in ("ar", "diffusion"):
        generate(models[role], toks[role], dataclasses.replace(options, steps=1), prompts[role],
                 num_samples=num_samples, seed=0)  # warm-up: kernels and shapes, so the first timing is fair
        knob, values = knobs[role]
        print(f"{role}: sweeping {knob} over {values}")
        curves[role] = sweep(models[role], toks[role], options, prompts[role], judge, knob, values, seeds, num_samples)
        points[role] = operating_point(curves[role], real)
    compare = None
    if args.compare_sampler and args.compare_sampler != options.sampler:
        opts = dataclasses.replace(options, sampler=args.compare_sampler,
                                   **{args.knob: points["diffusion"]["chosen"]})  # the same setting, other sampler
        compare = point(models["diffusion"], toks["diffusion"], opts, prompts["diffusion"], judge, num_samples,
                        seeds["test"], sampler=args.compare_sampler, steps=options.steps)

    # ---- the result
    def side(role: str, main_key: str) -> dict[str, Any]:
        op, test = points[role], tests[role]
        p = op["point"]
        knob, _ = knobs[role]
        sampling = _sampling(role, dataclasses.replace(options, **{knob: op["chosen"]}), length)
        return {
            main_key: test["loss"], f"{main_key}_stderr": test["stderr"], "loss_split": "test",
            "loss_tokens": test["tokens"],
            **{k: p[k] for k in ("judge_ppl", "judge_ppl_se", "entropy_bits", "entropy_bits_se", "distinct_4",
                                 "distinct_4_se")},
            **{k: op[k] for k in ("ppl_at_real_entropy", "ppl_at_real_entropy_se", "real_entropy_in_range",
                                  "swept_entropy_bits")},
            "steps": length if role == "ar" else options.steps, "forward_passes": p.get("forward_passes"),
            "chars_per_s": p["chars_per_s"], "chars_per_s_se": p["chars_per_s_se"],
            "config": {"train": describe(chosen[role], models[role])["train_config"], "sampling": sampling,
                       "knob": knob, "knob_value": op["chosen"]},
            "selection": {"by": "lowest dev loss" if role == "ar" else "lowest dev NELBO",
                          "candidates": [{**r["search"], "dev_loss": r["dev"]["loss"], "dev_stderr": r["dev"]["stderr"],
                                          "out_dir": r["out_dir"]} for r in runs[role]],
                          "chosen": chosen[role]["search"],
                          "screen": [{**r["search"], "dev_loss": r["dev"]["loss"], "dev_stderr": r["dev"]["stderr"],
                                      "max_iters": r["cfg"].max_iters, "out_dir": r["out_dir"]} for r in screens[role]],
                          "knob": f"{knob}={op['chosen']:g}: dev entropy nearest real dev text's"},
            "frontier": {"knob": knob, **curves[role]},
            "example": p["example"],
        }

    ar, dm = side("ar", "val_loss"), side("diffusion", "nelbo")
    judge_loss = tests["judge"]["loss"]
    result: dict[str, Any] = {
        "benchmark": "quality",
        "real": {**{k: real["test"][k] for k in ("judge_ppl", "judge_ppl_se", "entropy_bits", "entropy_bits_se",
                                                 "distinct_4", "distinct_4_se", "example")}, "dev": real["dev"]},
        "ar": ar, "diffusion": dm, "diffusion_compare": compare,
        "judge": {"val_loss": judge_loss, "val_loss_stderr": tests["judge"]["stderr"], "loss_split": "test",
                  "stronger_than_contestants": judge_loss < min(ar["val_loss"], dm["nelbo"]),
                  "selection": [{**r["search"], "dev_loss": r["dev"]["loss"]} for r in runs["judge"]]},
        "ratios": {"ppl_at_real_entropy_over_ar": _ratio(dm["ppl_at_real_entropy"], ar["ppl_at_real_entropy"]),
                   "nelbo_over_ar": _ratio(dm["nelbo"], ar["val_loss"]),
                   "judge_ppl_over_ar": _ratio(dm["judge_ppl"], ar["judge_ppl"]),
                   "chars_per_s_over_ar": _ratio(dm["chars_per_s"], ar["chars_per_s"])},
        "protocol": {
            "selection_split": SELECTION_SPLIT, "report_split": REPORT_SPLIT,
            "seeds": {"selection": seeds["dev"], "report": seeds["test"],
                      "nelbo_masks": {"dev": seeds["dev"][0], "test": seeds["test"][0]}},
            "split_tokens": {"dev": [0, len(splits["dev"])], "test": [len(splits["dev"]), len(splits["dev"]) +
                                                                       len(splits["test"])]},
            "eval_windows": {s: int(windows[s, models["ar"].config.block_size].size(0)) for s in ("dev", "test")},
            "preset": args.preset, "dataset": args.dataset, "tokenizer": meta.get("tokenizer", "char"),
            "checkpoint": f"{CKPT} (after max_iters)", "nelbo_draws": 4, "num_samples": num_samples,
            "length": length, "ar_prompt": "\n",
            **{role: describe(chosen[role], models[role]) for role in ROLES},
            "fixed_a_priori": FIXED_A_PRIORI if args.preset == "cpu" else {},
            "screen_iters": screen_iters, "lanes": args.lanes, "launcher": args.launcher,
            "threads": {"training": args.threads, "sampling": sampling_threads or torch.get_num_threads()},
            "estimate": est, "train_wall_s": train_s, "wall_s": time.perf_counter() - started,
            "load": {"start": list(load_start), "end": list(os.getloadavg())},
            "runs_trained": sum(not r["reused"] for rs in (*runs.values(), *screens.values()) for r in rs),
            "date": now(), "machine": machine_info(device),
        },
    }
    _print(result, args, options)
    json_path = args.json or str(work_dir / f"quality-{args.dataset}-{args.preset}.json")
    write_json(json_path, result)
    png = args.png or (str(Path(json_path).with_suffix(".png")) if json_path != "-" else None)
    if png and plot_frontier({"AR": {"knob": "temperature", "rows": curves["ar"]["test"]},
                              "diffusion": {"knob": args.knob, "rows": curves["diffusion"]["test"]}},
                             real["test"], png, f"{args.dataset}, preset {args.preset}: test text, report seeds"):
        print(f"wrote {png}")
    return result


def external_run(out_dir: str) -> dict[str, Any]:
    """A diffusion run trained outside the protocol, as a run dict (its config read from its checkpoint)."""
    path = Path(out_dir).expanduser()
    if not (path / "ckpt.json").is_file():
        raise UserError(f"--diffusion_run {out_dir}: no finished run there (ckpt.json with its config); train it "
                        "first")
    saved = read_json(path / "ckpt.json", "--diffusion_run sidecar", dict).get("config")
    if not isinstance(saved, dict):
        raise UserError(f"--diffusion_run {path / 'ckpt.json'} holds no config; give a run trained by nanodlm train")
    if saved.get("model_type") != "diffusion":
        raise UserError(f"--diffusion_run {out_dir} is a {saved.get('model_type')} run; give a diffusion run")
    known = {f.name for f in fields(TrainConfig) if f.init}
    cfg = build_config(TrainConfig, {k: v for k, v in saved.items() if k in known})
    return {"out_dir": str(path), "reused": True, "cfg": cfg, "train_ms_per_iter": float("nan"),
            "search": {"run": str(path)}}


def _sampling(role: str, opts: SamplerOptions, length: int) -> dict[str, Any]:
    """Every sampling setting a side used: AR reads temperature, top-k/p and the cache after a "\\n" prompt;
    diffusion its sampler, steps, the options that sampler takes and the canvas length."""
    if role == "ar":
        return {"prompt": "\n", "max_new_tokens": length, "temperature": opts.temperature, "top_k": opts.top_k,
                "top_p": opts.top_p, "use_kv_cache": opts.use_kv_cache}
    return {"sampler": opts.sampler, "steps": opts.steps, "length": length, **opts.sampler_kwargs(),
            "use_kv_cache": opts.use_kv_cache, "new_block": opts.new_block}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b and math.isfinite(a) and math.isfinite(b) else None


def _pm(v: float | None, se: float | None, fmt: str = ".3f") -> str | None:
    if v is None or not math.isfinite(v):
        return None
    return f"{v:{fmt}} ± {se:{fmt}}" if se is not None and math.isfinite(se) else f"{v:{fmt}}"


def _print(r: dict[str, Any], args: QualityArgs, options: SamplerOptions) -> None:
    ar, dm, real, cmp = r["ar"], r["diffusion"], r["real"], r["diffusion_compare"]
    rows = [["real text (test)", None, _pm(real["judge_ppl"], real["judge_ppl_se"]),
             _pm(real["entropy_bits"], real["entropy_bits_se"]), real["distinct_4"], None, None]]
    for name, s, key in (("AR", ar, "val_loss"), ("diffusion", dm, "nelbo")):
        label = f"{name}, {s['config']['knob']} {s['config']['knob_value']:g}"
        rows.append([label, _pm(s[key], s[f"{key}_stderr"], ".4f"), _pm(s["judge_ppl"], s["judge_ppl_se"]),
                     _pm(s["entropy_bits"], s["entropy_bits_se"]), s["distinct_4"],
                     _pm(s["ppl_at_real_entropy"], s["ppl_at_real_entropy_se"]), s["chars_per_s"]])
    if cmp:
        rows.append([f"diffusion, {cmp['sampler']}", None, _pm(cmp["judge_ppl"], cmp["judge_ppl_se"]),
                     _pm(cmp["entropy_bits"], cmp["entropy_bits_se"]), cmp["distinct_4"], None, cmp["chars_per_s"]])
    q = r["ratios"]
    rows.append(["diffusion / AR", q["nelbo_over_ar"], q["judge_ppl_over_ar"], None, None,
                 q["ppl_at_real_entropy_over_ar"], q["chars_per_s_over_ar"]])
    print_table(f"{args.dataset}, preset {args.preset}: chosen on dev, reported on test over seeds "
                f"{r['protocol']['seeds']['report']} ({options.sampler}, {options.steps} steps)",
                ["", "test loss / NELBO", "judge PPL", "entropy (bits)", "distinct-4", "PPL at real entropy",
                 "chars/s"], rows)
    print(f"chosen: AR {ar['selection']['chosen']}, diffusion {dm['selection']['chosen']}; judge test loss "
          f"{r['judge']['val_loss']:.4f}")
    if args.preset == "smoke":
        print("note: preset smoke trains tiny models for a few iterations: a plumbing check of the protocol; its "
              "numbers (ratios included) say nothing about model quality; use --preset=cpu for results")
    if not r["judge"]["stronger_than_contestants"]:
        print("warning: the judge's test loss is not below every contestant's: strengthen it (--judge.KEY=...)")
    for name, s in (("AR", ar), ("diffusion", dm)):
        if not s["real_entropy_in_range"]:
            lo, hi = s["swept_entropy_bits"]
            print(f"warning: real text's entropy {real['entropy_bits']:.3f} lies outside {name}'s swept range "
                  f"[{lo:.3f}, {hi:.3f}]: no PPL at real entropy (widen the knob values)")
