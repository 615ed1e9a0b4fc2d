"""One training step: what train() runs each iteration and ``bench train`` times, with what it draws on: the
step-keyed seeds, the learning rate schedule, the loss function and the annealed attention mask."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..core.errors import UserError
from ..diffusion.diffusion import DiffusionOptions, get_objective, mask_inputs
from ..diffusion.fim import fim_ids, fim_transform
from ..diffusion.tidar import tidar_loss
from ..model.attention import annealed_attention
from ..model.model import GPTConfig
from .config import TrainConfig
from .distributed import resolve_dtype

# (model, x (B, T), y (B, T), noise generator) -> scalar loss
LossFn = Callable[[Any, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


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


def plain_eval_config(cfg: TrainConfig) -> TrainConfig:
    """The config whose loss evals report: a gpt2 model's plain next-token loss (no input masking, no FIM layout:
    the model, not its training regularizer); any other model's own objective."""
    if cfg.model_type != "gpt2" or cfg.objective == "tidar":
        return cfg
    return dataclasses.replace(cfg, input_mask_rate=0.0, objective="repair", fim_rate=None, fim_spm_rate=None)


# the TrainConfig keys make_loss_fn reads: a val loss measured under other values is another quantity
LOSS_KEYS = ("model_type", "objective", "tidar_alpha", "penalty_keep_mask", "penalty_mask_correct", "mdlm_eps",
             "mdlm_t_max", "repair_rate_max", "copy_weight", "input_mask_rate", "fim_rate", "fim_spm_rate")


def comparable_best(cfg: TrainConfig, saved_config: dict[str, Any], best_val_loss: float) -> tuple[float, str | None]:
    """A resumed run's best val loss, kept only while the eval loss (``plain_eval_config``) is the one it was
    measured with: (best, None), or (inf, a warning naming the keys) when a LOSS_KEYS value that the eval reads
    changed (best.pt and the divergence check restart)."""
    saved = {k: saved_config[k] for k in LOSS_KEYS if k in saved_config}
    now = plain_eval_config(cfg)
    try:
        was = plain_eval_config(dataclasses.replace(cfg, **saved))
    except (UserError, TypeError):  # a combination today's checks refuse: the loss is not the same one
        was = None
    changed = [f"--{k}={getattr(cfg, k)} (was {saved[k]})" for k in saved
               if (getattr(was, k) != getattr(now, k) if was is not None else saved[k] != getattr(cfg, k))]
    if not changed:
        return best_val_loss, None
    return float("inf"), (f"{', '.join(changed)}: the val loss now measures something else, so the best val loss "
                          f"({best_val_loss:.4g}) restarts and best.pt is replaced at the next eval")


def make_loss_fn(cfg: TrainConfig, mask_token_id: int | None, text_vocab: int | None = None):
    """(model, x, y, generator) -> scalar loss, picked once by model_type and objective. ``text_vocab``: the data's
    ids (a FIM model's sentinels come after them)."""
    if cfg.objective == "tidar":  # a gpt2 model with a draft stream (tidar.py)
        return lambda model, x, y, gen: tidar_loss(model, x, y, cfg.tidar_alpha)
    if cfg.objective == "fim":  # the window (B, T+1) laid out prefix/suffix/middle, then next-token loss as AR
        ids, rate, spm = fim_ids(text_vocab), cfg.fim_rate, cfg.fim_spm_rate

        def fim_loss(model, x, y, gen):
            w = fim_transform(torch.cat((x, y[:, -1:]), dim=1), rate, spm, ids, gen)
            return model(w[:, :-1], w[:, 1:])[1]
        return fim_loss
    if cfg.model_type == "gpt2" and cfg.input_mask_rate > 0:  # the targets y stay clean: only inputs are masked
        rate = cfg.input_mask_rate
        return lambda model, x, y, gen: model(mask_inputs(x, rate, mask_token_id, gen), y)[1]
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


class Stepper:
    """The training step, for train() and for ``bench train`` (which times this, not a copy): the autocast
    context, grad scaler, optimizer and loss (``make_loss_fn``) of one model, and ``step`` = forward and
    backward of each micro-batch, unscale, clip, optimizer step. The learning rate is the caller's."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, device: str, loss_fn: LossFn,
                 eval_loss_fn: LossFn | None = None) -> None:
        device_type = device.split(":")[0]
        self.ptdtype = resolve_dtype(cfg.dtype, device)
        self.autocast = (torch.autocast(device_type=device_type, dtype=self.ptdtype)
                         if self.ptdtype != torch.float32 else contextlib.nullcontext())
        self.scaler = torch.amp.GradScaler(device_type, enabled=self.ptdtype == torch.float16)
        self.optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                                    device_type)
        self.loss_fn = loss_fn
        self.eval_loss_fn = eval_loss_fn or loss_fn  # what evals score (a regularizer's inputs left clean)
        self.grad_clip = cfg.grad_clip

    def step(self, model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n: int,
             noise_gen: torch.Generator, ddp: bool = False, step_model: Any = None) -> torch.Tensor:
        """One optimizer step over ``n`` micro-batches (x, y), each (B, T), drawn lazily from ``batches``.
        ``model`` is what runs forward (compiled / DDP-wrapped); ``step_model`` replaces it in the loss (attention
        annealing). Under DDP only the last micro-batch all-reduces gradients. Returns the last loss / n."""
        loss = torch.zeros(())
        for micro_step, (x, y) in enumerate(batches):
            sync = model.no_sync() if ddp and micro_step < n - 1 else contextlib.nullcontext()
            with sync:
                with self.autocast:
                    loss = self.loss_fn(model if step_model is None else step_model, x, y, noise_gen) / n
                self.scaler.scale(loss).backward()
        if self.grad_clip > 0.0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss
