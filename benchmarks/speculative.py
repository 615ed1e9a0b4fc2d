"""Issue 18: a TiDAR model (configs/cpu_tidar.py) writing with ``--sampler=speculative`` against a pure cached AR
model of the same size and budget, on one CPU thread at batch 1, everything paired in one process.

1. what joint training costs: next-token CE of the TiDAR model's text stream against the pure AR model's, and its
   draft loss, on the test half of val.bin (``protocol.dev_test``), the same windows for both;
2. quality: judge PPL, character entropy and distinct-4 of speculative samples (each k) against the same model's
   AR samples (``--sampler=ar``) and the pure AR model's, ``num_samples`` texts of ``length`` characters for each
   seed, and real test passages scored the same way (needs ``--judge``);
3. speed: chars/s at batch 1, each timed generation of the TiDAR model right after one of the pure AR model
   (KV cache) with the same seed and length, ratios as medians over the pairs; tokens written and drafts accepted
   per pass; the cost of one pass over 1 + (k - 1) + k tokens against one cached AR step at 128 cached tokens
   (medians of ``pass_reps``), hence the tokens a pass must write to be 2x faster than AR;
4. at temperature 0 the speculative text must equal greedy AR decoding of the same model (checked, reported).

    /work/shared/bin/cpu-slot python benchmarks/speculative.py --tidar=out-cpu-tidar --ar=out-cpu-ar-rope \\
        --judge=JUDGE_DIR --json=benchmarks/speculative-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from nanodlm.bench.common import machine_info, now
from nanodlm.core.fileio import read_json
from nanodlm.data.dataset import open_split
from nanodlm.diffusion.tidar import draft_pass
from nanodlm.evaluation.evaluate import ar_cross_entropy, draft_cross_entropy, eval_windows
from nanodlm.evaluation.judge import score_texts
from nanodlm.evaluation.protocol import dev_test, passages, seed_mean
from nanodlm.runs.checkpoint import load_model
from nanodlm.sampling.ar_sampling import cache_dtype
from nanodlm.sampling.generate import Prompt, SamplerOptions, generate
from nanodlm.sampling.speculative import speculative_row

QUALITY = ("judge_ppl", "entropy_bits", "distinct_4")


def load(out_dir: str, ckpt: str) -> tuple[Any, dict[str, Any], Any]:
    return load_model(out_dir, ckpt, torch.device("cpu"))


def losses(tidar: Any, ar: Any, test: Any, batch: int) -> dict[str, Any]:
    """Next-token CE of both models and the TiDAR draft loss on the disjoint windows of the test half."""
    T = tidar.config.block_size
    windows = eval_windows(test, T, max(1, len(test) // (T + 1)))
    out = {"windows": int(windows.size(0)), "tokens_per_window": T}
    for name, m in (("tidar_ar", tidar), ("pure_ar", ar)):
        r = ar_cross_entropy(m, windows, batch)
        out[name] = {"loss": r["loss"], "stderr": r["stderr"]}
    r = draft_cross_entropy(tidar, windows, batch)
    out["tidar_draft"] = {"loss": r["loss"], "stderr": r["stderr"]}
    out["ar_loss_ratio"] = out["tidar_ar"]["loss"] / out["pure_ar"]["loss"]
    return out


def options(sampler: str, temperature: float, k: int | None = None, predraft: bool = False) -> SamplerOptions:
    return SamplerOptions(sampler=sampler, temperature=temperature, draft_len=k, predraft=predraft)


def quality(models: dict[str, tuple[Any, Any, SamplerOptions]], judge: tuple[Any, Any] | None, test: Any,
            seeds: list[int], num: int, length: int) -> dict[str, Any]:
    """Per configuration: judge scores (mean ± s.e. over seeds) and the speculative pass statistics."""
    out: dict[str, Any] = {}
    prompt = Prompt(max_new_tokens=length)
    for name, (model, tok, opts) in models.items():
        rows = []
        for seed in seeds:
            g = generate(model, tok, opts, prompt, num_samples=num, seed=seed)
            row: dict[str, Any] = {"seed": seed, "example": g.completions[0][:200]}
            if judge is not None:
                row.update(score_texts(judge[0], judge[1], g.completions))
            for key in ("tokens_per_pass", "accepted_per_pass", "acceptance"):
                if key in g.info:
                    row[key] = statistics.mean(g.info[key])
            row["passes_per_sample"] = statistics.mean(g.info.get("passes_per_sample") or [length])
            rows.append(row)
        keys = [k for k in (*QUALITY, "tokens_per_pass", "accepted_per_pass", "acceptance", "passes_per_sample")
                if k in rows[0]]
        out[name] = {**seed_mean(rows, keys), "per_seed": rows}
        print(name, {k: round(out[name][k], 3) for k in keys}, flush=True)
    if judge is not None:
        rows = [{**score_texts(judge[0], judge[1], passages(test, judge[1].decode, num, length, s)), "seed": s}
                for s in seeds]
        out["real test text"] = seed_mean(rows, QUALITY)
    return out


def speed(ar: tuple[Any, Any], configs: dict[str, tuple[Any, Any, SamplerOptions]], reps: int, length: int,
          temperature: float, start: str | None = None) -> dict[str, Any]:
    """Batch-1 chars/s: each configuration's generation right after a pure AR one (same seed and temperature),
    ratios as medians over the pairs. ``start``: the prompt (default generate's "\\n")."""
    prompt = Prompt(start=start, max_new_tokens=length)
    ar_opts = SamplerOptions(temperature=temperature)
    generate(ar[0], ar[1], ar_opts, prompt, seed=0)  # warm-up
    for model, tok, opts in configs.values():
        generate(model, tok, opts, prompt, seed=0)
    out: dict[str, Any] = {}
    for name, (model, tok, opts) in configs.items():
        pairs = []
        for rep in range(reps):
            a = generate(ar[0], ar[1], ar_opts, prompt, seed=100 + rep).info
            b = generate(model, tok, opts, prompt, seed=100 + rep).info
            pairs.append((a["chars_per_s"], b["chars_per_s"], b.get("tokens_per_pass", [1.0])[0]))
        out[name] = {"ar_chars_per_s": statistics.median(p[0] for p in pairs),
                     "chars_per_s": statistics.median(p[1] for p in pairs),
                     "speedup": statistics.median(p[1] / p[0] for p in pairs),
                     "tokens_per_pass": statistics.mean(p[2] for p in pairs), "pairs": pairs}
        print(f"speed {name}: {out[name]['chars_per_s']:.0f} chars/s, x{out[name]['speedup']:.2f} AR", flush=True)
    return out


@torch.no_grad()
def pass_cost(model: Any, text: list[int], ks: list[int], reps: int, cached: int = 128, predraft: bool = False
              ) -> dict[str, Any]:
    """Median ms of one cached AR step and of one speculative pass (1 + (k - 1) + k tokens) at ``cached`` tokens."""
    model.eval()
    device = torch.device("cpu")
    cache = model.new_kv_cache(1, device, cache_dtype(model, device))
    model.decode(torch.tensor([text[:cached]]), cache)  # prefill, kept

    def median_ms(fn) -> float:
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    step = median_ms(lambda: model.decode(torch.tensor([text[cached:cached + 1]]), cache, keep=False))
    out: dict[str, Any] = {"cached_tokens": cached, "ar_step_ms": step, "passes": {}}
    for k in ks:
        clean = torch.tensor([text[cached:cached + k]])  # the newest token and k - 1 drafts
        ms = median_ms(lambda clean=clean, k=k: draft_pass(model, clean, k, cache))
        out["passes"][str(k)] = {"tokens": 2 * k, "ms": ms, "x_ar_step": ms / step,
                                 "tokens_per_pass_for_2x": 2 * ms / step, "tokens_per_pass_for_3x": 3 * ms / step}
        print(f"pass k={k}: {2 * k} tokens {ms:.2f} ms = {ms / step:.2f} AR steps ({step:.2f} ms)", flush=True)
        if predraft and cached + k + k * k <= model.config.block_size:  # k blocks of k masks
            ms = median_ms(lambda clean=clean, k=k: draft_pass(model, clean, k, cache, blocks=k))
            out["passes"][f"{k}, predraft"] = {"tokens": k + k * k, "ms": ms, "x_ar_step": ms / step,
                                               "tokens_per_pass_for_2x": 2 * ms / step}
    return out


@torch.no_grad()
def acceptance_profile(model: Any, tok: Any, ks: list[int], seeds: list[int], length: int, temperature: float,
                       predraft: bool) -> dict[str, Any]:
    """For each k: P(draft j accepted | drafts before it accepted), j = 1.., over one text per seed; what limits a
    pass's length. Also the share of passes with no draft to verify (the pass after a rejection)."""
    out: dict[str, Any] = {}
    for k in ks:
        reached, accepted, empty, passes = [0] * k, [0] * k, 0, 0
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            _, st = speculative_row(model.eval(), tok.encode("\n"), length, draft_len=k, temperature=temperature,
                                    top_k=None, top_p=None, generator=g, predraft=predraft)
            for nd, na in zip(st["drafts_per_pass"], st["accepted_per_pass"]):
                passes += 1
                empty += nd == 0
                for j in range(min(nd, na + 1)):  # drafts 0 .. na were verified; na + 1 .. were not reached
                    reached[j] += 1
                    accepted[j] += j < na
        out[str(k)] = {"p_accept_given_reached": [a / r for a, r in zip(accepted, reached) if r],
                       "passes_without_drafts": empty / max(1, passes)}
    print("acceptance profile", json.dumps(out), flush=True)
    return out


def greedy_check(model: Any, tok: Any, ks: list[int], length: int, start: str) -> dict[str, Any]:
    """Temperature 0: the speculative text equals the same model's greedy AR text, for each k."""
    prompt = Prompt(start=start, max_new_tokens=length)
    ref = generate(model, tok, options("ar", 0.0), prompt, seed=0).texts[0]
    out = {}
    for k in ks:
        g = generate(model, tok, options("speculative", 0.0, k), prompt, seed=0)
        out[str(k)] = {"identical": g.texts[0] == ref, "tokens_per_pass": g.info["tokens_per_pass"][0],
                       "accepted_per_pass": g.info["accepted_per_pass"][0], "passes": g.info["passes_per_sample"][0]}
    print("greedy", out, flush=True)
    return out


def markdown(r: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables of a result (``--table=JSON``): every figure read from the JSON."""
    out = []
    if "losses" in r:
        lo = r["losses"]
        out += [f"| model (test half of val, {lo['windows']} windows of {lo['tokens_per_window']}) | next-token CE "
                "(nats/char) | draft CE |", "| --- | --- | --- |",
            f"| pure AR | {lo['pure_ar']['loss']:.4f} ± {lo['pure_ar']['stderr']:.4f} | |",
            f"| TiDAR, text stream | {lo['tidar_ar']['loss']:.4f} ± {lo['tidar_ar']['stderr']:.4f} "
            f"({lo['ar_loss_ratio']:.3f} × AR) | {lo['tidar_draft']['loss']:.4f} ± {lo['tidar_draft']['stderr']:.4f} |",
            ""]
    speed_rows = {**r.get("speed", {}), **r.get("speed_greedy", {})}
    if speed_rows:
        costs = r.get("pass_cost", {}).get("passes", {})
        out += ["| decoding (batch 1) | tokens / pass | pass cost (× AR step) | chars/s | × pure AR |",
                "| --- | --- | --- | --- | --- |"]
        for name, row in speed_rows.items():
            key = name.split("k=")[-1].split(",")[0] + (", predraft" if "predraft" in name else "") if "k=" in name \
                else None
            cost = costs.get(key, {}).get("x_ar_step") if key else 1.0
            out.append(f"| {name} | {row['tokens_per_pass']:.2f} | {'' if cost is None else f'{cost:.2f}'} | "
                       f"{row['chars_per_s']:,.0f} (AR {row['ar_chars_per_s']:,.0f}) | {row['speedup']:.2f} |")
        out.append("")
    if "quality" in r:
        out += ["| samples (T = 1, 3 seeds) | judge PPL | entropy (bits) | distinct-4 | tokens / pass | acceptance |",
                "| --- | --- | --- | --- | --- | --- |"]
        def f(q: dict[str, Any], key: str) -> str:
            if key not in q:
                return ""
            se = q.get(key + "_se")
            return f"{q[key]:.3g}" + (f" ± {se:.2g}" if se is not None and se == se else "")

        for name, q in r["quality"].items():
            out.append(f"| {name} | {f(q, 'judge_ppl')} | {f(q, 'entropy_bits')} | {f(q, 'distinct_4')} | "
                       f"{f(q, 'tokens_per_pass')} | {f(q, 'acceptance')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tidar", help="the TiDAR run (objective=tidar)")
    ap.add_argument("--ar", help="the pure AR run of the same size and budget")
    ap.add_argument("--judge", default=None, help="an AR judge run (no judge: no quality section)")
    ap.add_argument("--ks", default="2,4,8,16")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--num_samples", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5, help="timed batch-1 pairs per configuration")
    ap.add_argument("--pass_reps", type=int, default=40)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--greedy_start", default="ROMEO:", help="the prompt at temperature 0 (from a newline the greedy "
                    "text is newlines)")
    ap.add_argument("--predraft", action="store_true", help="also measure predraft (a mask block per outcome)")
    ap.add_argument("--ckpt", default="last")
    ap.add_argument("--parts", default="losses,greedy,pass,profile,speed,quality", help="what to measure")
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", default=None, help="print the markdown tables of this result JSON and exit")
    a = ap.parse_args()
    if a.table:
        print(markdown(read_json(Path(a.table), "--table result")))
        return
    if not a.tidar or not a.ar:
        ap.error("--tidar and --ar are required (or --table=JSON)")
    parts = set(a.parts.split(","))
    torch.set_num_threads(1)
    ks, seeds = [int(k) for k in a.ks.split(",")], [int(s) for s in a.seeds.split(",")]
    tidar, tidar_meta, tok = load(a.tidar, a.ckpt)
    ar, _, ar_tok = load(a.ar, a.ckpt)
    cfg = tidar_meta.get("config", {})
    test = dev_test(open_split(cfg.get("data_dir", "data"), cfg.get("dataset", "shakespeare_char"), "val"))["test"]
    load_before = os.getloadavg()
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "speculative (issue 18)", "date": now(), "machine": machine_info("cpu"),
                              "load_before": load_before, "args": vars(a), "tidar_iter": tidar_meta.get("iter_num"),
                              "draft_len_trained": tidar.config.draft_len}
    if "losses" in parts:
        result["losses"] = losses(tidar, ar, test, 12)
        print("losses", json.dumps(result["losses"]), flush=True)
    if "greedy" in parts:
        result["greedy"] = greedy_check(tidar, tok, ks, a.length, a.greedy_start)
    t = a.temperature
    configs = {f"tidar speculative k={k}": (tidar, tok, options("speculative", t, k)) for k in ks}
    if a.predraft:
        configs.update({f"tidar speculative k={k}, predraft": (tidar, tok, options("speculative", t, k, True))
                        for k in ks})
    if "pass" in parts:
        cached = min(128, tidar.config.block_size - 2 * max(ks))
        result["pass_cost"] = pass_cost(tidar, [int(i) for i in test[:256]], ks, a.pass_reps, cached, a.predraft)
    if "profile" in parts:
        result["acceptance_profile"] = acceptance_profile(tidar, tok, ks, seeds, a.length, t, False)
        if a.predraft:
            result["acceptance_profile_predraft"] = acceptance_profile(tidar, tok, ks, seeds, a.length, t, True)
    if "speed" in parts:
        as_ar = {"tidar as AR (--sampler=ar)": (tidar, tok, options("ar", t))}
        result["speed"] = speed((ar, ar_tok), {**as_ar, **configs}, a.reps, a.length, t)
        greedy = {f"tidar speculative k={k}, greedy": (tidar, tok, options("speculative", 0.0, k)) for k in ks}
        result["speed_greedy"] = speed((ar, ar_tok), greedy, a.reps, a.length, 0.0, a.greedy_start)  # vs greedy AR
    if "quality" in parts:
        judge = None
        if a.judge:
            jm, judge_meta, jt = load(a.judge, a.ckpt)
            judge = (jm, jt)
            result["judge_iter"] = judge_meta.get("iter_num")
        models = {"pure AR (KV cache)": (ar, ar_tok, SamplerOptions(temperature=t)),
                  "tidar as AR (--sampler=ar)": (tidar, tok, options("ar", t)), **configs}
        result["quality"] = quality(models, judge, test, seeds, a.num_samples, a.length)
    result["judge"] = a.judge
    result["load_after"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - started
    text = json.dumps(result, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
