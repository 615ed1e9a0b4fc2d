"""Helpers every bench subcommand shares: argument parsing, machine info, timing, tables and JSON."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, TypeVar

import torch

from ..core.errors import UserError

# The diffusion configuration the benchmarks default to, chosen by the sweep in BENCHMARKS.md ("Making diffusion
# write"): repair objective (fills and flags), rotary positions, learning rate 2e-3; the sampler options are
# SamplerOptions' defaults (`nanodlm sample`'s: remask, noise 1, prior_weight 0.7)
from ..core.report import fmt, print_table, write_json  # noqa: F401 (the benchmarks' output, re-exported)
from ..evaluation.judge import generate_texts
from ..sampling.generate import ALIASES, SamplerOptions
from ..training.config import build_config, parse_overrides

BENCH_DEFAULTS: dict[str, Any] = {"objective": "repair", "pos_emb": "rope", "learning_rate": 2e-3, "copy_weight": 0.1}
RANDOM_VOCAB = 65  # shakespeare_char's vocabulary: `bench train` uses random tokens of it without prepared data

T = TypeVar("T")


# --- shared helpers -------------------------------------------------------------------------------------------

def split_args(cls: type[T], argv: list[str]) -> tuple[T, str | None, dict[str, str]]:
    """``[FILE] --key=value ...`` -> (cls built from its own keys, the positional FILE, the other keys)."""
    config_file, values = parse_overrides(argv)
    if values.get("json") == "true":
        values["json"] = "-"  # a bare --json prints to stdout
    names = {f.name for f in fields(cls) if f.init}
    mine = {k: v for k, v in values.items() if k in names}
    rest = {k: v for k, v in values.items() if k not in names}
    return build_config(cls, mine), config_file, rest


def parse_sampling_args(command: str, cls: type[T], argv: list[str], strict: bool = True
                        ) -> tuple[T, SamplerOptions, dict[str, str]]:
    """``--key=value ...`` -> (cls from its own keys, SamplerOptions from theirs, the other keys). A key of cls
    shadows an option of the same name (``--steps`` is a list in ``bench steps``); ``strict``: no other keys."""
    config_file, values = parse_overrides(argv)
    if values.get("json") == "true":
        values["json"] = "-"  # a bare --json prints to stdout
    if config_file is not None:
        raise UserError(f"bench {command} takes no positional argument; got {config_file!r}")
    values = {ALIASES.get(k, k): v for k, v in values.items()}
    own = {f.name for f in fields(cls) if f.init}
    option_keys = {f.name for f in fields(SamplerOptions)} - own
    rest = {k: v for k, v in values.items() if k not in own and k not in option_keys}
    if strict and rest:
        keys = ", ".join(sorted(own | option_keys))
        raise UserError(f"unknown key '{next(iter(rest))}' for bench {command} (keys: {keys})")
    args = build_config(cls, {k: v for k, v in values.items() if k in own})
    return args, build_config(SamplerOptions, {k: v for k, v in values.items() if k in option_keys}), rest


def parse_list(text: str, kind: type, key: str) -> list[Any]:
    """'1,4,16' -> [1, 4, 16] for ``--key``, each entry a ``kind``; a one-line error when one is not, or none given."""
    try:
        values = [kind(s.strip()) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--{key} must be a comma-separated list of {kind.__name__}; got {text!r}") from None
    if not values:
        raise UserError(f"--{key} is empty")
    return values


def parse_steps(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; every entry a positive int."""
    steps = parse_list(text, int, "steps")
    if min(steps) < 1:
        raise UserError(f"--steps must be positive integers; got {text!r}")
    return steps


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "device": device, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def mean_se(values: list[float]) -> dict[str, float]:
    """{"mean", "se"}: the mean of ``values`` and its standard error (sample s.d. / sqrt(n); NaN for one value)."""
    n = len(values)
    return {"mean": statistics.fmean(values),
            "se": statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")}


def sync(device: str) -> None:
    # CUDA launches are asynchronous: wait for the kernels before reading the clock
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(device: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), wall seconds), synchronised with the device on both sides."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def warm_up_sampling(out_dir: str, options: SamplerOptions, device: str, ckpt: str, num_samples: int,
                     length: int) -> None:
    """A throwaway generation at the timed batch and length (diffusion: one step), so the first timed run does
    not pay for kernel loading, library start-up and first-seen shapes."""

    generate_texts(out_dir, dataclasses.replace(options, steps=1), num_samples=num_samples, length=length, seed=0,
                   device=device, ckpt=ckpt)
