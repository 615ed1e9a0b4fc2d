"""``nanodlm bench``: throughput and quality benchmarks, autoregressive (gpt2) vs masked diffusion.

Each subcommand is a function the tests call directly; ``main(argv)`` is the table in front of them.

- ``train``:   paired training-step timing. Both models (same sizes, same batches) live in one process and
               their timed steps alternate, so machine noise lands on both; ms/iter, tokens/s, peak memory.
- ``sample``:  sampling throughput in chars/s: AR with and without the KV cache, diffusion at each step count,
               at batch 1 and batch N.
- ``steps``:   sample quality (judge perplexity, entropy) and speed against the number of diffusion steps.
- ``quality``: the whole protocol in one command: data, three models (trained or reused), samples, judge,
               NELBO vs AR loss on the same windows -> JSON.
- ``parallel``: judge PPL vs chars/s of parallel decoding, cached AR as the reference.
- ``epochs``:  many epochs of a small corpus: AR with its regularizers against diffusion, curves on dev and test.
- ``infill``:  filling a gap: bidirectional diffusion against an AR model trained to fill in the middle.

This module is the table in front of them: ``train`` and ``sample`` live in ``speed.py``, ``steps`` in
``steps.py``, ``quality`` in ``quality.py`` (its runs in ``runs.py``, its sampling side in ``frontier.py``),
``parallel`` in ``parallel.py``, ``epochs`` in ``epochs.py`` (its curves in ``curves.py``), ``infill`` in
``infill.py``; what they share in ``common.py``.

Results are JSON files (``--json=FILE``; a bare ``--json`` prints JSON). BENCHMARKS.md holds measured tables;
benchmarks/README.md says how to reproduce them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.errors import UserError
from ..sampling.generate import print_sampling_keys
from ..training.config import print_keys
from .epochs import EpochsArgs, bench_epochs
from .infill import InfillArgs, bench_infill
from .parallel import ParallelArgs, bench_parallel
from .quality import QualityArgs, bench_quality
from .speed import SampleBenchArgs, TrainBenchArgs, bench_sample, bench_train
from .steps import StepsBenchArgs, bench_steps

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
  epochs  [--train_chars=125000,500000] [--epochs=256,64] [--recipes=ar,ar_dropout,...] [--lanes=2]
          [--launcher=../shared/bin/cpu-slot] [--work_dir=DIR] [--report_only] [--judge] [--json=FILE]
          many epochs of a small corpus: AR with dropout / input masking against diffusion, test loss vs epochs
  infill  --diffusion_run=DIR --fim_run=DIR [--ar_run=DIR] [--judge=DIR] [--split=dev] [--lengths=1,8,32,128]
          [--windows=64] [--seeds=1,2,3] [--choose_from=DEV.json] [--json=FILE]
          filling a hole: likelihood of the true middle, greedy accuracy, judged sampled fills and the seam

`nanodlm bench SUBCOMMAND --help` lists a subcommand's keys; benchmarks/README.md explains the protocol."""

# subcommand -> (its function, its keys)
COMMANDS: dict[str, tuple[Callable[[list[str]], dict[str, Any]], type]] = {
    "train": (bench_train, TrainBenchArgs),
    "sample": (bench_sample, SampleBenchArgs),
    "steps": (bench_steps, StepsBenchArgs),
    "quality": (bench_quality, QualityArgs),
    "parallel": (bench_parallel, ParallelArgs),
    "infill": (bench_infill, InfillArgs),
    "epochs": (bench_epochs, EpochsArgs),
}


def _help(name: str) -> int:
    cls = COMMANDS[name][1]
    print(f"usage: nanodlm bench {name} [--key=value ...]")
    if name == "train":
        print_keys(cls, "keys (defaults):")
        print("  ... and any TrainConfig key (`nanodlm train --help`); the base config is the cpu preset")
    else:
        print_sampling_keys(cls, prompt=False)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        raise UserError(f"unknown bench subcommand '{argv[0]}' (choose one of: {', '.join(COMMANDS)})")
    if any(a in ("-h", "--help") for a in argv[1:]):
        return _help(argv[0])
    COMMANDS[argv[0]][0](argv[1:])
    return 0
