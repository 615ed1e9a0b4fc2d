"""``bench quality``: the AR vs diffusion protocol, judged (``bench steps`` lives in ``bench_steps.py``).

In one command: prepare shakespeare_char under ``work_dir/data``; train (or reuse) an AR
model, a diffusion model and an AR judge, each in ``work_dir/runs/<name>-<hash8>`` keyed by a hash of its
training config; sample ``num_samples`` texts of ``length`` characters at temperature 1 from both models
(AR after a "\\n" prompt); score them and real validation passages with the judge; evaluate the AR loss and the
diffusion NELBO on the same validation windows; write one JSON and print a summary table.

Both models are evaluated at their last checkpoint (after ``max_iters``, the same number of training tokens),
not the best-on-val one: choosing by val loss and then reporting val numbers would flatter the model.
Judge perplexity is the "generative perplexity" of MDLM (Sahoo et al. 2024, arXiv:2406.07524); entropy sits
beside it because a repetitive sampler gets a low perplexity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .bench import BENCH_DEFAULTS, machine_info, now, parse_sampling_args, print_table, warm_up_sampling, write_json
from .config import TrainConfig, build_config, config_to_dict, read_config_file
from .distributed import resolve_device
from .errors import UserError
from .generate import SamplerOptions

# --- presets --------------------------------------------------------------------------------------------------

# AR and diffusion share one model/optimizer config (the same sizes and the same number of training tokens)
_CPU_MODEL: dict[str, Any] = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=256, batch_size=12, dropout=0.0, learning_rate=1e-3, min_lr=1e-4,
    warmup_iters=100, beta2=0.99, max_iters=5000, lr_decay_iters=5000, eval_interval=500, eval_iters=20,
    log_interval=10,
)
_SMOKE_MODEL: dict[str, Any] = dict(
    n_layer=1, n_head=2, n_embd=32, block_size=64, batch_size=4, dropout=0.0, learning_rate=1e-3, min_lr=1e-4,
    warmup_iters=5, beta2=0.99, max_iters=30, lr_decay_iters=30, eval_interval=30, eval_iters=2, log_interval=10,
)
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "model": _CPU_MODEL,
        "judge": "judge",  # configs/judge.py: 6 layers, 6 heads, 192 dim, block 256
        "num_samples": 32, "length": 256, "steps": 64, "eval_windows": 200, "eval_batch_size": 32,
    },
    "smoke": {  # the same protocol, small enough for a test: seconds on 2 cores
        "model": {**_SMOKE_MODEL, "plot": False},
        "judge": {**_SMOKE_MODEL, "n_layer": 2, "plot": False},
        "num_samples": 4, "length": 64, "steps": 8, "eval_windows": 8, "eval_batch_size": 8,
    },
}
DATASET = "shakespeare_char"
# keys that cannot change the trained weights (or are the run's location): left out of the run hash
NOT_HASHED = ("out_dir", "data_dir", "init_from", "eval_only", "progress", "plot", "log_interval", "wandb_log",
              "wandb_project", "wandb_run_name", "always_save_checkpoint", "device", "backend", "compile")
# keys added after runs were first hashed: left out while at these values, so those runs keep their hash
HASHED_IF_SET = {"diffusion_block": 0, "mdlm_t_max": 1.0}
# keys a gpt2 run never reads: its hash must not change when their defaults do
DIFFUSION_ONLY = ("objective", "penalty_keep_mask", "penalty_mask_correct", "mdlm_eps", "repair_rate_max",
                  "copy_weight", "diffusion_block", "mdlm_t_max")
PROTECTED = ("out_dir", "data_dir", "dataset", "model_type", "init_from", "eval_only", "device")
CKPT = "last"  # see the module docstring


# --- bench quality --------------------------------------------------------------------------------------------

@dataclass
class QualityArgs:
    preset: str = "cpu"  # cpu | smoke
    json: str | None = None  # default <work_dir>/quality-<preset>.json
    work_dir: str = "bench-out"  # data/ and runs/ live here; trained models are reused from it
    objective: str = BENCH_DEFAULTS["objective"]  # the diffusion model's training objective
    pos_emb: str = BENCH_DEFAULTS["pos_emb"]  # the diffusion model's positions
    steps: int | None = None  # diffusion sampling steps (default: the preset's)
    compare_sampler: str | None = "ancestral"  # also sample the same diffusion model with this sampler
    num_samples: int | None = None  # default: the preset's
    length: int | None = None  # characters per sample (default: the preset's)
    seed: int = 1337  # sampling, reference passages and NELBO masks (training seeds are in the configs)
    device: str = "auto"
    progress: bool = True  # tqdm bars while training

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        for key in ("steps", "num_samples", "length"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"--{key} must be >= 1; got {getattr(self, key)}")


def config_hash(cfg: TrainConfig) -> str:
    """8 hex digits of sha256 over the training config, without the keys in NOT_HASHED (and for gpt2 runs
    without DIFFUSION_ONLY)."""
    skip = NOT_HASHED + (DIFFUSION_ONLY if cfg.model_type == "gpt2" else ())
    values = {k: v for k, v in config_to_dict(cfg).items()
              if k not in skip and not (k in HASHED_IF_SET and v == HASHED_IF_SET[k])}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def _route_overrides(rest: dict[str, str]) -> dict[str, dict[str, str]]:
    """Unknown bench keys -> TrainConfig overrides: ``--ar.KEY`` / ``--judge.KEY`` for those models, plain
    ``--KEY`` for the diffusion model."""
    routed: dict[str, dict[str, str]] = {"ar": {}, "diffusion": {}, "judge": {}}
    train_keys = {f.name for f in fields(TrainConfig) if f.init}
    for key, value in rest.items():
        name, dot, sub = key.partition(".")
        target, sub = (name, sub) if dot else ("diffusion", key)
        if target not in routed or sub not in train_keys:
            bench_keys = ", ".join([f.name for f in fields(QualityArgs)] + [f.name for f in fields(SamplerOptions)])
            raise UserError(f"unknown key '{key}' for bench quality (bench keys: {bench_keys}; any TrainConfig key "
                            "overrides the diffusion model, ar.KEY / judge.KEY the others)")
        if sub in PROTECTED:
            raise UserError(f"'{key}' is fixed by the protocol (run folders, dataset and device are set by bench)")
        routed[target][sub] = value
    return routed


def _run(name: str, values: dict[str, Any], work_dir: Path, data_dir: Path, device: str, progress: bool
         ) -> dict[str, Any]:
    """Train ``name`` in work_dir/runs/<name>-<hash8>, or reuse it when its ckpt.pt reached max_iters
    (an interrupted run resumes). Returns out_dir, reused, the config and the training ms/iter."""
    from .plotting import read_metrics
    from .train import train

    base = {**values, "dataset": DATASET, "data_dir": str(data_dir), "device": device, "progress": progress,
            "always_save_checkpoint": True}  # a save at every eval: an interrupted run resumes from there
    cfg = build_config(TrainConfig, {**base, "out_dir": "-"})
    out_dir = work_dir / "runs" / f"{name}-{config_hash(cfg)}"
    cfg = build_config(TrainConfig, {**base, "out_dir": str(out_dir)})
    done_iters = -1
    meta_path = out_dir / "ckpt.json"  # written after ckpt.pt: if it says finished, ckpt.pt is finished
    if (out_dir / "ckpt.pt").exists() and meta_path.exists():
        done_iters = int(json.loads(meta_path.read_text()).get("iter_num", -1))
    reused = done_iters == cfg.max_iters
    if reused:
        print(f"{name}: reusing {out_dir} ({done_iters} iters)")
    else:
        if done_iters >= 0:
            cfg = build_config(TrainConfig, {**config_to_dict(cfg), "init_from": "resume"})
        print(f"{name}: training in {out_dir}" + (f" (resuming at iter {done_iters})" if done_iters >= 0 else ""))
        summary = train(cfg)
        if summary.get("interrupted"):
            raise KeyboardInterrupt
    steps = [r["ms"] for r in read_metrics(out_dir / "metrics.jsonl") if r.get("kind") == "step"]
    steps = sorted(steps[1:] or steps)  # the first logged step pays the warm-up
    ms = steps[len(steps) // 2] if steps else float("nan")  # median: robust to evals and hiccups
    return {"out_dir": str(out_dir), "reused": reused, "cfg": cfg, "train_ms_per_iter": ms}


def _describe(run: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    cfg: TrainConfig = run["cfg"]
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    return {
        "out_dir": run["out_dir"], "reused": run["reused"], "params": model.get_num_params(),
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "block_size": cfg.block_size,
        "batch_size": cfg.batch_size, "max_iters": cfg.max_iters, "tokens_seen": cfg.max_iters * tokens_per_iter,
        "learning_rate": cfg.learning_rate, "min_lr": cfg.min_lr, "warmup_iters": cfg.warmup_iters,
        "pos_emb": model.config.pos_emb, "train_ms_per_iter": run["train_ms_per_iter"],
        "config_hash": Path(run["out_dir"]).name.rsplit("-", 1)[-1],
    }


def bench_quality(argv: list[str]) -> dict[str, Any]:
    """The whole AR vs diffusion protocol (see the module docstring) -> the result dict, also written as JSON."""
    from .checkpoint import load_model
    from .data import load_meta, open_split, prepare
    from .evaluate import ar_cross_entropy, diffusion_nelbo, eval_windows
    from .judge import generate_texts, reference_texts, score_texts
    from .samplers import SAMPLERS

    args, options, rest = parse_sampling_args("quality", QualityArgs, argv, strict=False)
    routed = _route_overrides(rest)
    preset = PRESETS[args.preset]
    device = resolve_device(args.device)
    steps = args.steps or preset["steps"]
    num_samples, length = args.num_samples or preset["num_samples"], args.length or preset["length"]
    options = dataclasses.replace(options, steps=steps)
    if args.compare_sampler is not None and args.compare_sampler not in SAMPLERS:
        raise UserError(f"--compare_sampler must be one of {', '.join(SAMPLERS)} or None; got {args.compare_sampler!r}")

    # ---- data
    work_dir = Path(args.work_dir)
    data_dir = work_dir / "data"
    try:
        load_meta(str(data_dir), DATASET)
    except UserError:
        print(f"preparing {DATASET} in {data_dir}")
        prepare(DATASET, data_dir=str(data_dir))

    # ---- models: trained once, then reused while their configs are unchanged
    judge_values = preset["judge"]
    if isinstance(judge_values, str):
        judge_values = {k: v for k, v in read_config_file(judge_values).items() if k not in PROTECTED}
    values = {
        "ar": {**preset["model"], "model_type": "gpt2", **routed["ar"]},
        "diffusion": {**preset["model"], "model_type": "diffusion", "objective": args.objective,
                      "pos_emb": args.pos_emb, "learning_rate": BENCH_DEFAULTS["learning_rate"],
                      "copy_weight": BENCH_DEFAULTS["copy_weight"], **routed["diffusion"]},
        "judge": {**judge_values, "model_type": "gpt2", **routed["judge"]},
    }
    runs = {name: _run(name, v, work_dir, data_dir, device, args.progress) for name, v in values.items()}

    # ---- likelihoods on the same validation windows
    loaded = {name: load_model(run["out_dir"], CKPT, device) for name, run in runs.items()}  # (model, meta, tok)
    models = {name: model for name, (model, _, _) in loaded.items()}
    val = open_split(str(data_dir), DATASET, "val")
    eval_bs = preset["eval_batch_size"]
    windows: dict[int, torch.Tensor] = {}

    def windows_for(model: torch.nn.Module) -> torch.Tensor:
        T = model.config.block_size  # (N, T+1); the AR and diffusion presets share T, so they share windows
        if T not in windows:
            windows[T] = eval_windows(val, T, min(preset["eval_windows"], max(1, len(val) // (T + 1))))
        return windows[T]

    print("evaluating AR loss, diffusion NELBO and judge loss on the validation windows")
    ar_eval = ar_cross_entropy(models["ar"], windows_for(models["ar"]), eval_bs)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    dm_eval = diffusion_nelbo(models["diffusion"], windows_for(models["diffusion"]), eval_bs, gen, n_draws=4)
    judge_eval = ar_cross_entropy(models["judge"], windows_for(models["judge"]), eval_bs)

    # ---- samples, judged beside real text
    judge, judge_tok = models["judge"], loaded["judge"][2]
    sampling = dict(num_samples=num_samples, length=length, seed=args.seed, device=device, ckpt=CKPT)
    print(f"sampling {num_samples} x {length} chars from each model and judging them")
    for name in ("ar", "diffusion"):
        warm_up_sampling(runs[name]["out_dir"], options, device, CKPT, num_samples, length)
    ar_texts, ar_info = generate_texts(runs["ar"]["out_dir"], options, **sampling)
    opts = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("sampler", "steps")}
    dm_texts, dm_info = generate_texts(runs["diffusion"]["out_dir"], options, **sampling)
    real_texts = reference_texts(str(data_dir), DATASET, judge_tok, num_samples, length, args.seed, split="val")
    scores = {name: score_texts(judge, judge_tok, texts)
              for name, texts in (("real", real_texts), ("ar", ar_texts), ("diffusion", dm_texts))}
    compare: dict[str, Any] | None = None
    if args.compare_sampler and args.compare_sampler != options.sampler:
        cmp_texts, cmp_info = generate_texts(runs["diffusion"]["out_dir"],
                                             dataclasses.replace(options, sampler=args.compare_sampler), **sampling)
        compare = {**score_texts(judge, judge_tok, cmp_texts), "sampler": args.compare_sampler, "steps": steps,
                   "chars_per_s": cmp_info["chars_per_s"], "example": cmp_texts[0]}

    # ---- the result
    dm_cfg: TrainConfig = runs["diffusion"]["cfg"]
    result: dict[str, Any] = {
        "benchmark": "quality",
        "real": scores["real"],
        "ar": {"val_loss": ar_eval["loss"], "val_loss_stderr": ar_eval["stderr"], "val_tokens": ar_eval["tokens"],
               **scores["ar"], "chars_per_s": ar_info["chars_per_s"], "example": ar_texts[0]},
        "diffusion": {"nelbo": dm_eval["nelbo"], "nelbo_stderr": dm_eval["stderr"], "val_tokens": dm_eval["tokens"],
                      **scores["diffusion"], "steps": steps, "chars_per_s": dm_info["chars_per_s"],
                      "forward_passes": dm_info.get("forward_passes"), "sampler": options.sampler, **opts,
                      "objective": dm_cfg.objective, "pos_emb": models["diffusion"].config.pos_emb,
                      "diffusion_block": models["diffusion"].config.diffusion_block,
                      "example": dm_texts[0]},
        "diffusion_compare": compare,
        "judge": {"val_loss": judge_eval["loss"], "val_loss_stderr": judge_eval["stderr"]},
        "ratios": {"nelbo_over_ar": dm_eval["nelbo"] / ar_eval["loss"],
                   "judge_ppl_over_ar": scores["diffusion"]["judge_ppl"] / scores["ar"]["judge_ppl"],
                   "chars_per_s_over_ar": dm_info["chars_per_s"] / ar_info["chars_per_s"]},
        "protocol": {
            "preset": args.preset, "dataset": DATASET, "checkpoint": f"{CKPT} (after max_iters)",
            "ar": _describe(runs["ar"], models["ar"]), "diffusion": _describe(runs["diffusion"], models["diffusion"]),
            "judge": _describe(runs["judge"], models["judge"]),
            "eval_windows": int(windows_for(models["ar"]).size(0)), "nelbo_draws": 4,
            "num_samples": num_samples, "length": length, "temperature": options.temperature,
            "top_k": options.top_k, "top_p": options.top_p, "ar_prompt": "\n", "seed": args.seed, "date": now(),
            "machine": machine_info(device),
        },
    }
    ar, dm, real = result["ar"], result["diffusion"], result["real"]
    print_table(f"AR vs diffusion ({dm['objective']}, {dm['sampler']} {steps} steps), preset {args.preset}, "
                f"{num_samples} x {length} chars, T={options.temperature}",
                ["", "val loss / NELBO", "judge PPL", "entropy (bits)", "distinct-4", "chars/s"],
                [["real text", None, real["judge_ppl"], real["entropy_bits"], real["distinct_4"], None],
                 ["AR", f"{ar['val_loss']:.4f} ± {ar['val_loss_stderr']:.4f}", ar["judge_ppl"],
                  ar["entropy_bits"], ar["distinct_4"], ar["chars_per_s"]],
                 ["diffusion", f"≤ {dm['nelbo']:.4f} ± {dm['nelbo_stderr']:.4f}", dm["judge_ppl"],
                  dm["entropy_bits"], dm["distinct_4"], dm["chars_per_s"]],
                 *([[f"diffusion, {compare['sampler']}", None, compare["judge_ppl"], compare["entropy_bits"],
                     compare["distinct_4"], compare["chars_per_s"]]] if compare else []),
                 ["diffusion / AR", f"{result['ratios']['nelbo_over_ar']:.3f}",
                  result["ratios"]["judge_ppl_over_ar"], None, None, result["ratios"]["chars_per_s_over_ar"]]])
    if not all(math.isfinite(v) for v in (ar["val_loss"], dm["nelbo"], dm["judge_ppl"], ar["judge_ppl"])):
        print("warning: some numbers are not finite (null in the JSON)")
    write_json(args.json or str(work_dir / f"quality-{args.preset}.json"), result)
    return result
