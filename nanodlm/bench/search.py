"""Training the protocol's runs on a budget: a short screen, then finals, in parallel single-thread lanes.

Each side's search has two grids. Every candidate of the *screen* grid trains briefly (``screen_iters``, its own
learning-rate schedule) and is scored on dev; only the best continues into the *final* grid, whose candidates
train the full ``max_iters`` (successive halving with one survivor). The AR side screens positions x learning
rates and searches dropout in its finals: dropout only pays once a model starts to overfit, which a short run
never reaches. A side with one screen candidate skips the screen.

Runs train in ``lanes`` worker processes (``python -m nanodlm train FILE.json``, one thread each), each started
through ``launcher`` when one is given (e.g. ``../shared/bin/cpu-slot``, so they wait in line for a core). With
one lane and no launcher they train in this process, one after another (tests, small machines).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..evaluation.protocol import choose_on
from ..training.config import config_to_dict
from .runs import candidates, finish_run, train_planned

# ms per (parameter x token) of one training iteration at one thread, measured on this project's 2-core machine
# (4 layers x 128 wide, 12 x 256 tokens: 265 ms/iter with both cores training, the protocol alone, 2026-12-03);
# only the estimate reads it
MS_PER_PARAM_TOKEN = 1.1e-7


@dataclass
class Job:
    role: str
    stage: str  # "screen" | "final"
    search: dict[str, Any]  # the candidate's own settings (what the JSON calls it)
    plan: dict[str, Any]  # runs.plan_run's answer: cfg, out_dir, done
    started: float = 0.0
    seconds: float = 0.0
    run: dict[str, Any] = field(default_factory=dict)


def approx_params(cfg: Any) -> int:
    """Non-embedding parameters of a GPT of ``cfg``'s sizes (12 n_layer n_embd^2): what one token's compute
    scales with."""
    return 12 * cfg.n_layer * cfg.n_embd ** 2


def estimate_ms(cfg: Any) -> float:
    """Estimated wall milliseconds of one run at one thread (all its iterations)."""
    tokens = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    return cfg.max_iters * MS_PER_PARAM_TOKEN * approx_params(cfg) * tokens


def makespan(costs: list[float], lanes: int) -> float:
    """Longest-first greedy packing of job costs onto ``lanes``: the finishing time of the busiest lane."""
    loads = [0.0] * max(1, lanes)
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


class Lanes:
    """A pool of training lanes. ``submit`` a planned run; ``completed`` yields jobs as they finish (their run
    dict filled in), including jobs submitted while iterating."""

    def __init__(self, lanes: int, launcher: list[str], log_dir: Path) -> None:
        self.inline = lanes == 1 and not launcher
        self.launcher, self.log_dir = launcher, log_dir
        self.pool = None if self.inline else ThreadPoolExecutor(max_workers=lanes)
        self.pending: dict[Future, Job] = {}
        self.done: list[Job] = []

    def submit(self, job: Job) -> None:
        job.started = time.perf_counter()
        if job.plan["done"]:
            self.done.append(job)
        elif self.inline:
            train_planned(job.plan)
            self.done.append(job)
        else:
            self.pending[self.pool.submit(self._subprocess, job)] = job

    def _subprocess(self, job: Job) -> None:
        cfg, out_dir = job.plan["cfg"], Path(job.plan["out_dir"])
        self.log_dir.mkdir(parents=True, exist_ok=True)
        spec = self.log_dir / f"{out_dir.name}.json"
        log = self.log_dir / f"{out_dir.name}.log"
        spec.write_text(json.dumps({**config_to_dict(cfg), "threads": 1, "progress": False}))
        # one thread: the spec says threads=1. A launcher sets OMP itself and must not inherit it: cpu-slot counts
        # its slots with nproc, which reads OMP_NUM_THREADS, so an inherited 1 would run every lane in one slot
        threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
        env = {k: v for k, v in os.environ.items() if not (self.launcher and k in threads)}
        env.update({} if self.launcher else dict.fromkeys(threads, "1"), PYTHONUNBUFFERED="1")
        with open(log, "w") as f:
            rc = subprocess.run([*self.launcher, sys.executable, "-m", "nanodlm", "train", str(spec)], env=env,
                                stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise UserError(f"training {out_dir} failed (exit {rc}); its output is in {log}")

    def completed(self) -> Iterator[Job]:
        while self.done or self.pending:
            while self.done:
                job = self.done.pop(0)
                job.seconds = time.perf_counter() - job.started
                job.run = finish_run(job.plan)
                yield job
            if self.pending:
                finished, _ = wait(list(self.pending), return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = self.pending.pop(fut)
                    fut.result()  # a failed training raises here
                    self.done.append(job)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def screen_budget(screen_iters: int) -> dict[str, int]:
    """The keys a screen run overrides: its own short schedule."""
    return {"max_iters": screen_iters, "lr_decay_iters": screen_iters, "eval_interval": screen_iters}


def screened(n_candidates: int, screen_iters: int) -> bool:
    """A side is screened when it has more than one candidate and the screen has a budget."""
    return n_candidates > 1 and screen_iters > 0


def search_all(searches: dict[str, dict[str, dict[str, list[Any]]]], base: dict[str, dict[str, Any]],
               screen_iters: int, plan: Callable[[str, dict[str, Any]], dict[str, Any]],
               dev_loss: Callable[[dict[str, Any]], dict[str, Any]], lanes: Lanes,
               on_event: Callable[[str], None] = print) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Screen then finals for every role (see the module docstring) -> (final runs, screen runs) per role, each
    run with its ``search`` settings, ``stage``, ``seconds`` and (screens) its ``dev`` loss. ``plan(role,
    values)`` plans a run; ``dev_loss(run)`` scores a screen run on dev."""
    finals: dict[str, list[dict]] = {role: [] for role in searches}
    screens: dict[str, list[dict]] = {role: [] for role in searches}
    n_screen = {role: len(candidates(s["screen"])) for role, s in searches.items()}
    short = screen_budget(screen_iters)

    def submit_finals(role: str, chosen: dict[str, Any]) -> None:
        for cand in candidates(searches[role]["final"]):
            settings = {**chosen, **cand}
            lanes.submit(Job(role, "final", settings, plan(role, {**base[role], **settings})))

    for role, s in searches.items():  # finals that need no screen first: the judge is the longest run
        if not screened(n_screen[role], screen_iters):
            for cand in candidates(s["screen"]):
                submit_finals(role, cand)
    for role, s in searches.items():
        if screened(n_screen[role], screen_iters):
            for cand in candidates(s["screen"]):
                lanes.submit(Job(role, "screen", cand, plan(role, {**base[role], **cand, **short})))
    for job in lanes.completed():
        run = {**job.run, "search": job.search, "stage": job.stage, "seconds": job.seconds}
        on_event(f"  {job.role} {job.stage} {job.search or ''}: {'reused' if run['reused'] else 'trained'} "
                 f"{run['out_dir']} ({job.seconds:.0f} s, load {os.getloadavg()[0]:.1f})")
        if job.stage == "final":
            if all(r["out_dir"] != run["out_dir"] for r in finals[job.role]):  # an override can collapse a search
                finals[job.role].append(run)
            continue
        run["dev"] = dev_loss(run)
        screens[job.role].append(run)
        if len(screens[job.role]) == n_screen[job.role]:
            best = screens[job.role][choose_on([r["dev"] for r in screens[job.role]], lambda m: m["loss"])]
            on_event(f"  {job.role}: screen chose {best['search']} (dev loss {best['dev']['loss']:.4f})")
            submit_finals(job.role, best["search"])
    lanes.close()
    return finals, screens


def estimate(searches: dict[str, dict[str, dict[str, list[Any]]]], base: dict[str, dict[str, Any]],
             screen_iters: int, plan: Callable[[str, dict[str, Any]], dict[str, Any]], lanes: int) -> dict[str, Any]:
    """What training will cost before it starts: runs to train (cached ones free) and the estimated wall time
    on ``lanes`` lanes. The finals are counted for the first screen candidate (the same sizes as the winner)."""
    costs: list[float] = []
    cached = total = 0
    short = screen_budget(screen_iters)
    for role, s in searches.items():
        screen = candidates(s["screen"])
        no_screen = not screened(len(screen), screen_iters)
        todo = [] if no_screen else [{**base[role], **c, **short} for c in screen]
        todo += [{**base[role], **sc, **c} for sc in (screen if no_screen else screen[:1])
                 for c in candidates(s["final"])]
        for values in todo:
            p = plan(role, values)
            total += 1
            cached += p["done"]
            costs.append(0.0 if p["done"] else estimate_ms(p["cfg"]))
    serial = sum(costs)
    return {"runs": total, "cached": cached, "serial_train_s": serial / 1e3,
            "train_wall_s": makespan(costs, lanes) / 1e3 if math.isfinite(serial) else None}
