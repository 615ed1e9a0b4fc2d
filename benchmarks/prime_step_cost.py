"""What a training step of partial masking costs against mdlm's: paired, one process, the same batches.

The fair ruler's contestant (4 layers x 128, block 256, batch 12; ``prime_ruler.RULER``) built as ``train`` builds
it, once with objective mdlm and once per ``--bits`` with objective prime, each stepped by train's own ``Stepper``
(``bench.speed.StepRunner``). After ``--warmup`` untimed steps each, ``--iters`` rounds time one step of every
model in turn on the same batch, the order rotating each round, so machine noise lands on all. Reported: median
ms per step and each prime model's median of per-round ratios to mdlm.

    OMP_NUM_THREADS=1 ../shared/bin/cpu-slot python benchmarks/prime_step_cost.py --bits=7 \
        --json=benchmarks/prime-step-cost-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prime_ruler import DATA, RULER  # noqa: E402

from nanodlm.bench.common import machine_info  # noqa: E402
from nanodlm.bench.speed import StepRunner  # noqa: E402
from nanodlm.data.dataset import get_batch, open_split  # noqa: E402
from nanodlm.training.config import TrainConfig, build_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="7")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    load_start = list(os.getloadavg())
    base = {**RULER, "out_dir": "-"}
    names = ["mdlm", *(f"prime{b}" for b in a.bits.split(","))]
    cfgs = {n: build_config(TrainConfig, {**base, "objective": "mdlm"} if n == "mdlm" else
                            {**base, "objective": "prime", "prime_bits": int(n.removeprefix("prime"))}) for n in names}
    runners = {n: StepRunner(cfg, 65, "cpu") for n, cfg in cfgs.items()}
    data = open_split(str(DATA), "shakespeare_char", "train")
    gen = torch.Generator().manual_seed(0)
    batches = [[get_batch(data, RULER["batch_size"], RULER["block_size"], gen, "cpu")]
               for _ in range(a.warmup + a.iters)]
    for it in range(a.warmup):
        for r in runners.values():
            r.step(batches[it], it)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(a.iters):
        it = a.warmup + i
        for n in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
            times[n].append(runners[n].step(batches[it], it))
    result = {
        "benchmark": "prime training step vs mdlm (paired, one process, one thread)",
        "ms_median": {n: 1000 * statistics.median(t) for n, t in times.items()},
        "ratio_to_mdlm": {n: statistics.median(x / m for x, m in zip(times[n], times["mdlm"])) for n in names[1:]},
        "params": {n: r.model.get_num_params() for n, r in runners.items()},
        "iters": a.iters, "warmup": a.warmup, "ruler": RULER,
        "load": {"start": load_start, "end": list(os.getloadavg())},
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info("cpu"),
        "command": " ".join(sys.argv),
    }
    print(json.dumps({k: result[k] for k in ("ms_median", "ratio_to_mdlm", "params", "load")}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
