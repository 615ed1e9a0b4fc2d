"""One training step: what train() runs each iteration and ``bench train`` times."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .config import TrainConfig
from .distributed import resolve_dtype

# (model, x (B, T), y (B, T), noise generator) -> scalar loss
LossFn = Callable[[Any, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


class Stepper:
    """The training step, for train() and for ``bench train`` (which times this, not a copy): the autocast
    context, grad scaler, optimizer and loss (``train.make_loss_fn``) of one model, and ``step`` = forward and
    backward of each micro-batch, unscale, clip, optimizer step. The learning rate is the caller's."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, device: str, loss_fn: LossFn) -> None:
        device_type = device.split(":")[0]
        self.ptdtype = resolve_dtype(cfg.dtype, device)
        self.autocast = (torch.autocast(device_type=device_type, dtype=self.ptdtype)
                         if self.ptdtype != torch.float32 else contextlib.nullcontext())
        self.scaler = torch.amp.GradScaler(device_type, enabled=self.ptdtype == torch.float16)
        self.optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                                    device_type)
        self.loss_fn = loss_fn
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
