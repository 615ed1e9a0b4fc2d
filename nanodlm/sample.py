"""``nanodlm sample``: generate text from a checkpoint with the generator its ``model_type`` needs."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_model
from .distributed import resolve_device
from .errors import UserError


@dataclass
class SampleConfig:
    out_dir: str = "out"
    ckpt: str = "best"  # best | last
    start: str | None = None  # prompt text or FILE:path (gpt2 default "\n"; diffusion: no prefix)
    num_samples: int = 3
    max_new_tokens: int = 500  # gpt2
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 1337
    device: str = "auto"
    use_kv_cache: bool = True  # gpt2 and block diffusion
    # diffusion
    sampler: str = "remask"  # remask (default, see BENCHMARKS.md) | confidence | ancestral | seed (the spec's own)
    steps: int = 64
    max_steps: int | None = None  # the specification's name for steps (seed sampler)
    length: int | None = None  # tokens per sample, prefix and suffix included (default block_size)
    suffix: str | None = None  # fixed end of the text
    infill: str | None = None  # a template: each `placeholder` character is one position to fill
    placeholder: str = "_"
    schedule: str = "cosine"  # confidence / remask reveal schedule: linear | cosine
    noise: float = 1.0  # confidence / remask: Gumbel noise on the reveal order (0 = greedy by confidence)
    order: str = "sampled"  # confidence / remask reveal order: sampled (MaskGIT) | entropy | margin
    noise_decay: float = 1.0  # step i of n uses noise * (1 - i/n) ** noise_decay (1 = MaskGIT's linear annealing)
    prior_weight: float = 0.7  # confidence / remask, order sampled: rank by log p(x|ctx) - w log p(x|start)
    remask_frac: float = 0.2  # remask: most of the revealed tokens re-masked per step (shrinks to 0)
    threshold: float = 0.5  # remask: re-mask only tokens with P([MASK] | x) above this
    new_block: int | None = None  # semi-autoregressive block for length > block_size (default block_size // 2)
    show: bool = False  # live view of the canvas (needs a terminal)
    verbose: bool = False  # per-step commit counts and steps used, on stderr
    output: str | None = None  # also write the samples here, one JSON string per line

    def __post_init__(self) -> None:
        if self.max_steps is not None:
            self.steps = self.max_steps
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1; got {self.steps}")
        if self.num_samples < 1:
            raise UserError(f"--num_samples must be >= 1; got {self.num_samples}")
        if self.max_new_tokens < 1:
            raise UserError(f"--max_new_tokens must be >= 1; got {self.max_new_tokens}")
        if len(self.placeholder) != 1:
            raise UserError("--placeholder must be a single character")


# confidence / remask options: their defaults live in SampleConfig; judge and bench take the same keys
SAMPLER_OPTIONS = ("schedule", "noise", "noise_decay", "order", "prior_weight", "remask_frac", "threshold")


def sampler_options(cfg: Any) -> dict[str, Any]:
    """The SAMPLER_OPTIONS that ``cfg`` has, by name: the ``sample_opts`` of ``judge.generate_texts``."""
    return {key: getattr(cfg, key) for key in SAMPLER_OPTIONS if hasattr(cfg, key)}


def _read_text(value: str) -> str:
    if value.startswith("FILE:"):
        path = Path(value[5:])
        if not path.exists():
            raise UserError(f"prompt file {path} not found")
        return path.read_text(encoding="utf-8")
    return value


def build_canvas(tok, cfg: SampleConfig, block_size: int, mask_id: int) -> tuple[list[int], list[int], int]:
    """(prefix ids, suffix ids, total length) or, for --infill, the whole template as (canvas, [], len)."""
    if cfg.infill is not None:
        template = _read_text(cfg.infill)
        ids: list[int] = []
        for i, part in enumerate(template.split(cfg.placeholder)):
            if i:
                ids.append(mask_id)  # a placeholder run of N characters is N positions (N tokens for BPE)
            if part:
                ids.extend(tok.encode(part))
        if len(ids) > block_size:
            raise UserError(f"--infill template is {len(ids)} tokens; it must fit in block_size {block_size}")
        return ids, [], len(ids)
    prefix = tok.encode(_read_text(cfg.start)) if cfg.start else []
    suffix = tok.encode(_read_text(cfg.suffix)) if cfg.suffix else []
    length = cfg.length or block_size
    if length < len(prefix) + len(suffix) + 1:
        raise UserError(f"--length {length} leaves no room after {len(prefix)} prefix and {len(suffix)} suffix "
                        f"tokens: raise --length")
    if length > block_size and suffix:
        raise UserError(f"--length {length} with --suffix does not fit in block_size {block_size}: "
                        f"lower --length to {block_size} or drop --suffix")
    return prefix, suffix, length


def generate_diffusion(model, tok, cfg: SampleConfig, generator: torch.Generator, device: str,
                       on_step=None) -> tuple[torch.Tensor, dict[str, Any]]:
    from .blockwise import generate_blocks, generate_long
    from .samplers import get_sampler

    mcfg = model.config
    mask_id = mcfg.mask_token_id
    try:
        sampler = get_sampler(cfg.sampler)
    except ValueError as e:
        raise UserError(str(e)) from None
    opts: dict[str, Any] = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    if cfg.sampler in ("confidence", "remask"):
        opts.update(schedule=cfg.schedule, noise=cfg.noise, order=cfg.order, noise_decay=cfg.noise_decay,
                    prior_weight=cfg.prior_weight)
    if cfg.sampler == "remask":
        opts.update(remask_frac=cfg.remask_frac, threshold=cfg.threshold)
    if mcfg.diffusion_block:  # block diffusion: every window is denoised block by block, left to right
        sampler = functools.partial(generate_blocks, block=mcfg.diffusion_block, sampler=sampler,
                                    use_cache=cfg.use_kv_cache)
    prefix, suffix, length = build_canvas(tok, cfg, mcfg.block_size, mask_id)
    B = cfg.num_samples
    if length > mcfg.block_size:
        prefix_t = torch.tensor([prefix] * B, dtype=torch.long, device=device).view(B, len(prefix))
        return generate_long(model, prefix_t, length, mcfg.block_size, sampler, mask_token_id=mask_id,
                             steps=cfg.steps, generator=generator, new_block=cfg.new_block, on_step=on_step, **opts)
    row = prefix + [mask_id] * (length - len(prefix) - len(suffix)) + suffix
    canvas = torch.tensor([row] * B, dtype=torch.long, device=device)
    return sampler(model, canvas, mask_token_id=mask_id, steps=cfg.steps, generator=generator, on_step=on_step, **opts)


def sample(cfg: SampleConfig) -> list[str]:
    device = resolve_device(cfg.device)
    model, meta, tok = load_model(cfg.out_dir, cfg.ckpt, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    model_type = model.config.model_type
    info: dict[str, Any] = {}
    if model_type == "gpt2":
        from .ar_sampling import generate_ar

        start = _read_text(cfg.start) if cfg.start is not None else "\n"
        ids = tok.encode(start) or [0]
        idx = torch.tensor([ids] * cfg.num_samples, dtype=torch.long, device=device)
        out = generate_ar(model, idx, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                          top_p=cfg.top_p, generator=generator, use_cache=cfg.use_kv_cache)
    else:
        view = None
        if cfg.show and sys.stdout.isatty():
            from .live import LiveView

            view = LiveView(lambda i: tok.decode([i]), mask_token_id=model.config.mask_token_id)
        if view is not None:
            with view:
                out, info = generate_diffusion(model, tok, cfg, generator, device, on_step=view)
        else:
            out, info = generate_diffusion(model, tok, cfg, generator, device)
        if cfg.verbose:
            print(f"steps used: {info['steps_used']}, forward passes: {info['forward_passes']}, "
                  f"committed per step: {info['committed_per_step']}", file=sys.stderr)
    texts = [tok.decode(row.tolist()) for row in out]
    for text in texts:
        print(text)
        print("---------------")
    if cfg.output:
        import json

        Path(cfg.output).write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    return texts
