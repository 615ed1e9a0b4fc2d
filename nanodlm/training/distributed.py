"""torchrun wiring in one place: process group, device per rank, compute dtype."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.errors import UserError

BACKENDS = ("auto", "nccl", "gloo")  # auto: nccl on CUDA, gloo on CPU
DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: bf16 on capable CUDA, fp16 on older CUDA, fp32 elsewhere


@dataclass
class DistInfo:
    ddp: bool
    rank: int
    local_rank: int
    world_size: int
    device: str

    @property
    def master(self) -> bool:
        return self.rank == 0


def resolve_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device={device} but CUDA is not available here: use --device=cpu (or auto)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device=mps but MPS is not available here: use --device=cpu (or auto)")
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """A ``DTYPES`` name -> the torch dtype training and sampling compute in on ``device``."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def init_distributed(device: str, backend: str = "auto") -> DistInfo:
    """Under torchrun (RANK set) join the process group; otherwise a single process."""
    if int(os.environ.get("RANK", -1)) == -1:
        return DistInfo(False, 0, 0, 1, resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device = resolve_device(device)
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(True, rank, local_rank, world_size, device)


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
