"""Training: one linear function, init -> data -> model -> optimizer -> loop (eval, checkpoint, log, step).

All randomness during training (batch offsets, diffusion corruption, dropout) is drawn from
generators seeded by (seed, rank, iteration), so a resumed run replays exactly the batches and noise
an uninterrupted run would have seen: ``train 40`` == ``train 20 + resume 20``, bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..core.errors import UserError
from ..core.plotting import plot_loss_curves
from ..data.dataset import get_batch, load_meta, open_split
from ..diffusion.diagnostics import diagnostics
from ..model.model import GPTConfig
from ..runs.checkpoint import build_model, load_checkpoint, save_checkpoint
from ..runs.rundir import SHAPE_KEYS, check_resume, load_optimizer, nothing_to_resume, open_run_dir, truncate_metrics
from .adapt import init_from_source
from .config import TrainConfig, build_config, config_to_dict, parse_overrides, read_config_file
from .distributed import destroy_distributed, init_distributed
from .step import (
    Stepper,
    anneal_ratio,
    annealed,
    comparable_best,
    lr_at,
    make_loss_fn,
    plain_eval_config,
    step_seed,
)

# a val loss above DIVERGED_FACTOR x the best so far is a diverged model, even when finite (a loss of 4e11 was
# once saved): training stops and ckpt.pt keeps the last model that passed this test
DIVERGED_FACTOR = 10.0


class TrainingDiverged(UserError):
    pass


def is_diverged(val_loss: float, best_val_loss: float) -> bool:
    """The save rule: a model is saved only if its val loss is finite and at most DIVERGED_FACTOR x the best."""
    return not math.isfinite(val_loss) or (math.isfinite(best_val_loss) and val_loss > DIVERGED_FACTOR * best_val_loss)


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


# --- the parts of _train, top to bottom ------------------------------------------------------------------


def init_model(cfg: TrainConfig, ckpt: dict[str, Any] | None, data_meta: dict[str, Any], out_dir: Path
               ) -> tuple[TrainConfig, torch.nn.Module, dict[str, Any], str]:
    """The model to train (on the CPU): resumed from ``ckpt``, initialised from a trained source (fine-tune, or
    adapt AR -> diffusion, adapt.py), or from scratch. Returns (cfg, model, model_args, a note for the log)."""
    init_state, init_note, vocab_size = None, "", int(data_meta["vocab_size"])
    if ckpt is not None:
        # the checkpoint's architecture wins, its dropouts excepted
        model_args = check_resume(cfg, ckpt["meta"]["model_args"], ckpt["meta"], data_meta, out_dir)
    elif cfg.init_from != "scratch":
        model_args, init_state, init_note = init_from_source(cfg, vocab_size)
        # the source's architecture wins: the saved config says what was built, so a resume agrees with it
        cfg = dataclasses.replace(cfg, **{k: model_args[k] for k in SHAPE_KEYS if k in model_args})
    else:
        try:  # keys that need the vocabulary (prime_bits) are checked here
            model_args = GPTConfig.for_data(cfg, vocab_size, fim=cfg.objective == "fim",
                                            mask_row=cfg.input_mask_rate > 0).to_dict()
        except ValueError as e:
            raise UserError(f"{e} (dataset '{cfg.dataset}')") from None
    # the seed fixes the initial weights too (the same on every rank), so two runs with one config agree
    torch.manual_seed(step_seed(cfg.seed, 0, -1, "init"))
    model = build_model(model_args, ckpt["model"] if ckpt is not None else init_state,
                        out_dir / "ckpt.pt" if ckpt is not None else cfg.init_from, cfg.batch_size)
    return cfg, model, model_args, init_note


@torch.no_grad()
def estimate_losses(model: torch.nn.Module, splits: dict[str, Any], cfg: TrainConfig, stepper: Stepper,
                    new_generator: Callable[..., torch.Generator], device: str) -> dict[str, float]:
    """Mean loss over eval_iters batches of each split, and for diffusion the diagnostics on val. Fixed generators:
    every eval sees the same batches and noise, so curves are comparable."""
    model.eval()
    out: dict[str, float] = {}
    for split, data in splits.items():
        batch_gen, noise_gen = new_generator(-1, f"eval-{split}"), new_generator(-1, f"noise-{split}", True)
        losses = torch.zeros(cfg.eval_iters)
        for k in range(cfg.eval_iters):
            x, y = get_batch(data, cfg.batch_size, cfg.block_size, batch_gen, device)
            with stepper.autocast:
                losses[k] = stepper.eval_loss_fn(model, x, y, noise_gen).item()
        out[f"{split}_loss"] = losses.mean().item()
    if cfg.model_type == "diffusion":
        batch_gen, noise_gen = new_generator(-1, "diag"), new_generator(-1, "diag-noise", True)
        rows = []
        for _ in range(max(1, cfg.eval_iters // 4)):
            x, _ = get_batch(splits["val"], cfg.batch_size, cfg.block_size, batch_gen, device)
            with stepper.autocast:
                rows.append(diagnostics(model, x, model.config.mask_token_id, noise_gen))
        out.update({k: sum(r[k] for r in rows) / len(rows) for k in rows[0]})
    model.train()
    return out


def checkpoint_state(model: torch.nn.Module, stepper: Stepper, model_args: dict[str, Any], cfg: TrainConfig,
                     iter_num: int, best_val_loss: float, data_meta: dict[str, Any]) -> dict[str, Any]:
    """What ckpt.pt / best.pt hold: weights, optimizer and scaler state, and the JSON-able metadata."""
    return {
        "model": model.state_dict(),
        "optimizer": stepper.optimizer.state_dict(),
        "scaler": stepper.scaler.state_dict(),
        "meta": {
            "model_args": model_args, "config": config_to_dict(cfg), "iter_num": iter_num,
            "best_val_loss": best_val_loss, "dataset_meta": {k: v for k, v in data_meta.items() if k != "itos"},
            "itos": data_meta.get("itos"), "tokenizer": data_meta.get("tokenizer"),
            "rng": "step-keyed: (seed, rank, iter) seeds every batch, corruption and dropout draw",
        },
    }


class Saver:
    """Writes checkpoints into out_dir (one-line errors) and remembers which iteration ckpt.pt holds."""

    def __init__(self, out_dir: Path, saved_iter: int | None) -> None:
        self.out_dir, self.saved_iter = out_dir, saved_iter  # saved_iter None: this run has saved nothing

    def save(self, name: str, state: dict[str, Any]) -> None:
        try:
            save_checkpoint(self.out_dir / name, state)
        except OSError as e:  # full disk, out_dir removed or made read-only mid-run: the old file is intact
            raise UserError(f"could not write {self.out_dir / name} ({e.strerror or type(e).__name__}); the previous "
                            f"checkpoint there is intact: free space or fix permissions, then --init_from=resume"
                            ) from None

    def no_save_note(self) -> str:
        if self.saved_iter is None:
            return "no checkpoint was saved by this run"
        return f"{self.out_dir / 'ckpt.pt'} keeps the model of iter {self.saved_iter}"


class RunLog:
    """What the master process writes while training: metrics.jsonl rows, wandb, the progress bar and ``say``
    (other ranks write nothing)."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, master: bool, iter_num: int, model_type: str) -> None:
        self.master, self.path = master, out_dir / "metrics.jsonl"
        if master and cfg.init_from != "resume" and self.path.exists():
            self.path.unlink()  # a fresh run starts a fresh log
        if master and cfg.init_from == "resume":
            truncate_metrics(self.path, iter_num)  # rows past the checkpoint are logged again: no duplicates
        self.wandb = None
        if cfg.wandb_log and master:
            try:
                import wandb
            except ImportError:
                raise UserError("wandb_log=True needs wandb: pip install 'nanodlm[wandb]'") from None
            self.wandb = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=config_to_dict(cfg))
        from tqdm.auto import tqdm

        # a bar only on a terminal; into a file or pipe it would write a carriage-return update many times a second
        self.live_bar = master and cfg.progress and sys.stderr.isatty()
        self.plain_progress = master and cfg.progress and not self.live_bar  # an "iter N" line at most every 10 s
        self.bar = tqdm(total=cfg.max_iters, initial=iter_num, disable=not self.live_bar, dynamic_ncols=True,
                        desc=model_type)
        self.last_progress = time.perf_counter()

    def say(self, text: str) -> None:
        if self.master:
            self.bar.write(text) if self.live_bar else print(text, flush=True)

    def row(self, row: dict[str, Any]) -> None:
        if self.master:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


class StopSignals:
    """Ctrl-C or SIGTERM (what schedulers send before a kill) sets ``requested``: the loop finishes the current
    step, saves and exits. A second signal aborts at once. ``restore()`` puts the previous handlers back."""

    def __init__(self) -> None:
        self.requested, self.signal = False, ""
        self.previous: dict[int, Any] = {}
        with contextlib.suppress(ValueError):  # not in the main thread: no handler
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signal.Signals(signum).name

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _train(cfg: TrainConfig) -> dict[str, Any]:
    # --- setup: threads, processes, device ------------------------------------------------------------------
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

    # --- data -----------------------------------------------------------------------------------------------
    data_meta = load_meta(cfg.data_dir, cfg.dataset)
    splits = {s: open_split(cfg.data_dir, cfg.dataset, s) for s in ("train", "val")}
    for split, data in splits.items():
        if len(data) < cfg.block_size + 1:
            raise UserError(f"{split} split of '{cfg.dataset}' has {len(data)} tokens, fewer than block_size+1 = "
                            f"{cfg.block_size + 1}: lower --block_size or use more text")

    # --- model ----------------------------------------------------------------------------------------------
    ckpt = load_checkpoint(out_dir / "ckpt.pt", device, resume=True) if cfg.init_from == "resume" else None
    if ckpt is not None and not cfg.eval_only and ckpt["meta"]["iter_num"] >= cfg.max_iters:
        return nothing_to_resume(cfg, ckpt["meta"]["iter_num"], master)
    cfg, model, model_args, init_note = init_model(cfg, ckpt, data_meta, out_dir)
    model.to(device)

    # --- optimizer ------------------------------------------------------------------------------------------
    ids = model.config.mask_token_id, model.config.text_vocab_size
    loss_fn, eval_fn = make_loss_fn(cfg, *ids), make_loss_fn(plain_eval_config(cfg), *ids)
    stepper = Stepper(cfg, model, device, loss_fn, eval_fn)  # bench times it too
    optimizer = stepper.optimizer
    iter_num, best_val_loss = 0, float("inf")
    if ckpt is not None:
        load_optimizer(ckpt, optimizer, stepper.scaler, out_dir / "ckpt.pt", master)
        iter_num, best_val_loss = ckpt["meta"]["iter_num"], ckpt["meta"]["best_val_loss"]
        best_val_loss, note = comparable_best(cfg, ckpt["meta"].get("config") or {}, best_val_loss)
        if note and master:
            print(f"warning: {note}", file=sys.stderr)
    ckpt = None  # free memory
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if dist_info.ddp:
        model = DDP(model, device_ids=[dist_info.local_rank] if device_type == "cuda" else None)

    def new_generator(step: int, stream: str, on_device: bool = False) -> torch.Generator:
        gen = torch.Generator(device=device if on_device else "cpu")
        return gen.manual_seed(step_seed(cfg.seed, rank, step, stream))

    # --- logging and signals --------------------------------------------------------------------------------
    log = RunLog(cfg, out_dir, master, iter_num, model_args["model_type"])
    log.say(f"{model_args['model_type']} model: {raw_model.get_num_params() / 1e6:.2f}M params, "
            f"{tokens_per_iter:,} tokens/iter, device {device}, {stepper.ptdtype}, {world} process(es)")
    if init_note:
        log.say(init_note)
    stop = StopSignals()
    saver = Saver(out_dir, iter_num if cfg.init_from == "resume" else None)

    # --- loop: eval and checkpoint, stop, one step, log -----------------------------------------------------
    summary: dict[str, Any] = {"interrupted": False}
    step_times: list[float] = []
    last_eval: dict[str, float] = {}
    lossf = float("nan")
    try:
        while True:
            last_step = iter_num >= cfg.max_iters
            if master and (iter_num % cfg.eval_interval == 0 or last_step):
                last_eval = estimate_losses(raw_model, splits, cfg, stepper, new_generator, device)
                val_loss = last_eval["val_loss"]
                if is_diverged(val_loss, best_val_loss):
                    raise TrainingDiverged(f"val loss is {val_loss:.4g} at iter {iter_num} (best {best_val_loss:.4g}): "
                                           f"diverged, stopped without saving; {saver.no_save_note()}. "
                                           "Lower learning_rate")
                extra = "".join(f" {k} {v:.4f}" for k, v in last_eval.items() if k not in ("train_loss", "val_loss"))
                log.say(f"iter {iter_num}: train loss {last_eval['train_loss']:.4f}, val loss {val_loss:.4f}{extra}")
                log.row({"kind": "eval", "iter": iter_num, **last_eval})
                if log.wandb is not None:
                    log.wandb.log({"iter": iter_num, **last_eval, "lr": lr_at(iter_num, cfg)})
                improved = val_loss < best_val_loss
                best_val_loss = min(best_val_loss, val_loss)
                if iter_num > 0 and (improved or cfg.always_save_checkpoint or last_step):
                    state = checkpoint_state(raw_model, stepper, model_args, cfg, iter_num, best_val_loss, data_meta)
                    saver.save("ckpt.pt", state)
                    saver.saved_iter = iter_num
                    if improved:
                        saver.save("best.pt", state)
                if cfg.plot:
                    plot_loss_curves(log.path, out_dir / "loss.png", f"{cfg.dataset} · {model_args['model_type']}")
            if last_step or cfg.eval_only:
                break
            if dist_info.ddp and iter_num % cfg.log_interval == 0:  # all ranks agree on the stop step (one sync)
                flag = torch.tensor([float(stop.requested)], device=device)
                dist.all_reduce(flag)
                stop.requested = flag.item() > 0
            if stop.requested:
                if master:
                    saver.save("ckpt.pt", checkpoint_state(raw_model, stepper, model_args, cfg, iter_num,
                                                           best_val_loss, data_meta))
                    log.say(f"interrupted at iter {iter_num} ({stop.signal or 'stop requested'}): checkpoint saved "
                            f"to {out_dir / 'ckpt.pt'}; continue with: nanodlm train --init_from=resume "
                            f"--out_dir={out_dir}")
                summary.update(interrupted=True, signal=stop.signal)
                break

            # one step: lr, seeds, (annealed) model, grad_accum micro-batches
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
                                           f"{saver.no_save_note()}. Lower learning_rate or set grad_clip")
            dt = time.perf_counter() - t0
            step_times.append(dt)

            # log
            log.bar.update(1)
            if iter_num % cfg.log_interval == 0:
                log.bar.set_postfix(loss=f"{lossf:.4f}", tok_s=f"{tokens_per_iter / dt:,.0f}", refresh=False)
                log.row({"kind": "step", "iter": iter_num, "loss": lossf, "lr": lr, "ms": dt * 1000})
                if log.plain_progress and time.perf_counter() - log.last_progress >= 10.0:
                    log.last_progress = time.perf_counter()
                    log.say(f"iter {iter_num}/{cfg.max_iters}: loss {lossf:.4f}, {dt * 1000:.1f} ms/iter")
            iter_num += 1
        if dist_info.ddp:
            dist.barrier()  # rank 0 may still be evaluating or saving: leave the process group together
    finally:
        log.close()
        stop.restore()
        destroy_distributed()

    # --- summary --------------------------------------------------------------------------------------------
    timed = step_times[5:] or step_times  # the first steps include warm-up costs
    ms = 1000 * sum(timed) / len(timed) if timed else float("nan")
    summary.update(iter_num=iter_num, best_val_loss=best_val_loss, last_loss=lossf, ms_per_iter=ms,
                   tokens_per_s=tokens_per_iter / (ms / 1000) if timed else float("nan"), **last_eval)
    if master and timed:
        mfu = raw_model.estimate_mfu(cfg.batch_size * grad_accum, ms / 1000) if device_type == "cuda" else None
        log.say(f"done: {iter_num} iters, {ms:.1f} ms/iter, {summary['tokens_per_s']:,.0f} tokens/s"
                + (f", MFU {mfu * 100:.1f}%" if mfu is not None else ""))
    if master:
        wrote = [str(out_dir / n) for n in ("ckpt.pt", "best.pt", "loss.png", "metrics.jsonl")
                 if (out_dir / n).exists()]
        log.say("wrote " + ", ".join(wrote) if wrote else f"nothing saved in {out_dir} (max_iters={cfg.max_iters})")
    return summary
