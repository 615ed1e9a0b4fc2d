"""What a decoding configuration must write per pass to beat cached AR: batch-1 chars/s at a forced k tokens/pass.

Quality aside, the speed of parallel decoding is (cost of one pass) / (tokens it commits). This script forces
exactly k commits per pass (``parallel_threshold`` tiny, ``max_per_pass`` = k, so every pass commits k) on
untrained models of the protocol's size (4 layers, 4 heads, 128 dims, block 256, 66 symbols) and times batch-1
generation of 256 characters through ``generate`` against the KV-cached AR model, alternating AR and diffusion
runs in one process (medians). A trained model's k is whatever its confidence allows (``bench parallel``).

    OMP_NUM_THREADS=1 python benchmarks/pass_cost.py --reps=3 --json=benchmarks/pass-cost-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling.generate import Prompt, SamplerOptions, generate

VOCAB, T = 65, 256


class CharTok:
    def encode(self, text: str) -> list[int]:
        return [ord(c) % VOCAB for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(33 + i % 90) for i in ids)


def model(model_type: str, block: int = 0) -> GPT:
    torch.manual_seed(0)
    diffusion = model_type == "diffusion"
    return GPT(GPTConfig(block_size=T, vocab_size=VOCAB + int(diffusion), n_layer=4, n_head=4, n_embd=128,
                         model_type=model_type, diffusion_block=block)).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    tok, prompt = CharTok(), Prompt(length=T, max_new_tokens=T)
    ar = model("gpt2")
    configs = {"block 4 (exact cache)": (model("diffusion", 4), {}),
               "bidirectional, whole canvas": (model("diffusion"), {}),
               "bidirectional, semi-AR 32": (model("diffusion"), {"semi_ar_block": 32}),
               "bidirectional, semi-AR 32, prefix cache": (model("diffusion"), {"semi_ar_block": 32,
                                                                                "approx_cache": "prefix"}),
               "bidirectional, semi-AR 32, dual cache": (model("diffusion"), {"semi_ar_block": 32,
                                                                              "approx_cache": "dual"})}
    ks = [int(k) for k in a.ks.split(",")]
    rows, ar_speed = [], []
    generate(ar, tok, SamplerOptions(), prompt, seed=0)  # warm-up
    for name, (m, extra) in configs.items():
        for k in ks:
            if "block 4" in name and k > 4:
                continue  # a block holds 4 positions: at most 4 per pass
            opts = SamplerOptions(sampler="confidence", steps=T, parallel_threshold=1e-6, max_per_pass=k,
                                  prior_weight=0.0, **extra)
            generate(m, tok, opts, prompt, seed=0)  # warm-up
            speed, ratio, passes = [], [], []
            for rep in range(a.reps):
                ar_out = generate(ar, tok, SamplerOptions(), prompt, seed=rep)
                out = generate(m, tok, opts, prompt, seed=rep)
                ar_speed.append(ar_out.info["chars_per_s"])
                speed.append(out.info["chars_per_s"])
                ratio.append(out.info["chars_per_s"] / ar_out.info["chars_per_s"])
                passes.append(out.info["forward_passes"] + out.info.get("cache_passes", 0))
            rows.append({"config": name, "k": k, "chars_per_s_b1": statistics.median(speed),
                         "speedup_b1": statistics.median(ratio), "forward_passes": statistics.median(passes)})
            print(f"{name:42s} k={k}: {rows[-1]['chars_per_s_b1']:7.0f} chars/s, "
                  f"{rows[-1]['speedup_b1']:.2f}x cached AR, {rows[-1]['forward_passes']:.0f} passes", flush=True)
    result = {"ar_chars_per_s_b1": statistics.median(ar_speed), "rows": rows, "reps": a.reps,
              "torch_threads": torch.get_num_threads(), "loadavg": os.getloadavg()}
    print(f"AR (KV cache): {result['ar_chars_per_s_b1']:.0f} chars/s at batch 1; load average {os.getloadavg()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
