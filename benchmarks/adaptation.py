"""AR -> diffusion adaptation curve: NELBO (and optionally judge perplexity) against iterations of adaptation.

Takes a trained AR run (``--ar_dir``; its ``ckpt.pt`` must be finished) and adapts it to a diffusion model with
``init_from=<ar_dir>`` (nanodlm/training/adapt.py: [MASK] row, shifted head, attention annealed from causal to full over
``--attn_anneal_iters``), training in stages that end at each of ``--evals`` (250,500,1250 by default). The
stages are one run: each resumes the last bit for bit and the learning-rate schedule spans the whole run
(``lr_decay_iters`` = the last eval), so the curve is that of an uninterrupted run. After each stage (and once
before training, at iteration 0) the model's NELBO is measured as ``bench quality`` measures it: 4 mask draws on
up to ``--eval_windows`` windows of block_size tokens of the dev half (seed 1) and the test half (seed 1337) of
val.bin. The AR model's cross-entropy on the same windows is the reference row. With ``--judge_dir`` each
stage also writes ``--num_samples`` samples (default sampler) judged by that AR model (perplexity, entropy).

Training hyperparameters are the AR run's (batch, block, optimizer), with the diffusion keys of the protocol
(objective ``repair``); any ``--KEY=VALUE`` that is a ``nanodlm train`` key overrides them (e.g.
``--diffusion_block=4``, ``--learning_rate=5e-4``, ``--objective=mdlm``). A finished stage is reused when the
script runs again. The JSON is rewritten after every stage.

    OMP_NUM_THREADS=1 python benchmarks/adaptation.py --ar_dir=/work/bench-out/runs/ar-5db8f2be \\
        --work_dir=/work/bench-out/adapt --json=benchmarks/adaptation-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from nanodlm.bench.common import BENCH_DEFAULTS, machine_info, now, write_json
from nanodlm.bench.frontier import Judge, point
from nanodlm.core.fileio import read_json
from nanodlm.data.dataset import open_split
from nanodlm.evaluation.evaluate import ar_cross_entropy, diffusion_nelbo, eval_windows
from nanodlm.evaluation.protocol import dev_test
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.runs.checkpoint import load_checkpoint, load_model
from nanodlm.runs.rundir import saved_iter
from nanodlm.sampling.generate import Prompt, SamplerOptions
from nanodlm.training.adapt import init_from_source
from nanodlm.training.config import TrainConfig, build_config, config_to_dict, parse_overrides
from nanodlm.training.train import load_train_config, train

SEEDS = {"dev": 1, "test": 1337}  # the mask draws of each half: bench quality's first seed of each split
# keys of the AR run that describe where and how it ran, not what the adapted model trains with
NOT_INHERITED = ("out_dir", "init_from", "model_type", "eval_only", "wandb_log", "wandb_run_name", "max_iters",
                 "lr_decay_iters", "eval_interval", "pos_emb", "n_layer", "n_head", "n_embd", "bias", "qk_norm")


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ar_dir", required=True, help="a finished AR training run (out_dir with ckpt.pt)")
    p.add_argument("--work_dir", default="adapt-work", help="where the adapted run is written")
    p.add_argument("--name", default=None, help="run folder under work_dir (default adapt[-blockB])")
    p.add_argument("--evals", default="250,500,1250", help="iterations after which to measure, increasing")
    p.add_argument("--attn_anneal_iters", type=int, default=200)
    p.add_argument("--eval_windows", type=int, default=200)
    p.add_argument("--eval_batch_size", type=int, default=32)
    p.add_argument("--ar_iter", type=int, default=None, help="refuse unless the AR checkpoint is at this iteration")
    p.add_argument("--compare", default=None, help="comma-separated runs (e.g. diffusion from scratch) measured on the "
                   "same windows and masks, at their last checkpoint")
    p.add_argument("--judge_dir", default=None, help="an AR run that judges samples (optional)")
    p.add_argument("--num_samples", type=int, default=32)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--progress", default="true")
    known, rest = p.parse_known_args(argv)
    _, overrides = parse_overrides(rest)
    return known, overrides


def adapt_values(args: argparse.Namespace, overrides: dict[str, str], out_dir: Path, last: int) -> dict[str, Any]:
    """The adapted run's TrainConfig values: the AR run's training keys, the protocol's diffusion keys, overrides."""
    ar_cfg = load_checkpoint(Path(args.ar_dir) / "ckpt.pt")["meta"]["config"]
    values = {k: v for k, v in ar_cfg.items() if k not in NOT_INHERITED}
    values.update(model_type="diffusion", objective=BENCH_DEFAULTS["objective"],
                  copy_weight=BENCH_DEFAULTS["copy_weight"], attn_anneal_iters=args.attn_anneal_iters,
                  out_dir=str(out_dir), lr_decay_iters=last, eval_interval=last, device=args.device,
                  progress=args.progress.lower() in ("1", "true", "yes"), plot=False)
    values.update(overrides)
    return values


def measure(model: torch.nn.Module, windows: dict[str, torch.Tensor], args: argparse.Namespace,
            device: str) -> dict[str, Any]:
    out = {}
    for split, w in windows.items():
        if model.config.model_type == "gpt2":
            r = ar_cross_entropy(model, w, args.eval_batch_size)
            out[split] = {"loss": r["loss"], "stderr": r["stderr"]}
        else:
            gen = torch.Generator(device=device).manual_seed(SEEDS[split])
            r = diffusion_nelbo(model, w, args.eval_batch_size, gen, n_draws=4)
            out[split] = {"nelbo": r["nelbo"], "stderr": r["stderr"]}
    return out


def judged(model, tok, judge: Judge | None, args: argparse.Namespace) -> dict[str, Any] | None:
    if judge is None:
        return None
    opts = SamplerOptions(steps=args.steps)
    r = point(model, tok, opts, Prompt(length=args.length), judge, args.num_samples, [SEEDS["test"]])
    return {k: r.get(k) for k in ("judge_ppl", "entropy_bits", "distinct_4", "chars_per_s", "example")}


def run(argv: list[str]) -> dict[str, Any]:
    args, overrides = parse(argv)
    evals = sorted({int(v) for v in args.evals.split(",") if v.strip()})
    if not evals or evals[0] <= 0:
        raise SystemExit("--evals must be positive iteration counts, e.g. 250,500,1250")
    ar_meta = read_json(Path(args.ar_dir) / "ckpt.json", "--ar_dir sidecar")
    if args.ar_iter is not None and ar_meta.get("iter_num") != args.ar_iter:
        raise SystemExit(f"{args.ar_dir}/ckpt.pt is at iter {ar_meta.get('iter_num')}, not {args.ar_iter}: wait for it")
    block = int(overrides.get("diffusion_block", 0))
    # the run's schedule depends on the last eval (lr_decay_iters): runs to different ends live in different folders
    name = args.name or ("adapt" if not block else f"adapt-block{block}") + f"-{evals[-1]}"
    out_dir = Path(args.work_dir) / name
    values = adapt_values(args, overrides, out_dir, evals[-1])
    cfg0 = build_config(TrainConfig, {**values, "init_from": args.ar_dir, "max_iters": evals[0]})

    val = open_split(cfg0.data_dir, cfg0.dataset, "val")
    T = cfg0.block_size
    halves = dev_test(val)
    windows = {s: eval_windows(halves[s], T, min(args.eval_windows, max(1, len(halves[s]) // (T + 1))))
               for s in halves}
    ar, _, _ = load_model(args.ar_dir, "last", args.device)
    judge = None
    if args.judge_dir:
        jm, _, jt = load_model(args.judge_dir, "last", args.device)
        judge = Judge(jm, jt)
    result: dict[str, Any] = {
        "what": "AR -> diffusion adaptation: NELBO (nats/token) against iterations of adaptation",
        "date": now(), "machine": machine_info(args.device), "ar_dir": args.ar_dir,
        "ar_iter": ar_meta.get("iter_num"), "command": " ".join(["python", "benchmarks/adaptation.py", *argv]),
        "train_config": {k: v for k, v in config_to_dict(cfg0).items()
                         if k not in ("out_dir", "device", "progress", "plot", "init_from", "max_iters")},
        "eval": {"windows": {s: int(w.size(0)) for s, w in windows.items()}, "tokens_per_window": T, "n_draws": 4,
                 "mask_seeds": SEEDS, "splits": "dev/test halves of val.bin (nanodlm.evaluation.protocol.dev_test)"},
        "ar": measure(ar, windows, args, args.device), "compare": {}, "rows": [],
    }
    del ar
    for run_dir in filter(None, (args.compare or "").split(",")):
        other, other_meta, _ = load_model(run_dir, "last", args.device)
        result["compare"][run_dir] = {"iter": other_meta.get("iter_num"), **measure(other, windows, args, args.device)}
        del other

    # iteration 0: the adapted weights before any training, under full attention (what a sampler would see)
    model_args, state, note = init_from_source(cfg0, int(ar_meta["model_args"]["vocab_size"]))
    print(note)
    start = GPT(GPTConfig(**model_args))
    start.load_state_dict(state)
    start.to(args.device).eval()
    result["rows"].append({"iter": 0, **measure(start, windows, args, args.device)})
    del start, state
    write_json(args.json, result)

    # stages: train to each eval point (resuming), measure, and keep the row beside the run for a rerun to reuse
    settings = {k: getattr(args, k) for k in ("eval_windows", "judge_dir", "num_samples", "length", "steps")}
    stages_path = out_dir / "stages.json"
    stages = read_json(stages_path, "stages file") if stages_path.exists() else {}
    skip = ("device", "progress", "max_iters", "init_from")
    trained = {k: v for k, v in config_to_dict(cfg0).items() if k not in skip}
    if (out_dir / "ckpt.json").exists() and stages.get("train_config", trained) != trained:
        raise SystemExit(f"{out_dir} was trained with other settings: use another --name or --work_dir")
    if stages.get("settings") != settings:  # other measurements: measure again
        stages = {"settings": settings, "rows": {}}
    stages["train_config"] = trained
    for stop in evals:
        done = saved_iter(out_dir) or 0
        if done >= stop and str(stop) in stages["rows"]:
            row = stages["rows"][str(stop)]
        elif done > stop:
            raise SystemExit(f"{out_dir} is already at iter {done} > {stop} with no measurement at {stop}: use "
                             "another --work_dir or --name")
        else:
            if done < stop:
                if done > 0:  # the saved config (the AR's architecture) is the base, as on the command line
                    train(load_train_config([f"--out_dir={out_dir}", "--init_from=resume", f"--max_iters={stop}",
                                             f"--device={args.device}", f"--progress={values['progress']}"]))
                else:
                    train(build_config(TrainConfig, {**values, "init_from": args.ar_dir, "max_iters": stop}))
            model, _, tok = load_model(out_dir, "last", args.device)
            row = {"iter": stop, **measure(model, windows, args, args.device)}
            j = judged(model, tok, judge, args)
            if j is not None:
                row["judge"] = j
            stages["rows"][str(stop)] = row
            stages_path.write_text(json.dumps(stages, indent=2))
        result["rows"].append(row)
        j = row.get("judge")
        print(f"iter {stop}: NELBO dev {row['dev']['nelbo']:.4f} test {row['test']['nelbo']:.4f}"
              + (f", judge PPL {j['judge_ppl']:.3f}" if j else ""))
        write_json(args.json, result)
    return result


def main(argv: list[str] | None = None) -> int:
    run(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
