"""Paired training-step timing of block diffusion's two attention layouts against AR, in one process.

AR (causal, learned positions), block diffusion with ``TwoStreamAttention`` (the default) and block diffusion with
the dense (2T, 2T) mask (``GPT.dense_block_mask = True``), all at the protocol's size (4 layers, 4 heads, 128 dims,
block 256, batch 12, blocks of 4); each iteration runs one optimizer step of each, in turn (forward, backward,
clip, AdamW), on random characters; medians after 2 untimed iterations.

    OMP_NUM_THREADS=1 python benchmarks/two_stream_step.py --iters=20 --json=benchmarks/two-stream-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from nanodlm.model.model import GPT, GPTConfig

B, T, V = 12, 256, 65


def runner(model_type: str, pos_emb: str, dense: bool = False):
    torch.manual_seed(0)
    diffusion = model_type == "diffusion"
    model = GPT(GPTConfig(block_size=T, vocab_size=V + int(diffusion), n_layer=4, n_head=4, n_embd=128,
                          model_type=model_type, diffusion_block=4 if diffusion else 0, pos_emb=pos_emb))
    model.dense_block_mask = dense
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        x = torch.randint(0, V, (B, T), generator=g)
        if diffusion:
            loss = model(x.masked_fill(torch.rand(B, T, generator=g) < 0.5, V), x, clean=x)[1]
        else:
            loss = model(x, x)[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    runs = {"ar": runner("gpt2", "learned"), "block4_two_stream": runner("diffusion", "rope"),
            "block4_dense_mask": runner("diffusion", "rope", dense=True)}
    ms: dict[str, list[float]] = {n: [] for n in runs}
    for i in range(a.iters + 2):
        for name, step in runs.items():
            t0 = time.perf_counter()
            step()
            if i >= 2:
                ms[name].append(1000 * (time.perf_counter() - t0))
    med = {n: statistics.median(v) for n, v in ms.items()}
    result = {"ms_per_iter_median": med, "two_stream_over_ar": med["block4_two_stream"] / med["ar"],
              "dense_over_ar": med["block4_dense_mask"] / med["ar"], "iters": a.iters, "loadavg": os.getloadavg(),
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
