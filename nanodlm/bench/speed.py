"""``nanodlm bench train`` and ``nanodlm bench sample``: paired training-step timing and sampling throughput.

``train`` keeps both models (same sizes, same batches) in one process and alternates their timed steps, so
machine noise lands on both. ``sample`` times AR with and without the KV cache and diffusion at each step
count, at batch 1 and batch N. Shared helpers live in ``bench.py``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import UserError
from ..data.dataset import get_batch, load_meta, open_split
from ..model.model import GPTConfig
from ..runs.checkpoint import build_model, load_model
from ..sampling.generate import Generation, Prompt, SamplerOptions, generate
from ..training.config import TrainConfig, build_config, config_to_dict, read_config_file
from ..training.distributed import resolve_device
from ..training.step import Stepper, lr_at, make_loss_fn, step_seed
from .common import (
    RANDOM_VOCAB,
    machine_info,
    now,
    parse_sampling_args,
    parse_steps,
    print_table,
    split_args,
    timed,
    write_json,
)

# --- bench train ----------------------------------------------------------------------------------------------

@dataclass
class TrainBenchArgs:
    iters: int = 50  # timed steps per model, alternating AR and diffusion
    warmup: int = 5  # untimed steps per model first (allocator, kernel selection, caches)
    memory: bool = True  # measure peak memory (on CPU: one fresh child process per model)
    json: str | None = None

    def __post_init__(self) -> None:
        if self.iters < 1 or self.warmup < 0:
            raise UserError(f"--iters must be >= 1 and --warmup >= 0; got {self.iters} and {self.warmup}")


class StepRunner:
    """One model built as train() builds it, stepped by train()'s own ``Stepper``; ``step(batches, it)`` runs one
    optimizer step at iteration ``it``'s learning rate and noise, and returns its wall time (the step alone)."""

    def __init__(self, cfg: TrainConfig, data_vocab: int, device: str) -> None:
        self.cfg, self.device = cfg, device
        torch.manual_seed(step_seed(cfg.seed, 0, -1, "init"))  # the initial weights train() would start from
        self.model = build_model(GPTConfig.for_data(cfg, data_vocab).to_dict(), None, "scratch").to(device)
        self.model.train()
        self.stepper = Stepper(cfg, self.model, device, make_loss_fn(cfg, self.model.config.mask_token_id))
        self.forward = torch.compile(self.model) if cfg.compile else self.model

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], it: int) -> float:
        for group in self.stepper.optimizer.param_groups:
            group["lr"] = lr_at(it, self.cfg)
        # corruption noise from a per-step generator, as in train(); made before the clock starts
        noise = torch.Generator(device=self.device).manual_seed(step_seed(self.cfg.seed, 0, it, "noise"))
        _, dt = timed(self.device, lambda: self.stepper.step(self.forward, batches, len(batches), noise))
        return dt


def _random_tokens(n: int, vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=n, dtype=np.int64).astype(np.uint16)


def warm_up_runtime(cfg: TrainConfig, data_vocab: int, device: str) -> None:
    """One step of a minute model of the same kind: the autograd engine, thread pools and library workspaces
    (cuBLAS keeps its workspace in PyTorch's allocator) start on first use and would otherwise count as the
    memory of whichever model is measured first."""
    tiny = dataclasses.replace(cfg, n_layer=1, n_head=1, n_embd=8, block_size=8, batch_size=1,
                               gradient_accumulation_steps=1, compile=False)
    x = torch.randint(data_vocab, (1, 9), generator=torch.Generator().manual_seed(0)).to(device)  # (1, T+1)
    StepRunner(tiny, data_vocab, device).step([(x[:, :-1], x[:, 1:])], 0)


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to /proc/self/clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(vmhwm: bool) -> int:
    if vmhwm:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def _rss_probe(values: dict[str, Any], data_vocab: int, steps: int, threads: int, queue: Any) -> None:
    """Child process: growth of the peak RSS while building one model and running ``steps`` steps (bytes).

    The peak is reset first where Linux allows it, so the imports' transient peak does not hide a small model.
    """
    torch.set_num_threads(threads)
    cfg = build_config(TrainConfig, values)
    data = _random_tokens(cfg.block_size * 8 + 1, data_vocab, 0)
    gen = torch.Generator().manual_seed(0)
    batches = [get_batch(data, cfg.batch_size, cfg.block_size, gen, "cpu")
               for _ in range(cfg.gradient_accumulation_steps)]
    warm_up_runtime(cfg, data_vocab, "cpu")
    vmhwm = _reset_peak_rss()
    before = _peak_rss_bytes(vmhwm)
    runner = StepRunner(cfg, data_vocab, "cpu")
    for it in range(steps):
        runner.step(batches, it)
    queue.put((_peak_rss_bytes(vmhwm) - before, vmhwm))


def _cpu_peak_rss(cfgs: list[TrainConfig], data_vocab: int, steps: int) -> tuple[list[int | None], str]:
    """Peak-RSS growth per config, each in a fresh spawned process (a process's high-water mark is not a
    per-model number: the model measured second would only show memory beyond the first one's peak)."""
    ctx = mp.get_context("spawn")
    jobs = []
    for cfg in cfgs:
        queue = ctx.Queue()
        proc = ctx.Process(target=_rss_probe, args=(config_to_dict(cfg), data_vocab, steps,
                                                    max(1, torch.get_num_threads() // len(cfgs)), queue))
        proc.start()
        jobs.append((proc, queue))
    out: list[int | None] = []
    vmhwm = True
    for proc, queue in jobs:
        try:
            grown, reset = queue.get(timeout=600)
            out.append(int(grown))
            vmhwm = vmhwm and reset
        except Exception:  # a child that died (out of memory, say) leaves the number unknown, not the bench dead
            out.append(None)
        proc.join(timeout=30)
    how = "VmHWM, reset via /proc/self/clear_refs" if vmhwm else "resource.getrusage ru_maxrss"
    return out, f"cpu peak RSS growth in a fresh process per model ({how}; weights + grads + optimizer + activations)"


def bench_train(argv: list[str]) -> dict[str, Any]:
    """AR vs diffusion training step at the same config: paired, alternating, same batches."""
    args, config_file, overrides = split_args(TrainBenchArgs, argv)
    values: dict[str, Any] = read_config_file(config_file or "cpu")
    values.update(overrides)
    # --diffusion_block=b times block diffusion against the same network as a causal AR model
    base = build_config(TrainConfig, {**values, "model_type": "gpt2", "diffusion_block": 0})
    device = resolve_device(base.device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # pos_emb "auto" resolves per model (learned for gpt2, rope for diffusion); --pos_emb sets both
    cfgs = {"gpt2": dataclasses.replace(base, device=device),
            "diffusion": build_config(TrainConfig, {**values, "model_type": "diffusion", "device": device})}

    # ---- data: the prepared train split, else random tokens of shakespeare_char's vocabulary
    try:
        data_vocab = int(load_meta(base.data_dir, base.dataset)["vocab_size"])
        data: np.ndarray = open_split(base.data_dir, base.dataset, "train")
        data_kind = f"{base.data_dir}/{base.dataset} train split"
    except UserError:
        data_vocab, data_kind = RANDOM_VOCAB, f"random tokens (vocab {RANDOM_VOCAB}; no prepared {base.dataset})"
        data = _random_tokens(max(100_000, 8 * base.block_size + 1), data_vocab, base.seed)
    batch_gen = torch.Generator().manual_seed(base.seed)

    def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        # data loading stays outside the timed region, for both models alike
        return [get_batch(data, base.batch_size, base.block_size, batch_gen, device)
                for _ in range(base.gradient_accumulation_steps)]

    # ---- build and warm up; on CUDA peak memory is read per model from the allocator, built one after the other
    cuda = device.startswith("cuda")
    runners: dict[str, StepRunner] = {}
    peak: dict[str, int | None] = {t: None for t in cfgs}
    for t, cfg in cfgs.items():
        if cuda:
            warm_up_runtime(cfg, data_vocab, device)
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)  # the other model's weights and optimizer state
        runners[t] = StepRunner(cfg, data_vocab, device)
        for it in range(args.warmup):
            runners[t].step(batches(), it)
        if cuda:
            peak[t] = torch.cuda.max_memory_allocated(device) - baseline
    memory_kind = "cuda max_memory_allocated growth (weights + grads + optimizer + activations)" if cuda else "none"
    if not cuda and args.memory:
        rss, memory_kind = _cpu_peak_rss(list(cfgs.values()), data_vocab, max(2, min(args.warmup, 3)))
        peak = dict(zip(cfgs, rss))

    # ---- timed: the order flips every pair (AR, diff, diff, AR, ...) so neither always runs first
    times: dict[str, list[float]] = {t: [] for t in cfgs}
    for i in range(args.iters):
        b = batches()
        order = ("gpt2", "diffusion") if i % 2 == 0 else ("diffusion", "gpt2")
        for t in order:
            times[t].append(runners[t].step(b, args.warmup + i))

    tokens_per_iter = base.gradient_accumulation_steps * base.batch_size * base.block_size
    result: dict[str, Any] = {
        "benchmark": "train", "date": now(), "machine": machine_info(device), "data": data_kind,
        "iters": args.iters, "warmup": args.warmup, "tokens_per_iter": tokens_per_iter, "memory_kind": memory_kind,
        "config": {k: getattr(base, k) for k in ("batch_size", "block_size", "gradient_accumulation_steps", "n_layer",
                                                   "n_head", "n_embd", "dropout", "dtype", "compile", "objective")},
    }
    # the diffusion side's own settings (block diffusion, clipped schedule): what makes the ratio reproducible
    result["config"]["diffusion"] = {k: getattr(cfgs["diffusion"], k) for k in (
        "diffusion_block", "mdlm_eps", "mdlm_t_max", "objective", "pos_emb")}
    for t, runner in runners.items():
        ms = [1000 * s for s in times[t]]
        med = statistics.median(ms)
        result[t] = {
            "ms_per_iter_median": med, "ms_per_iter_mean": statistics.fmean(ms), "ms_per_iter_min": min(ms),
            "ms_per_iter_stdev": statistics.stdev(ms) if len(ms) > 1 else 0.0,
            "tokens_per_s": tokens_per_iter / (med / 1000), "params": runner.model.get_num_params(),
            "pos_emb": runner.model.config.pos_emb, "vocab_size": runner.model.config.vocab_size,
            "peak_mem_mb": peak[t] / 2**20 if peak[t] is not None else None,
        }
    ar, dm = result["gpt2"], result["diffusion"]
    result["ratio"] = {
        "ms_median": dm["ms_per_iter_median"] / ar["ms_per_iter_median"],
        "ms_mean": dm["ms_per_iter_mean"] / ar["ms_per_iter_mean"],
        "peak_mem": dm["peak_mem_mb"] / ar["peak_mem_mb"] if dm["peak_mem_mb"] and ar["peak_mem_mb"] else None,
    }
    print_table(f"training step, {data_kind}, {device}, {tokens_per_iter:,} tokens/iter, {args.iters} paired iters",
                ["model", "ms/iter (median)", "ms/iter (mean)", "tokens/s", "peak MiB", "params"],
                [[t, result[t]["ms_per_iter_median"], result[t]["ms_per_iter_mean"], result[t]["tokens_per_s"],
                  result[t]["peak_mem_mb"], result[t]["params"]] for t in runners]
                + [["diffusion / AR", result["ratio"]["ms_median"], result["ratio"]["ms_mean"], None,
                    result["ratio"]["peak_mem"], None]], stderr=args.json == "-")
    print(f"memory: {memory_kind}", file=sys.stderr if args.json == "-" else sys.stdout)
    write_json(args.json, result)
    return result


# --- bench sample ---------------------------------------------------------------------------------------------

@dataclass
class SampleBenchArgs:
    out_dir_ar: str | None = None  # an AR run: timed with and without the KV cache
    out_dir_diffusion: str | None = None  # a diffusion run: timed at each step count (the sampler options apply)
    num_samples: int = 8  # the "batch N" of the batched runs
    length: int = 256  # tokens generated per sample (chars for a char model)
    steps: str = "16,64,256"  # diffusion step counts
    repeats: int = 3  # timed runs per row after one warm-up; the median is reported
    seed: int = 1337  # every timed run starts from this seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    ckpt: str = "best"  # best | last
    json: str | None = None  # write the result here (a bare --json: stdout)

    def __post_init__(self) -> None:
        if min(self.num_samples, self.length, self.repeats) < 1:
            raise UserError(f"--num_samples, --length and --repeats must be >= 1; got {self.num_samples}, "
                            f"{self.length}, {self.repeats}")


def bench_sample(argv: list[str]) -> dict[str, Any]:
    """Sampling throughput: AR with and without the KV cache, diffusion at each step count; batch 1 and N."""
    args, options, _ = parse_sampling_args("sample", SampleBenchArgs, argv)
    if not args.out_dir_ar and not args.out_dir_diffusion:
        raise UserError("bench sample needs --out_dir_ar=DIR and/or --out_dir_diffusion=DIR")
    steps_list = parse_steps(args.steps)
    device = resolve_device(args.device)
    rows: list[dict[str, Any]] = []
    prompt = Prompt(length=args.length, max_new_tokens=args.length)  # gpt2: after "\n"; diffusion: all [MASK]

    def measure(model: torch.nn.Module, tok: Any, name: str, mode: str, batch: int, steps: int | None,
                opts: SamplerOptions) -> None:
        """One warm-up, then ``repeats`` timed runs, each from the same seed (the generation alone is timed)."""
        def run() -> Generation:
            return generate(model, tok, opts, prompt, num_samples=batch, seed=args.seed)

        run()
        runs = [run() for _ in range(args.repeats)]
        out = runs[0]
        seconds = statistics.median(r.info["elapsed_s"] for r in runs)
        chars = sum(len(t) for t in out.completions)  # generated text only, no prompt
        tokens = out.tokens.size(0) * (out.tokens.size(1) - out.prompt_len)
        rows.append({"model": name, "mode": mode, "batch": batch, "steps": steps, "tokens": tokens, "chars": chars,
                     "seconds": seconds, "tokens_per_s": tokens / seconds, "chars_per_s": chars / seconds,
                     "forward_passes": out.info["forward_passes"]})

    batches = sorted({1, args.num_samples})

    def load(out_dir: str, model_type: str, flag: str) -> tuple[Any, Any]:
        model, _, tok = load_model(out_dir, args.ckpt, device)
        if model.config.model_type != model_type:
            other = "--out_dir_diffusion" if flag == "--out_dir_ar" else "--out_dir_ar"
            raise UserError(f"{flag}={out_dir} holds a {model.config.model_type} model, not {model_type}: "
                            f"pass it as {other} (are the two directories swapped?)")
        return model, tok

    if args.out_dir_ar:
        model, tok = load(args.out_dir_ar, "gpt2", "--out_dir_ar")
        for use_cache in (True, False):
            for batch in batches:
                measure(model, tok, "gpt2", "kv-cache" if use_cache else "no-cache", batch, None,
                        dataclasses.replace(options, use_kv_cache=use_cache))
    if args.out_dir_diffusion:
        model, tok = load(args.out_dir_diffusion, "diffusion", "--out_dir_diffusion")
        caches = (True, False) if model.config.diffusion_block else (False,)  # block diffusion: with/without
        for steps in steps_list:
            for batch in batches:
                for use_cache in caches:
                    mode = f"{options.sampler}, {steps} steps" + (", KV cache" if use_cache else "")
                    measure(model, tok, "diffusion", mode, batch, steps,
                            dataclasses.replace(options, steps=steps, use_kv_cache=use_cache))

    result = {"benchmark": "sample", "date": now(), "machine": machine_info(device), "length": args.length,
              "num_samples": args.num_samples, **{k: v for k, v in dataclasses.asdict(options).items()
                                                  if k not in ("steps", "use_kv_cache")},
              "repeats": args.repeats, "ckpt": args.ckpt, "out_dir_ar": args.out_dir_ar,
              "out_dir_diffusion": args.out_dir_diffusion, "rows": rows}
    print_table(f"sampling throughput, {args.length} tokens per sample, {device}, median of {args.repeats}",
                ["model", "mode", "batch", "chars/s", "tokens/s", "seconds", "forwards"],
                [[r["model"], r["mode"], r["batch"], r["chars_per_s"], r["tokens_per_s"], r["seconds"],
                  r["forward_passes"]] for r in rows], stderr=args.json == "-")
    write_json(args.json, result)
    return result
