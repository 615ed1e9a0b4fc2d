"""Issue 27: the opt-in rolling KV cache (``--rolling_cache``) past block_size against exact sliding-window
sampling, on one CPU thread. What it saves (passes, tokens through the model, wall time) and how far its text
drifts from the model's AR sampling.

Two rope models, each sampled after "\\n" for ``windows`` x block_size new tokens, seeds 0..seeds-1, temperature 1,
with the option off (exact: past block_size each token reads the block_size tokens before it, a full-window pass)
and on (the oldest keys evicted, the rest reused):

1. ``ar``: a trained AR model (``--ar``: a rope gpt2 run, e.g. a ``bench quality`` cache's ``ar-*``), ``generate_ar``
   with the KV cache. Besides the samples: teacher-forced on the exact samples, the rolled cache's next-token
   distribution against a fresh forward of the same block_size tokens (KL(exact || rolled) in nats and top-1
   agreement), and greedy decoding both ways (tokens past block_size equal, first difference).
2. ``tidar``: a small TiDAR model trained here (``--tidar_iters`` iterations, block 64, draft_len 4), the
   speculative sampler; passes, tokens per pass past block_size.

Divergence of the samples: the mean NLL (nats/token) of their tokens past block_size under the exact window model
(each token given the block_size tokens before it), rolled samples against exact ones: sampling exactly gives the
model's own entropy; a drift shows as a higher NLL.

    /work/shared/bin/cpu-slot python benchmarks/rolling_cache.py --ar=RUN_DIR --data_dir=DATA_DIR \\
        --json=benchmarks/rolling-cache-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from nanodlm.bench.common import machine_info, now
from nanodlm.runs.checkpoint import load_model
from nanodlm.sampling.ar_sampling import cache_dtype, generate_ar
from nanodlm.sampling.speculative import speculative_row


def window_nll(model: Any, text: list[int], bs: int, batch: int = 32) -> list[float]:
    """NLL (nats) of each token at index >= bs of text under the exact sliding window: token i given text[i-bs:i]."""
    out: list[float] = []
    idx = list(range(bs, len(text)))
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            rows = idx[s:s + batch]
            x = torch.tensor([text[i - bs:i] for i in rows])  # (b, bs)
            logits = model(x)[0][:, -1].float()  # (b, V): the next-token distribution after each window
            lp = F.log_softmax(logits, -1)
            out += (-lp[torch.arange(len(rows)), torch.tensor([text[i] for i in rows])]).tolist()
    return out


def teacher_forced(model: Any, text: list[int], bs: int) -> dict[str, float]:
    """The rolled cache fed text token by token past bs against a fresh forward of the same bs tokens."""
    cache = model.new_kv_cache(1, torch.device("cpu"), cache_dtype(model, torch.device("cpu")))
    kls, agree = [], []
    with torch.no_grad():
        model.decode(torch.tensor([text[:bs]]), cache)
        for i in range(bs, len(text) - 1):
            cache.evict(1)
            rolled = F.log_softmax(model.decode(torch.tensor([[text[i]]]), cache)[0, -1].float(), -1)
            exact = F.log_softmax(model(torch.tensor([text[i - bs + 1:i + 1]]))[0][0, -1].float(), -1)
            kls.append(float((exact.exp() * (exact - rolled)).sum()))
            agree.append(int(rolled.argmax() == exact.argmax()))
    return {"kl_nats": statistics.mean(kls), "kl_max": max(kls), "top1_agree": statistics.mean(agree),
            "positions": len(kls)}


def mean_se(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(xs), "se": statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0}


def ar_part(model: Any, n_new: int, seeds: int) -> dict[str, Any]:
    bs = model.config.block_size
    res: dict[str, Any] = {"block_size": bs, "new_tokens": n_new, "prompt": "\\n"}
    samples: dict[str, list[list[int]]] = {}
    for mode, rolling in (("exact", False), ("rolling", True)):
        walls, passes, tokens, rolled, texts = [], [], [], [], []
        for seed in range(seeds):
            stats: dict[str, int] = {}
            calls: list[int] = []  # tokens through the model in each pass, measured at the first block
            hook = model.transformer.h[0].register_forward_hook(lambda m, args, o, calls=calls:
                                                                calls.append(args[0].size(1)))
            t0 = time.perf_counter()
            try:
                out = generate_ar(model, torch.tensor([[0]]), n_new, generator=torch.Generator().manual_seed(seed),
                                  stats=stats, rolling_cache=rolling)[0].tolist()
            finally:
                walls.append(time.perf_counter() - t0)
                hook.remove()
            assert len(calls) == stats["passes"]
            passes.append(stats["passes"])
            rolled.append(stats.get("rolled", 0))
            tokens.append(sum(calls))
            texts.append(out)
        samples[mode] = texts
        nll = [x for t in texts for x in window_nll(model, t, bs)]
        res[mode] = {"wall_s": walls, "passes": passes, "pass_tokens": tokens, "rolled_passes": rolled,
                     "nll_past_block": mean_se(nll), "tokens_scored": len(nll)}
    res["teacher_forced"] = [teacher_forced(model, t, bs) for t in samples["exact"]]
    g_exact = generate_ar(model, torch.tensor([[0]]), n_new, temperature=0.0, generator=None)[0].tolist()
    g_roll = generate_ar(model, torch.tensor([[0]]), n_new, temperature=0.0, generator=None,
                         rolling_cache=True)[0].tolist()
    same = [a == b for a, b in zip(g_exact[bs + 1:], g_roll[bs + 1:])]
    res["greedy"] = {"past_block_equal": statistics.mean(same),
                     "first_difference": next((bs + 1 + i for i, s in enumerate(same) if not s), None)}
    return res


def train_tidar(data_dir: str, iters: int, out_dir: str) -> Any:
    from nanodlm.training.config import TrainConfig, build_config
    from nanodlm.training.train import train

    train(build_config(TrainConfig, dict(
        out_dir=out_dir, data_dir=data_dir, dataset="shakespeare_char", device="cpu", dtype="float32",
        objective="tidar", draft_len=4, pos_emb="rope", n_layer=2, n_head=4, n_embd=64, block_size=64, batch_size=16,
        max_iters=iters, lr_decay_iters=iters, learning_rate=3e-3, min_lr=1e-4, warmup_iters=min(50, iters // 4),
        eval_iters=10, eval_interval=iters, threads=1, progress=False, plot=False)))
    return load_model(out_dir, "last", "cpu")[0]


def tidar_part(model: Any, n_new: int, seeds: int) -> dict[str, Any]:
    bs, k = model.config.block_size, model.config.draft_len
    res: dict[str, Any] = {"block_size": bs, "draft_len": k, "new_tokens": n_new, "prompt": "\\n"}
    for mode, rolling in (("exact", False), ("rolling", True)):
        walls, rows = [], []
        for seed in range(seeds):
            t0 = time.perf_counter()
            with torch.no_grad():
                out, st = speculative_row(model, [0], n_new, draft_len=k, temperature=1.0, top_k=None, top_p=None,
                                          generator=torch.Generator().manual_seed(seed), rolling_cache=rolling)
            walls.append(time.perf_counter() - t0)
            rows.append((out, st))
        nll = [x for out, _ in rows for x in window_nll(model, out, bs)]
        # passes whose text was already longer than the window, and the tokens they wrote
        late = [[i for i in range(st["passes"]) if 1 + sum(st["tokens_per_pass"][:i]) > bs] for _, st in rows]
        res[mode] = {"wall_s": walls, "passes": [st["passes"] for _, st in rows],
                     "pass_tokens": [sum(st["pass_tokens"]) for _, st in rows],
                     "window_passes": [st["window_passes"] for _, st in rows],
                     "rolled_passes": [st["rolled_passes"] for _, st in rows],
                     "tokens_per_pass_past_block": [sum(st["tokens_per_pass"][i] for i in ix) / max(1, len(ix))
                                                    for ix, (_, st) in zip(late, rows)],
                     "nll_past_block": mean_se(nll), "tokens_scored": len(nll)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ar", required=True, help="a rope gpt2 run directory")
    ap.add_argument("--data_dir", required=True, help="holds shakespeare_char/ (the TiDAR model trains on it)")
    ap.add_argument("--windows", type=int, default=3, help="new tokens = windows x block_size")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--tidar_iters", type=int, default=600)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    report: dict[str, Any] = {"date": now(), "command": " ".join(["python", *sys.argv]),
                              "load_before": os.getloadavg(), "machine": machine_info("cpu")}
    t0 = time.perf_counter()
    ar, meta, _ = load_model(a.ar, "best", "cpu")
    if ar.config.pos_emb != "rope":
        raise SystemExit(f"--ar {a.ar} has pos_emb={ar.config.pos_emb}; the rolling cache needs a rope model")
    report["ar_run"] = {"dir": a.ar, "iter_num": meta.get("iter_num"), "best_val_loss": meta.get("best_val_loss"),
                        "n_layer": ar.config.n_layer, "n_embd": ar.config.n_embd}
    report["ar"] = ar_part(ar, a.windows * ar.config.block_size, a.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        tidar = train_tidar(a.data_dir, a.tidar_iters, tmp)
    report["tidar_run"] = {"iters": a.tidar_iters, "n_layer": 2, "n_embd": 64, "block_size": 64, "draft_len": 4}
    report["tidar"] = tidar_part(tidar, a.windows * tidar.config.block_size, a.seeds)
    report["wall_s"] = time.perf_counter() - t0
    report["load_after"] = os.getloadavg()
    Path(a.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({m: {p: report[m][p]["nll_past_block"] for p in ("exact", "rolling")} for m in ("ar", "tidar")}))


if __name__ == "__main__":
    main()
