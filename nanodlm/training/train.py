"""Training: one linear function, init -> data -> model -> optimizer -> loop (eval, checkpoint, log, step).

All randomness during training (batch offsets, diffusion corruption, dropout) is drawn from
generators seeded by (seed, rank, iteration), so a resumed run replays exactly the batches and noise
an uninterrupted run would have seen: ``train 40`` == ``train 20 + resume 20``, bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..core.errors import UserError
from ..core.plotting import plot_loss_curves
from ..data.dataset import get_batch, load_meta, open_split
from ..diffusion.diagnostics import diagnostics
from ..diffusion.diffusion import DiffusionOptions, get_objective
from ..diffusion.tidar import tidar_loss
from ..model.attention import annealed_attention
from ..model.model import GPTConfig
from ..runs.checkpoint import build_model, load_checkpoint, save_checkpoint
from ..runs.rundir import SHAPE_KEYS, check_resume, load_optimizer, nothing_to_resume, open_run_dir, truncate_metrics
from .adapt import init_from_source
from .config import TrainConfig, build_config, config_to_dict, parse_overrides, read_config_file
from .distributed import destroy_distributed, init_distributed
from .step import Stepper

# a val loss above DIVERGED_FACTOR x the best so far is a diverged model, even when finite (a loss of 4e11 was
# once saved): training stops and ckpt.pt keeps the last model that passed this test
DIVERGED_FACTOR = 10.0


class TrainingDiverged(UserError):
    pass


def is_diverged(val_loss: float, best_val_loss: float) -> bool:
    """The save rule: a model is saved only if its val loss is finite and at most DIVERGED_FACTOR x the best."""
    return not math.isfinite(val_loss) or (math.isfinite(best_val_loss) and val_loss > DIVERGED_FACTOR * best_val_loss)


def step_seed(seed: int, rank: int, step: int, stream: str) -> int:
    """A 63-bit seed that is a pure function of (seed, rank, step, stream)."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def make_loss_fn(cfg: TrainConfig, mask_token_id: int | None):
    """(model, x, y, generator) -> scalar loss, picked once by model_type and objective."""
    if cfg.objective == "tidar":  # a gpt2 model with a draft stream (tidar.py)
        return lambda model, x, y, gen: tidar_loss(model, x, y, cfg.tidar_alpha)
    if cfg.model_type == "gpt2":
        return lambda model, x, y, gen: model(x, y)[1]
    objective = get_objective(cfg.objective)
    opts = DiffusionOptions(
        mask_token_id=mask_token_id, penalty_keep_mask=cfg.penalty_keep_mask,
        penalty_mask_correct=cfg.penalty_mask_correct, eps=cfg.mdlm_eps, t_max=cfg.mdlm_t_max,
        repair_rate_max=cfg.repair_rate_max, copy_weight=cfg.copy_weight,
    )
    return lambda model, x, y, gen: objective(model, x, gen, opts)


def anneal_ratio(it: int, anneal_iters: int) -> float:
    """Share of the future keys a query may attend at iteration ``it``: 0 (causal) at 0, 1 from anneal_iters on."""
    return 1.0 if anneal_iters <= 0 else min(1.0, it / anneal_iters)


class AnnealedModel:
    """The model as one training step calls it: with DiffuLLaMA's annealed attention mask (model.annealed_attention)
    of that step, drawn once and shared by the batch and its micro-steps. Objectives see the usual interface."""

    def __init__(self, model: torch.nn.Module, allow: torch.Tensor, config: GPTConfig) -> None:
        self.model, self.allow, self.config = model, allow, config

    def __call__(self, idx: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model(idx, *args, attn_allow=self.allow, **kwargs)


def annealed(model: torch.nn.Module, config: GPTConfig, ratio: float, generator: torch.Generator) -> AnnealedModel:
    """``model`` with a fresh annealed mask at ``ratio`` (0 = causal, 1 = full), drawn from ``generator``."""
    return AnnealedModel(model, annealed_attention(config.block_size, ratio, generator, generator.device), config)


def load_train_config(args: list[str]) -> TrainConfig:
    """CLI args -> config. On resume the checkpoint's config is the base and explicit keys override it."""
    config_file, overrides = parse_overrides(args)
    values: dict[str, Any] = read_config_file(config_file) if config_file else {}
    values.update(overrides)
    cfg = build_config(TrainConfig, values)
    if cfg.init_from == "resume":
        ckpt_path = Path(cfg.out_dir) / "ckpt.pt"
        meta = load_checkpoint(ckpt_path)["meta"]
        # the architecture as the weights were built (model_args), then the rest of the saved config, then the flags
        shape = {k: v for k, v in meta.get("model_args", {}).items() if k in SHAPE_KEYS}
        merged = {**meta.get("config", {}), **shape, **values}
        cfg = build_config(TrainConfig, merged)
    return cfg


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says; the master process holds a lock on out_dir for the whole run (see rundir.py)."""
    master = int(os.environ.get("RANK", 0)) == 0
    run_dir = open_run_dir(cfg.out_dir, cfg.init_from, cfg.overwrite) if master else None
    try:
        return _train(cfg)
    except BaseException:
        if run_dir is not None:  # failed before writing anything: leave no empty out_dir behind
            run_dir.discard_if_empty()
        raise
    finally:
        if run_dir is not None:
            run_dir.close()


def _train(cfg: TrainConfig) -> dict[str, Any]:
    # ------------------------------------------------------------------ setup
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info = init_distributed(cfg.device, cfg.backend)
    device, master, rank, world = dist_info.device, dist_info.master, dist_info.rank, dist_info.world_size
    device_type = device.split(":")[0]
    if cfg.gradient_accumulation_steps % world:
        raise UserError(f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be divisible by "
                        f"the number of processes ({world})")
    grad_accum = cfg.gradient_accumulation_steps // world
    tokens_per_iter = grad_accum * world * cfg.batch_size * cfg.block_size
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir = Path(cfg.out_dir)  # made, checked writable and locked by train()

    # ------------------------------------------------------------------ data
    data_meta = load_meta(cfg.data_dir, cfg.dataset)
    splits = {s: open_split(cfg.data_dir, cfg.dataset, s) for s in ("train", "val")}
    for split, data in splits.items():
        if len(data) < cfg.block_size + 1:
            raise UserError(f"{split} split of '{cfg.dataset}' has {len(data)} tokens, fewer than block_size+1 = "
                            f"{cfg.block_size + 1}: lower --block_size or use more text")

    # ------------------------------------------------------------------ model
    ckpt = load_checkpoint(out_dir / "ckpt.pt", device, resume=True) if cfg.init_from == "resume" else None
    init_state, init_note = None, ""
    if ckpt is not None and not cfg.eval_only and ckpt["meta"]["iter_num"] >= cfg.max_iters:
        return nothing_to_resume(cfg, ckpt["meta"]["iter_num"], master)
    if ckpt is not None:
        # the checkpoint's architecture wins, its dropouts excepted
        model_args = check_resume(cfg, ckpt["meta"]["model_args"], ckpt["meta"], data_meta, out_dir)
    elif cfg.init_from != "scratch":  # trained weights: fine-tune, or adapt AR -> diffusion (adapt.py)
        model_args, init_state, init_note = init_from_source(cfg, int(data_meta["vocab_size"]))
        # the source's architecture wins: the saved config says what was built, so a resume agrees with it
        cfg = dataclasses.replace(cfg, **{k: model_args[k] for k in SHAPE_KEYS if k in model_args})
    else:
        model_args = GPTConfig.for_data(cfg, int(data_meta["vocab_size"])).to_dict()
    # the seed fixes the initial weights too (the same on every rank), so two runs with one config agree
    torch.manual_seed(step_seed(cfg.seed, 0, -1, "init"))
    model = build_model(model_args, ckpt["model"] if ckpt is not None else init_state,
                        out_dir / "ckpt.pt" if ckpt is not None else cfg.init_from, cfg.batch_size)
    model.to(device)
    mask_token_id = model.config.mask_token_id

    # ------------------------------------------------------------------ optimizer
    stepper = Stepper(cfg, model, device, make_loss_fn(cfg, model.config.mask_token_id))  # bench times it too
    ptdtype, autocast, scaler, optimizer = stepper.ptdtype, stepper.autocast, stepper.scaler, stepper.optimizer
    iter_num, best_val_loss = 0, float("inf")
    if ckpt is not None:
        load_optimizer(ckpt, optimizer, scaler, out_dir / "ckpt.pt", master)
        iter_num, best_val_loss = ckpt["meta"]["iter_num"], ckpt["meta"]["best_val_loss"]
    ckpt = None  # free memory
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if dist_info.ddp:
        model = DDP(model, device_ids=[dist_info.local_rank] if device_type == "cuda" else None)
    loss_fn = stepper.loss_fn

    def new_generator(step: int, stream: str, on_device: bool = False) -> torch.Generator:
        gen = torch.Generator(device=device if on_device else "cpu")
        return gen.manual_seed(step_seed(cfg.seed, rank, step, stream))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        # fixed generators: every eval sees the same batches and noise, so curves are comparable
        raw_model.eval()
        out: dict[str, float] = {}
        for split, data in splits.items():
            batch_gen, noise_gen = new_generator(-1, f"eval-{split}"), new_generator(-1, f"noise-{split}", True)
            losses = torch.zeros(cfg.eval_iters)
            for k in range(cfg.eval_iters):
                x, y = get_batch(data, cfg.batch_size, cfg.block_size, batch_gen, device)
                with autocast:
                    losses[k] = loss_fn(raw_model, x, y, noise_gen).item()
            out[f"{split}_loss"] = losses.mean().item()
        if cfg.model_type == "diffusion":
            batch_gen, noise_gen = new_generator(-1, "diag"), new_generator(-1, "diag-noise", True)
            rows = []
            for _ in range(max(1, cfg.eval_iters // 4)):
                x, _ = get_batch(splits["val"], cfg.batch_size, cfg.block_size, batch_gen, device)
                with autocast:
                    rows.append(diagnostics(raw_model, x, mask_token_id, noise_gen))
            out.update({k: sum(r[k] for r in rows) / len(rows) for k in rows[0]})
        raw_model.train()
        return out

    def checkpoint_dict() -> dict[str, Any]:
        return {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "meta": {
                "model_args": model_args, "config": config_to_dict(cfg), "iter_num": iter_num,
                "best_val_loss": best_val_loss, "dataset_meta": {k: v for k, v in data_meta.items() if k != "itos"},
                "itos": data_meta.get("itos"), "tokenizer": data_meta.get("tokenizer"),
                "rng": "step-keyed: (seed, rank, iter) seeds every batch, corruption and dropout draw",
            },
        }

    # ------------------------------------------------------------------ logging
    metrics_path = out_dir / "metrics.jsonl"

    def log_row(row: dict[str, Any]) -> None:
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    if master and cfg.init_from != "resume" and metrics_path.exists():
        metrics_path.unlink()  # a fresh run starts a fresh log
    if master and cfg.init_from == "resume":
        truncate_metrics(metrics_path, iter_num)  # rows past the checkpoint are logged again: no duplicates
    wandb_run = None
    if cfg.wandb_log and master:
        try:
            import wandb
        except ImportError:
            raise UserError("wandb_log=True needs wandb: pip install 'nanodlm[wandb]'") from None
        wandb_run = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=config_to_dict(cfg))
    from tqdm.auto import tqdm

    # a bar only on a terminal; into a file or pipe it would write a carriage-return update many times a second
    live_bar = master and cfg.progress and sys.stderr.isatty()
    plain_progress = master and cfg.progress and not live_bar  # instead: an "iter N" line at most every 10 s
    bar = tqdm(total=cfg.max_iters, initial=iter_num, disable=not live_bar, dynamic_ncols=True,
               desc=f"{model_args['model_type']}")
    say = (lambda text: bar.write(text) if live_bar else print(text, flush=True)) if master else (lambda *_: None)
    last_progress = time.perf_counter()
    n_params = raw_model.get_num_params()
    say(f"{model_args['model_type']} model: {n_params / 1e6:.2f}M params, {tokens_per_iter:,} tokens/iter, "
        f"device {device}, {ptdtype}, {world} process(es)")
    if init_note:
        say(init_note)

    # Ctrl-C or SIGTERM (what schedulers send before a kill): finish the current step, save, exit; a second
    # signal aborts at once
    stop = {"requested": False, "signal": ""}
    previous_handlers: dict[int, Any] = {}

    def on_signal(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"], stop["signal"] = True, signal.Signals(signum).name

    with contextlib.suppress(ValueError):  # not in the main thread: no handler
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[signum] = signal.signal(signum, on_signal)

    def save(name: str, state: dict[str, Any]) -> None:
        try:
            save_checkpoint(out_dir / name, state)
        except OSError as e:  # full disk, out_dir removed or made read-only mid-run: the old file is intact
            raise UserError(f"could not write {out_dir / name} ({e.strerror or type(e).__name__}); the previous "
                            f"checkpoint there is intact: free space or fix permissions, then --init_from=resume"
                            ) from None

    saved_iter = iter_num if cfg.init_from == "resume" else None  # the iteration ckpt.pt holds, None: none saved

    def no_save_note() -> str:
        if saved_iter is None:
            return "no checkpoint was saved by this run"
        return f"{out_dir / 'ckpt.pt'} keeps the model of iter {saved_iter}"

    # ------------------------------------------------------------------ loop
    summary: dict[str, Any] = {"interrupted": False}
    step_times: list[float] = []
    last_eval: dict[str, float] = {}
    lossf = float("nan")
    try:
        while True:
            last_step = iter_num >= cfg.max_iters
            if master and (iter_num % cfg.eval_interval == 0 or last_step):
                last_eval = evaluate()
                val_loss = last_eval["val_loss"]
                if is_diverged(val_loss, best_val_loss):
                    raise TrainingDiverged(f"val loss is {val_loss:.4g} at iter {iter_num} (best {best_val_loss:.4g}): "
                                           f"diverged, stopped without saving; {no_save_note()}. Lower learning_rate")
                extra = "".join(f" {k} {v:.4f}" for k, v in last_eval.items() if k not in ("train_loss", "val_loss"))
                say(f"iter {iter_num}: train loss {last_eval['train_loss']:.4f}, val loss {val_loss:.4f}{extra}")
                log_row({"kind": "eval", "iter": iter_num, **last_eval})
                if wandb_run is not None:
                    wandb_run.log({"iter": iter_num, **last_eval, "lr": lr_at(iter_num, cfg)})
                improved = val_loss < best_val_loss
                best_val_loss = min(best_val_loss, val_loss)
                if iter_num > 0 and (improved or cfg.always_save_checkpoint or last_step):
                    state = checkpoint_dict()
                    save("ckpt.pt", state)
                    saved_iter = iter_num
                    if improved:
                        save("best.pt", state)
                if cfg.plot:
                    plot_loss_curves(metrics_path, out_dir / "loss.png", f"{cfg.dataset} · {model_args['model_type']}")
            if last_step or cfg.eval_only:
                break
            if dist_info.ddp and iter_num % cfg.log_interval == 0:  # all ranks agree on the stop step (one sync)
                flag = torch.tensor([float(stop["requested"])], device=device)
                dist.all_reduce(flag)
                stop["requested"] = flag.item() > 0
            if stop["requested"]:
                if master:
                    save("ckpt.pt", checkpoint_dict())
                    say(f"interrupted at iter {iter_num} ({stop['signal'] or 'stop requested'}): checkpoint saved to "
                        f"{out_dir / 'ckpt.pt'}; continue with: nanodlm train --init_from=resume --out_dir={out_dir}")
                summary.update(interrupted=True, signal=stop["signal"])
                break

            t0 = time.perf_counter()
            lr = lr_at(iter_num, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(cfg.seed, rank, iter_num, "dropout"))
            batch_gen = new_generator(iter_num, "batch")
            noise_gen = new_generator(iter_num, "noise", on_device=True)
            step_model = model
            if iter_num < cfg.attn_anneal_iters:  # AR -> diffusion: attention opens up gradually (DiffuLLaMA)
                step_model = annealed(model, raw_model.config, anneal_ratio(iter_num, cfg.attn_anneal_iters),
                                      new_generator(iter_num, "anneal", on_device=True))
            batches = (get_batch(splits["train"], cfg.batch_size, cfg.block_size, batch_gen, device)
                       for _ in range(grad_accum))
            loss = stepper.step(model, batches, grad_accum, noise_gen, dist_info.ddp, step_model)
            if iter_num % cfg.log_interval == 0:  # .item() syncs the GPU: only at log steps, as nanoGPT
                lossf = loss.item() * grad_accum
                if not math.isfinite(lossf):
                    raise TrainingDiverged(f"loss is {lossf} at iter {iter_num}: stopped without saving; "
                                           f"{no_save_note()}. Lower learning_rate or set grad_clip")
            dt = time.perf_counter() - t0
            step_times.append(dt)
            bar.update(1)
            if iter_num % cfg.log_interval == 0:
                bar.set_postfix(loss=f"{lossf:.4f}", tok_s=f"{tokens_per_iter / dt:,.0f}", refresh=False)
                log_row({"kind": "step", "iter": iter_num, "loss": lossf, "lr": lr, "ms": dt * 1000})
                if plain_progress and time.perf_counter() - last_progress >= 10.0:
                    last_progress = time.perf_counter()
                    say(f"iter {iter_num}/{cfg.max_iters}: loss {lossf:.4f}, {dt * 1000:.1f} ms/iter")
            iter_num += 1
        if dist_info.ddp:
            dist.barrier()  # rank 0 may still be evaluating or saving: leave the process group together
    finally:
        bar.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        if wandb_run is not None:
            wandb_run.finish()
        destroy_distributed()

    timed = step_times[5:] or step_times  # the first steps include warm-up costs
    ms = 1000 * sum(timed) / len(timed) if timed else float("nan")
    summary.update(iter_num=iter_num, best_val_loss=best_val_loss, last_loss=lossf, ms_per_iter=ms,
                   tokens_per_s=tokens_per_iter / (ms / 1000) if timed else float("nan"), **last_eval)
    if master and timed:
        mfu = raw_model.estimate_mfu(cfg.batch_size * grad_accum, ms / 1000) if device_type == "cuda" else None
        say(f"done: {iter_num} iters, {ms:.1f} ms/iter, {summary['tokens_per_s']:,.0f} tokens/s"
            + (f", MFU {mfu * 100:.1f}%" if mfu is not None else ""))
    if master:
        wrote = [str(out_dir / n) for n in ("ckpt.pt", "best.pt", "loss.png", "metrics.jsonl")
                 if (out_dir / n).exists()]
        say("wrote " + ", ".join(wrote) if wrote else f"nothing saved in {out_dir} (max_iters={cfg.max_iters})")
    return summary
