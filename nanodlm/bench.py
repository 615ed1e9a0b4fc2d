"""``nanodlm bench``: throughput and quality benchmarks, autoregressive (gpt2) vs masked diffusion.

Each subcommand is a function the tests call directly; ``main(argv)`` is the table in front of them.

- ``train``:   paired training-step timing. Both models (same sizes, same batches) live in one process and
               their timed steps alternate, so machine noise lands on both; ms/iter, tokens/s, peak memory.
- ``sample``:  sampling throughput in chars/s: AR with and without the KV cache, diffusion at each step count,
               at batch 1 and batch N.
- ``steps``:   sample quality (judge perplexity, entropy) and speed against the number of diffusion steps.
- ``quality``: the whole protocol in one command: data, three models (trained or reused), samples, judge,
               NELBO vs AR loss on the same windows -> JSON.

``train`` and ``sample`` live in ``bench_speed.py``; the judge-based ``steps`` in ``bench_steps.py`` and
``quality`` in ``bench_quality.py``.

Results are JSON files (``--json=FILE``; a bare ``--json`` prints JSON). BENCHMARKS.md holds measured tables;
benchmarks/README.md says how to reproduce them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, TypeVar

import torch

from .config import build_config, parse_overrides, print_keys
from .errors import UserError
from .generate import ALIASES, SamplerOptions, print_sampling_keys

# The diffusion configuration the benchmarks default to, chosen by the sweep in BENCHMARKS.md ("Making diffusion
# write"): repair objective (fills and flags), rotary positions, learning rate 2e-3; the sampler options are
# SamplerOptions' defaults (`nanodlm sample`'s: remask, noise 1, prior_weight 0.7)
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


def parse_steps(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; every entry a positive int."""
    try:
        steps = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--steps must be comma-separated integers like 16,64,256; got {text!r}") from None
    if not steps or min(steps) < 1:
        raise UserError(f"--steps must be positive integers; got {text!r}")
    return steps


def write_json(path: str | None, result: dict[str, Any]) -> None:
    """evaluate.write_json, skipped without a path, announced when it writes a file."""
    if path is None:
        return
    from .evaluate import write_json as write

    write(path, result)
    if path != "-":
        print(f"wrote {path}")


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


def print_table(title: str, columns: list[str], rows: list[list[Any]], stderr: bool = False) -> None:
    """A rich table; on stderr when stdout carries JSON."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[fmt(v) for v in row])
    # a pipe or log file gets 120 columns, not rich's default of 80, so numbers do not wrap
    stream = sys.stderr if stderr else sys.stdout
    Console(file=stream, width=None if stream.isatty() else 120).print(table)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


# --- main -----------------------------------------------------------------------------------------------------

USAGE = """usage: nanodlm bench SUBCOMMAND [--key=value ...]

  train   [CONFIG] [--key=value TrainConfig overrides] [--iters=50] [--warmup=5] [--memory=true] [--json=FILE]
          paired AR vs diffusion training step (default config: the cpu preset)
  sample  --out_dir_ar=DIR --out_dir_diffusion=DIR [--num_samples=8] [--length=256] [--steps=16,64,256] [--json]
          sampling throughput in chars/s
  steps   --out_dir=DIFFUSION_DIR --judge=JUDGE_DIR [--steps=1,4,16,64,256] [--sampler=...] [--num_samples=30]
          [--length=256] [--ar_out_dir=DIR] [--json=FILE] [--png=FILE]
          judge perplexity and chars/s vs diffusion steps
  quality --preset=cpu|smoke [--json=FILE] [--work_dir=bench-out] [--objective=...] [--sampler=...] [--steps=N]
          [--pos_emb=...] [--key=value diffusion overrides] [--ar.key=value] [--judge.key=value]
          the whole protocol: data, AR + diffusion + judge (trained or reused), samples, judge, NELBO
  parallel --runs=DIFFUSION_DIR[,DIR...] --judge=JUDGE_DIR --ar_out_dir=AR_DIR [--samplers=confidence]
          [--steps=256] [--taus=0,0.5,0.7,0.9] [--semi_ar_blocks=0] [--approx_caches=none] [--seeds=1,2,3]
          judge PPL vs chars/s (batch 1 and N) of parallel decoding, with cached AR as the reference

`nanodlm bench SUBCOMMAND --help` lists a subcommand's keys; benchmarks/README.md explains the protocol."""


def _help(name: str) -> int:
    from .bench_parallel import ParallelArgs
    from .bench_quality import QualityArgs
    from .bench_speed import SampleBenchArgs, TrainBenchArgs
    from .bench_steps import StepsBenchArgs
    cls = {"train": TrainBenchArgs, "sample": SampleBenchArgs, "steps": StepsBenchArgs, "quality": QualityArgs,
           "parallel": ParallelArgs}[name]
    print(f"usage: nanodlm bench {name} [--key=value ...]")
    if name == "train":
        print_keys(cls, "keys (defaults):")
    else:
        print_sampling_keys(cls, prompt=False)
    if name == "train":
        print("  ... and any TrainConfig key (`nanodlm train --help`); the base config is the cpu preset")
    return 0


def main(argv: list[str]) -> int:
    from .bench_parallel import bench_parallel
    from .bench_quality import bench_quality
    from .bench_speed import bench_sample, bench_train
    from .bench_steps import bench_steps

    commands: dict[str, Callable[[list[str]], dict[str, Any]]] = {
        "train": bench_train, "sample": bench_sample, "steps": bench_steps, "quality": bench_quality,
        "parallel": bench_parallel,
    }
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in commands:
        raise UserError(f"unknown bench subcommand '{argv[0]}' (choose one of: {', '.join(commands)})")
    if any(a in ("-h", "--help") for a in argv[1:]):
        return _help(argv[0])
    commands[argv[0]](argv[1:])
    return 0


def warm_up_sampling(out_dir: str, options: SamplerOptions, device: str, ckpt: str, num_samples: int,
                     length: int) -> None:
    """A throwaway generation at the timed batch and length (diffusion: one step), so the first timed run does
    not pay for kernel loading, library start-up and first-seen shapes."""
    from .judge import generate_texts

    generate_texts(out_dir, dataclasses.replace(options, steps=1), num_samples=num_samples, length=length, seed=0,
                   device=device, ckpt=ckpt)
