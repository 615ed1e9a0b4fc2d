"""``bench epochs``: many epochs of a small corpus, AR with its regularizers against diffusion.

Where data is scarce a model sees the same text many times: AR overfits after a few epochs, while masked diffusion
is reported to keep improving for hundreds (Prabhudesai et al. 2025, arXiv 2507.15857; Ni et al. 2025,
arXiv 2511.03276), unless AR is regularized as well (arXiv 2510.04071: input masking, dropout). In one command:

1. **Subsets** (``--train_chars``): the first N tokens of the train split (``curves.subset_dataset``), val.bin
   unchanged; dev and test are its halves, as in ``bench quality``.
2. **Recipes**: AR (rope, lr 3e-3: the fair ruler's dev choice) with residual dropout {0, 0.2} x input-token
   masking {0, 0.15} (``input_mask_rate``), weight decay as the ruler has it; diffusion ``repair``,
   bidirectional and blocks of 4, dropout 0. One run per recipe and subset, its budget in epochs
   (``--epochs``), its schedule over the whole budget, scored on dev and test at log-spaced epochs, the
   best-dev checkpoint kept (``curves.py``); a run whose dev loss has not improved for ``--patience`` points
   stops there (early stopping, the same rule on both sides).
3. **Screen**: the AR recipes first train ``--screen_fraction`` of their budget (the first part of their own full
   runs: nothing is trained twice) and the ``--keep`` best on dev (lowest dev loss so far) go on to the end.
4. **Seeds**: each side's best recipe on dev (its best-dev loss) trains again with ``--extra_seeds`` on the
   first subset.
5. **Report** (test half): each run's curve against epochs and training FLOPs; each side's best recipe, its
   best-dev checkpoint's test loss and epoch; the budget curve (each side early-stopped within E epochs) and the
   first budget where diffusion's test bound is below AR's test cross-entropy (the crossover).

A diffusion NELBO is an upper bound on its NLL; AR's cross-entropy is exact: a crossover is conservative.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..training.config import TrainConfig, build_config, config_to_dict
from .common import machine_info, now, parse_list, split_args, write_json
from .curves import (
    best_row,
    choose_dev,
    epochs_to_iters,
    eval_epochs,
    read_curve,
    run_curve,
    seed_curves,
    stalled,
    subset_dataset,
)
from .epochs_judge import judge_sides
from .epochs_report import plot, report
from .presets import PRESETS
from .runs import config_hash, ensure_dataset

# the ruler's dev choices (BENCHMARKS.md section 9, quality-fair-cpu): rope and lr 3e-3 on both sides
BASE = {"pos_emb": "rope", "learning_rate": 3e-3, "attn_dropout": 0.0}
RECIPES: dict[str, dict[str, Any]] = {
    "ar": {"model_type": "gpt2"},
    "ar_dropout": {"model_type": "gpt2", "dropout": 0.2},
    "ar_mask": {"model_type": "gpt2", "input_mask_rate": 0.15},
    "ar_dropout_mask": {"model_type": "gpt2", "dropout": 0.2, "input_mask_rate": 0.15},
    "diffusion": {"model_type": "diffusion", "objective": "repair", "copy_weight": 0.1},
    # BD3-LM's clipped schedule, as the ruler's block-4 run (fixed a priori there)
    "block4": {"model_type": "diffusion", "objective": "repair", "copy_weight": 0.1, "diffusion_block": 4,
               "mdlm_eps": 0.45, "mdlm_t_max": 0.95},
}
SIZES = {"cpu": {"eval_windows": 200, "eval_batch_size": 32, "eval_interval": 1000, "eval_iters": 10},
         "smoke": {"eval_windows": 8, "eval_batch_size": 8, "eval_interval": 1000, "eval_iters": 2}}


def side(recipe: str) -> str:
    """'ar' or 'diffusion' for a recipe name (``NAME`` or ``NAME@EPOCHS``, a run with its own shorter budget)."""
    return "ar" if RECIPES[recipe.partition("@")[0]]["model_type"] == "gpt2" else "diffusion"


@dataclass
class EpochsArgs:
    preset: str = "cpu"  # cpu (4 layers x 128, block 256: the ruler's size) | smoke (a test's)
    dataset: str = "shakespeare_char"  # prepared in <work_dir>/data (shakespeare_char is prepared on the spot)
    train_chars: str = "125000,500000"  # subset sizes in tokens of the train split (characters for a char dataset)
    epochs: str = "256,64"  # the budget of each subset, in epochs (one value: every subset)
    recipes: str = ",".join(RECIPES)  # which recipes run (see RECIPES)
    evals_per_octave: int = 2  # dev and test scored at 2^(k / this) epochs, from one epoch to the budget
    screen_fraction: float = 0.25  # AR recipes train this share of the budget first; the --keep best go on
    keep: int = 2  # AR recipes that survive the screen
    seed: int = 1337  # the training seed of every run
    # AR recipes kept by the screen also train with these shorter budgets, each its own whole schedule (an
    # early-stopped run is stopped at a high learning rate; a short run anneals): AR's best budget is searched too
    ar_budgets: str = "16,32"
    # early stopping: a run ends once its dev loss has not improved for this many evaluation points (4 = two
    # octaves of epochs at 2 per octave; both sides; 0 = train every run to its budget)
    patience: int = 4
    extra_seeds: str = "1338"  # more seeds for each side's best recipe on the first subset ('' = none)
    work_dir: str = "~/.cache/nanodlm/epochs"  # data/ and runs/ live here; a killed bench resumes from it
    lanes: int = 1  # runs train in this many worker processes at once (1 without launcher: in this process)
    launcher: str = ""  # a command each worker starts under, e.g. ../shared/bin/cpu-slot
    judge: bool = False  # also judge each side's best checkpoint's samples (the ruler's judge, trained once)
    judge_work_dir: str = ""  # where the judge is trained or found ('' = work_dir; bench quality's cache shares it)
    # the diffusion side's prior_weight grid for the judge, a comma list (default: the preset's, bench quality's);
    # widen it where a model's test curve does not reach real text's entropy, so PPL there is read, not missing
    knob_values: str | None = None
    seed_curves: str = ""  # an earlier bench epochs JSON (committed): its curves fill the cache where it has none
    report_only: bool = False  # train nothing: report the curves the cache holds now (where the runs stand)
    json: str | None = None  # default <work_dir>/epochs-<dataset>-<preset>.json
    png: str | None = None  # default: the JSON path with .png
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS or self.preset not in SIZES:
            raise UserError(f"--preset must be one of {', '.join(SIZES)}; got {self.preset!r}")
        if self.lanes < 1 or self.evals_per_octave < 1 or self.keep < 1:
            raise UserError("--lanes, --evals_per_octave and --keep must be >= 1")
        if self.patience < 0:
            raise UserError(f"--patience must be >= 0 (0 = no early stopping); got {self.patience}")
        if not 0 < self.screen_fraction <= 1:
            raise UserError(f"--screen_fraction must be in (0, 1]; got {self.screen_fraction}")


@dataclass(order=True)
class Job:
    priority: tuple[int, int, int]  # (subset, stage, order): the first subset first, then its screens
    name: str = ""
    spec: dict[str, Any] | None = None


class Pool:
    """``lanes`` worker threads taking jobs by priority; each job runs ``curves.run_curve`` in a subprocess
    (through ``launcher``) or, with one lane and no launcher, in this process. A job ``done`` says needs nothing
    (the cache holds it) launches nothing: it would only wait in the launcher's line for a slot to do nothing."""

    def __init__(self, lanes: int, launcher: list[str], log_dir: Path, on_done,
                 done: Callable[[Job], bool] = lambda job: False) -> None:
        self.inline = lanes == 1 and not launcher
        self.launcher, self.log_dir, self.on_done, self.done = launcher, log_dir, on_done, done
        self.heap: list[Job] = []
        self.cv = threading.Condition()
        self.busy, self.errors = 0, []
        self.lanes = lanes

    def submit(self, job: Job) -> None:
        with self.cv:
            heapq.heappush(self.heap, job)
            self.cv.notify()

    def _run(self, job: Job) -> None:
        if self.done(job):
            return
        if self.inline:
            run_curve(job.spec)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        spec, log = self.log_dir / f"{job.name}.json", self.log_dir / f"{job.name}.log"
        spec.write_text(json.dumps(job.spec))
        threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # cpu-slot sets them (see search.Lanes)
        env = {k: v for k, v in os.environ.items() if not (self.launcher and k in threads)}
        env.update({} if self.launcher else dict.fromkeys(threads, "1"), PYTHONUNBUFFERED="1")
        with open(log, "a") as f:
            rc = subprocess.run([*self.launcher, sys.executable, "-m", "nanodlm.bench.curves", str(spec)], env=env,
                                stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise UserError(f"run {job.name} failed (exit {rc}); its output is in {log}")

    def drain(self) -> None:
        """Run every job, including those ``on_done`` submits, until none is left."""
        def worker() -> None:
            while True:
                with self.cv:
                    while not self.heap and self.busy and not self.errors:
                        self.cv.wait()
                    if not self.heap or self.errors:
                        self.cv.notify_all()
                        return
                    job = heapq.heappop(self.heap)
                    self.busy += 1
                try:
                    self._run(job)
                    self.on_done(job)
                except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
                    with self.cv:
                        self.errors.append(e)
                finally:
                    with self.cv:
                        self.busy -= 1
                        self.cv.notify_all()
        if self.inline:
            worker()
        else:
            threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.lanes)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if self.errors:
            raise self.errors[0]


def _subsets(args: EpochsArgs) -> list[tuple[int, float]]:
    sizes = parse_list(args.train_chars, int, "train_chars")
    budgets = parse_list(args.epochs, float, "epochs")
    if len(budgets) == 1:
        budgets *= len(sizes)
    if len(budgets) != len(sizes):
        raise UserError(f"--epochs needs one budget or one per subset ({len(sizes)}); got {args.epochs!r}")
    for b in budgets:
        if not b > 0:
            raise UserError(f"--epochs must be positive; got {args.epochs!r}")
    return list(zip(sizes, budgets, strict=True))


def bench_epochs(argv: list[str]) -> dict[str, Any]:
    """The whole bench (module docstring) -> the result dict, also written as JSON and a PNG."""
    args, _, rest = split_args(EpochsArgs, argv)
    if rest:
        raise UserError(f"unknown key(s) for bench epochs: {', '.join(rest)} (see `nanodlm bench epochs --help`)")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    ar_budgets = parse_list(args.ar_budgets, float, "ar_budgets") if args.ar_budgets.strip() else []
    if unknown or not recipes:
        raise UserError(f"--recipes must name some of {', '.join(RECIPES)}; got {args.recipes!r}")
    extra_seeds = parse_list(args.extra_seeds, int, "extra_seeds") if args.extra_seeds.strip() else []
    knob_values = parse_list(args.knob_values, float, "knob_values") if args.knob_values is not None else None
    if knob_values and not all(math.isfinite(v) and v >= 0 for v in knob_values):
        raise UserError(f"--knob_values are prior_weights, each finite and >= 0; got {args.knob_values!r}")
    subsets = _subsets(args)
    model = {**PRESETS[args.preset]["model"], **BASE, "plot": False, "progress": False, "threads": 1,
             "device": args.device, **{k: SIZES[args.preset][k] for k in ("eval_interval", "eval_iters")}}
    work_dir = Path(args.work_dir).expanduser()
    data_dir = work_dir / "data"
    ensure_dataset(data_dir, args.dataset)
    started, load_start = time.perf_counter(), os.getloadavg()

    # ---- plans: every (subset, recipe, seed) run with its points; finished rows come from the cache
    plans: dict[str, dict[str, Any]] = {}
    screening = len([r for r in recipes if side(r) == "ar"]) > args.keep  # AR recipes screened when over --keep

    def plan(si: int, recipe: str, seed: int) -> dict[str, Any]:
        train_tokens, budget = subsets[si]
        base_recipe, _, own_budget = recipe.partition("@")
        budget = float(own_budget) if own_budget else budget
        name = subset_dataset(data_dir, args.dataset, train_tokens, model["block_size"])
        values = {**model, **RECIPES[base_recipe], "dataset": name, "data_dir": str(data_dir), "seed": seed,
                  "out_dir": "-"}
        tokens_per_iter = values["batch_size"] * values["block_size"]
        total = epochs_to_iters(budget, train_tokens, tokens_per_iter)
        values.update(max_iters=total, lr_decay_iters=total, warmup_iters=min(values["warmup_iters"], total // 10))
        cfg = build_config(TrainConfig, values)
        run = f"{name}-{recipe}-s{seed}-{config_hash(cfg)}"
        cfg = build_config(TrainConfig, {**values, "out_dir": str(work_dir / "runs" / run)})
        screen = budget * args.screen_fraction
        points = [{"epochs": e, "iters": epochs_to_iters(e, train_tokens, tokens_per_iter)}
                  for e in eval_epochs(budget, args.evals_per_octave, extra=(screen,))]
        spec = {"config": config_to_dict(cfg), "points": points, "stop_iters": total,
                "eval_windows": SIZES[args.preset]["eval_windows"],
                "eval_batch_size": SIZES[args.preset]["eval_batch_size"], "patience": args.patience}
        # only AR's full-budget recipes are screened (when there are more of them than --keep); for every other run
        # (diffusion, an AR recipe on its own shorter budget) the quarter-budget point is one point among others
        screened = side(recipe) == "ar" and not own_budget and screening
        p = {"name": run, "subset": si, "recipe": recipe, "side": side(recipe), "seed": seed, "spec": spec,
             "screen_iters": epochs_to_iters(screen, train_tokens, tokens_per_iter) if screened else None,
             "total": total}
        plans[run] = p
        return p

    # the order lanes take runs in: the first subset first; in it the AR screens, AR's shorter budgets (cheap: they
    # finish, and a finished curve carries over to the next machine with --seed_curves), bidirectional diffusion,
    # the AR finals, block diffusion (the slowest run), extra seeds
    order = ("screen", "short", "diffusion", "final", "block", "seed")

    def job(p: dict[str, Any], kind: str, stop: int) -> Job:
        if kind == "full":
            kind = "diffusion" if p["recipe"] == "diffusion" else "block"
        return Job((p["subset"], order.index(kind), len(plans)), p["name"], {**p["spec"], "stop_iters": stop})

    lock = threading.Lock()
    kept: dict[int, list[str]] = {}
    seeded: set[int] = set()  # subsets whose extra seeds are submitted
    shortened: set[int] = set()  # subsets whose shorter AR budgets are submitted
    pool: Pool

    def screened_ar(si: int) -> list[dict[str, Any]]:
        return [p for p in plans.values() if p["subset"] == si and p["side"] == "ar" and p["seed"] == args.seed
                and "@" not in p["recipe"]]

    def after(finished: Job) -> None:  # what a finished run unlocks: finals after the screen, then extra seeds
        with lock:
            p = plans[finished.name]
            si = p["subset"]
            ar = screened_ar(si)
            if si not in kept and not screening:
                kept[si] = [q["name"] for q in ar]  # trained to the end from the start
            if si not in kept and all(_reached(q, q["screen_iters"]) for q in ar):
                kept[si] = _keep(ar, args.keep)
                for q in ar:
                    if q["name"] in kept[si]:
                        pool.submit(job(q, "final", q["total"]))
            if si not in shortened and si in kept:  # AR's budget searched too: the kept recipes, shorter budgets
                shortened.add(si)
                for q in [q for q in ar if q["name"] in kept[si]]:
                    for b in [b for b in ar_budgets if 0 < b < subsets[si][1]]:
                        short = plan(si, f"{q['recipe']}@{b:g}", args.seed)
                        pool.submit(job(short, "short", short["total"]))
            if si == 0 and si not in seeded and si in kept and extra_seeds:
                full = [q for q in plans.values() if q["subset"] == si and q["seed"] == args.seed
                        and (q["side"] == "diffusion" or q["name"] in kept[si] or "@" in q["recipe"])]
                if all(_reached(q, q["total"]) for q in full):
                    seeded.add(si)
                    for s_name in ("ar", "diffusion"):
                        best = _best_recipe([q for q in full if q["side"] == s_name])
                        for seed in extra_seeds if best else []:
                            extra = plan(si, best, seed)
                            pool.submit(job(extra, "seed", extra["total"]))

    if args.seed_curves:
        restored = seed_curves(Path(args.seed_curves), work_dir / "runs")
        print(f"seeded {len(restored)} run(s) from {args.seed_curves}: {', '.join(restored) or 'none new'}")
    pool = Pool(args.lanes, shlex.split(args.launcher), work_dir / "jobs", after,
                done=lambda j: _reached(plans[j.name], j.spec["stop_iters"]))
    for si in range(len(subsets)):
        for recipe in recipes:
            p = plan(si, recipe, args.seed)
            if args.report_only:
                continue
            if p["side"] == "ar" and screening:
                pool.submit(job(p, "screen", p["screen_iters"]))
            else:
                pool.submit(job(p, "final" if p["side"] == "ar" else "full", p["total"]))
    if not args.report_only:
        print(f"bench epochs: {len(plans)} runs on {args.lanes} lane(s), load {load_start[0]:.1f}; the cache is "
              f"{work_dir} (a killed bench resumes from it)", flush=True)
        pool.drain()
    for si, recipe, b in [(si, r, b) for si in range(len(subsets)) for r in recipes for b in ar_budgets
                          if side(r) == "ar" and 0 < b < subsets[si][1]]:
        plan(si, f"{recipe}@{b:g}", args.seed)  # what the cache may hold of the shorter AR budgets (read, not run)
    for s_name in ("ar", "diffusion") if extra_seeds and args.seed not in extra_seeds else ():
        # the extra seeds of each side's best recipe (planned again here: a report reads whatever the cache holds)
        runs = [q for q in plans.values() if q["subset"] == 0 and q["seed"] == args.seed and q["side"] == s_name
                and read_curve(Path(q["spec"]["config"]["out_dir"]))]
        best = _best_recipe(runs)
        for seed in extra_seeds if best else []:
            plan(0, best, seed)

    result = report(args, subsets, plans, work_dir)
    if args.judge:
        torch.set_num_threads(args.lanes)  # the lanes are idle now: sampling takes their cores
        judge_dir = Path(args.judge_work_dir).expanduser() if args.judge_work_dir else work_dir
        judge_sides(result, work_dir, judge_dir, args.dataset, args.preset, args.device, shlex.split(args.launcher),
                    knob_values)
    result["protocol"].update(wall_s=time.perf_counter() - started, load_start=load_start, load_end=os.getloadavg(),
                              date=now(), machine=machine_info(args.device), base=BASE, recipes=RECIPES,
                              command="nanodlm bench epochs " + " ".join(shlex.quote(a) for a in argv))
    json_path = args.json or str(work_dir / f"epochs-{args.dataset}-{args.preset}.json")
    write_json(json_path, result)
    png = args.png or (str(Path(json_path).with_suffix(".png")) if json_path != "-" else None)
    if png:
        if plot(result, png):
            print(f"wrote {png}")
    return result


def _reached(p: dict[str, Any], iters: int) -> bool:
    rows = read_curve(Path(p["spec"]["config"]["out_dir"]))
    return any(r["iters"] >= iters for r in rows) or stalled(rows, p["spec"].get("patience", 0))


def _keep(ar: list[dict[str, Any]], keep: int) -> list[str]:
    """The ``keep`` AR runs with the lowest dev loss at or before the screen's stop (choose_on: dev only)."""
    left = list(ar)
    chosen = []
    while left and len(chosen) < keep:
        scores = [best_row(read_curve(Path(q["spec"]["config"]["out_dir"])), q["screen_iters"])["dev"] for q in left]
        chosen.append(left.pop(choose_dev(scores))["name"])
    return chosen


def _best_recipe(runs: list[dict[str, Any]]) -> str | None:
    """The recipe of the run whose best-dev checkpoint has the lowest dev loss."""
    if not runs:
        return None
    scores = [best_row(read_curve(Path(q["spec"]["config"]["out_dir"])))["dev"] for q in runs]
    return runs[choose_dev(scores)]["recipe"]

