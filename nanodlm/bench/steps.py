"""``bench steps``: judge perplexity, entropy and chars/s of diffusion samples against the number of steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..core.report import save_figure
from ..evaluation.judge import generate_texts, reference_texts, score_texts
from ..runs.checkpoint import find_checkpoint, load_checkpoint, load_model
from ..training.distributed import resolve_device
from .common import machine_info, now, parse_sampling_args, parse_steps, print_table, warm_up_sampling, write_json
from .runs import CKPT

DATASET = "shakespeare_char"  # the reference text when the diffusion run does not name its dataset

# --- bench steps ----------------------------------------------------------------------------------------------

@dataclass
class StepsBenchArgs:
    out_dir: str | None = None  # the diffusion run (required)
    judge: str | None = None  # the AR judge's run (required)
    steps: str = "1,4,16,64,256"  # the diffusion step counts to sweep (the sampler options apply to each)
    num_samples: int = 30  # texts per step count
    length: int = 256  # tokens per text
    seed: int = 1337  # sampling and the reference passages
    device: str = "auto"
    ckpt: str = "best"
    ar_out_dir: str | None = None  # an AR run: drawn as a horizontal line
    data_dir: str | None = None  # real-text line: default the diffusion run's data_dir and dataset
    json: str | None = None  # default <out_dir>/bench-steps.json
    png: str | None = None  # default: the JSON path with .png

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.length < 2:
            raise UserError(f"--num_samples must be >= 1 and --length >= 2; got {self.num_samples}, {self.length}")


def _load_judge(judge_dir: str, device: str) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    model, meta, tok = load_model(judge_dir, CKPT, device)
    if model.config.model_type != "gpt2":
        raise UserError(f"the judge in {judge_dir} is a {model.config.model_type} model; it must be gpt2")
    return model, tok, meta


def _run_meta(out_dir: str, ckpt: str) -> dict[str, Any]:
    return load_checkpoint(find_checkpoint(out_dir, ckpt))["meta"]


def bench_steps(argv: list[str]) -> dict[str, Any]:
    """Judge PPL, entropy and chars/s of diffusion samples at each step count; AR and real text as lines."""
    args, options, _ = parse_sampling_args("steps", StepsBenchArgs, argv)
    if not args.out_dir or not args.judge:
        raise UserError("bench steps needs --out_dir=DIFFUSION_DIR and --judge=JUDGE_DIR")
    steps_list = parse_steps(args.steps)
    device = resolve_device(args.device)
    meta = _run_meta(args.out_dir, args.ckpt)
    if meta["model_args"].get("model_type") != "diffusion":
        raise UserError(f"--out_dir={args.out_dir} holds a {meta['model_args'].get('model_type')} model; "
                        "bench steps needs a diffusion run (pass an AR run as --ar_out_dir)")
    judge, judge_tok, _ = _load_judge(args.judge, device)
    sampling = dict(num_samples=args.num_samples, length=args.length, seed=args.seed, device=device, ckpt=args.ckpt)

    def judged(out_dir: str, steps: int) -> dict[str, Any]:
        texts, info = generate_texts(out_dir, dataclasses.replace(options, steps=steps), **sampling)
        return {**score_texts(judge, judge_tok, texts), **info, "example": texts[0][:200]}

    for out_dir in (args.out_dir, args.ar_out_dir):
        if out_dir:
            warm_up_sampling(out_dir, options, device, args.ckpt, args.num_samples, args.length)
    rows = []
    for steps in steps_list:
        rows.append(judged(args.out_dir, steps))
        print(f"steps {steps}: judge PPL {rows[-1]['judge_ppl']:.3f}, {rows[-1]['chars_per_s']:,.0f} chars/s")
    ar = judged(args.ar_out_dir, args.length) if args.ar_out_dir else None
    data_dir = args.data_dir or meta.get("config", {}).get("data_dir", "data")
    dataset = meta.get("config", {}).get("dataset", DATASET)
    try:
        real = score_texts(judge, judge_tok, reference_texts(data_dir, dataset, judge_tok, args.num_samples,
                                                             args.length, args.seed))
    except UserError as e:  # no prepared data here: the plot loses one line, not the whole benchmark
        print(f"no real-text line: {e}")
        real = None

    result = {"benchmark": "steps", "date": now(), "machine": machine_info(device), "out_dir": args.out_dir,
              "judge": args.judge, "ar_out_dir": args.ar_out_dir, "ckpt": args.ckpt,
              **{k: v for k, v in dataclasses.asdict(options).items() if k != "steps"},
              "objective": meta.get("config", {}).get("objective"), "num_samples": args.num_samples,
              "length": args.length, "seed": args.seed, "rows": rows, "ar": ar, "real": real}
    json_path = args.json or str(Path(args.out_dir) / "bench-steps.json")
    png_path = args.png or str(Path(json_path).with_suffix(".png"))
    print_table(f"diffusion ({options.sampler}) vs steps, judged by {args.judge}",
                ["", "steps", "judge PPL", "entropy (bits)", "distinct-4", "chars/s"],
                [["diffusion", r["steps"], r["judge_ppl"], r["entropy_bits"], r["distinct_4"], r["chars_per_s"]]
                 for r in rows]
                + ([["AR", None, ar["judge_ppl"], ar["entropy_bits"], ar["distinct_4"], ar["chars_per_s"]]] if ar
                   else [])
                + ([["real text", None, real["judge_ppl"], real["entropy_bits"], real["distinct_4"], None]] if real
                   else []))
    write_json(json_path, result)
    if json_path != "-" and plot_steps(result, png_path):
        print(f"wrote {png_path}")
    return result


def plot_steps(result: dict[str, Any], png_path: str | Path) -> bool:
    """Two panels: judge PPL vs steps and chars/s vs steps (log x), AR and real text as horizontal lines.
    False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows, ar, real = result["rows"], result.get("ar"), result.get("real")
    steps = [r["steps"] for r in rows]
    fig, (ax_q, ax_s) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    ax_q.plot(steps, [r["judge_ppl"] for r in rows], "o-", label=f"diffusion ({result['sampler']})")
    ax_s.plot(steps, [r["chars_per_s"] for r in rows], "o-", label=f"diffusion ({result['sampler']})")
    if ar:
        ax_q.axhline(ar["judge_ppl"], color="C1", ls="--", label="AR")
        ax_s.axhline(ar["chars_per_s"], color="C1", ls="--", label="AR (KV cache)")
    if real:
        ax_q.axhline(real["judge_ppl"], color="C2", ls=":", label="real text")
    ax_q.set_ylabel("judge perplexity (log; lower is better)")
    ax_q.set_yscale("log")
    ax_s.set_ylabel("chars / s")
    ax_s.set_yscale("log")
    for ax in (ax_q, ax_s):
        ax.set_xscale("log")
        ax.set_xlabel("diffusion steps")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"{result['num_samples']} samples × {result['length']} chars, T={result['temperature']}")
    fig.tight_layout()
    return save_figure(fig, png_path)
