"""Generation beyond one sampler call on one window: block diffusion, and text longer than ``block_size``.

- ``generate_blocks``: a block diffusion model (``diffusion_block = b``, BD3-LM, Arriola et al. 2025) denoises
  its canvas one block of b positions at a time, left to right; each block is a call of an ordinary sampler
  (``samplers.py``) with everything before it fixed. Its attention is block-causal, so positions after the
  block are left out of the call: they cannot affect it (a ``--suffix`` stays fixed but is not attended to).
- ``generate_long``: semi-autoregressive windows for any diffusion model, so ``--length`` may exceed
  ``block_size``.
"""

from __future__ import annotations

from typing import Any

import torch

from .ar_sampling import Model, cache_dtype, inference_mode
from .samplers import OnStep, SamplerFn, get_sampler, new_info

__all__ = ["generate_blocks", "generate_long"]


def _pad_report(on_step: OnStep, head: torch.Tensor, tail: torch.Tensor, offset: int) -> OnStep:
    """An on_step for a sampler that sees only canvas[head | window | tail]: report the whole canvas."""
    def report(step: int, tokens: torch.Tensor, revealed: torch.Tensor, remasked: torch.Tensor) -> None:
        pad_h = torch.zeros_like(head, dtype=torch.bool)
        pad_t = torch.zeros_like(tail, dtype=torch.bool)
        on_step(offset + step, torch.cat((head, tokens, tail), 1), torch.cat((pad_h, revealed, pad_t), 1),
                torch.cat((pad_h, remasked, pad_t), 1))
    return report


def _add_info(info: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("committed_per_step", "remasked_per_step", "steps_used", "forward_passes"):
        info[key] += part[key]
    mine, theirs = info["passes_per_sample"], part.get("passes_per_sample") or []
    info["passes_per_sample"] = [a + b for a, b in zip(mine or [0] * len(theirs), theirs)]
    info["blocks"] += 1


class _PrefixCache(torch.nn.Module):
    """A block diffusion model whose finished blocks live in a KV cache: called on a canvas (B, end) whose
    blocks before ``start`` are final, it runs only canvas[:, start:end] against the cache and returns
    logits (B, end, V) that are zero before ``start`` (samplers never read logits at fixed positions)."""

    def __init__(self, model: Model, batch: int, device: torch.device) -> None:
        super().__init__()
        self.model, self.block = model, model.config.diffusion_block
        self.cache = model.new_kv_cache(batch, device, cache_dtype(model, device))

    def keep(self, tokens: torch.Tensor, start: int) -> int:
        """Cache the final blocks of tokens[:, cache.pos:start], one block per pass; returns the passes."""
        passes = 0
        for pos in range(self.cache.pos, start, self.block):
            self.model.decode(tokens[:, pos:pos + self.block], self.cache)
            passes += 1
        return passes

    def forward(self, canvas: torch.Tensor, **_: Any) -> tuple[torch.Tensor, None]:
        start = self.cache.pos
        logits = self.model.decode(canvas[:, start:], self.cache, keep=False)  # (B, end - start, V)
        return torch.cat((logits.new_zeros(canvas.size(0), start, logits.size(-1)), logits), dim=1), None


def generate_blocks(model: Model, canvas: torch.Tensor, *, block: int, sampler: str | SamplerFn,
                    mask_token_id: int, steps: int, generator: torch.Generator | None,
                    fixed: torch.Tensor | None = None, on_step: OnStep | None = None, use_cache: bool = True,
                    **sampler_opts: Any) -> tuple[torch.Tensor, dict]:
    """Block diffusion sampling: canvas (B, L) -> tokens (B, L), denoised block by block, left to right.

    Blocks are positions [k*block, (k+1)*block). Block k is one ``sampler`` call on canvas[:, :(k+1)*block]
    with every earlier position fixed. Blocks without an editable (non-fixed) position are skipped; the
    ``steps`` are shared among the others as evenly as possible, at least one each, so a canvas of N
    editable blocks takes max(steps, N) steps. Same signature and info as a sampler, plus ``blocks``.
    ``use_cache`` (models with ``new_kv_cache``): finished blocks go into a KV cache, so each denoising pass
    runs one block, not the whole prefix (BD3-LM); the logits agree with the uncached pass up to rounding.
    """
    fn = get_sampler(sampler) if isinstance(sampler, str) else sampler
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    tokens = canvas.clone()
    fixed = tokens != mask_token_id if fixed is None else fixed.to(device=tokens.device, dtype=torch.bool)
    L = tokens.size(1)
    todo = [k for k in range(-(-L // block)) if (~fixed[:, k * block:(k + 1) * block]).any()]
    info = new_info()
    info.update(blocks=0, cache_passes=0)  # cache_passes: one-block passes that store finished blocks
    cached = None
    if use_cache and hasattr(model, "new_kv_cache") and getattr(model.config, "diffusion_block", 0) == block:
        cached = _PrefixCache(model, tokens.size(0), tokens.device)
    for i, k in enumerate(todo):
        start, end = k * block, min((k + 1) * block, L)
        if cached is not None:
            with inference_mode(cached):
                info["cache_passes"] += cached.keep(tokens, start)
        block_steps = max(1, steps // len(todo) + int(i < steps % len(todo)))
        window_fixed = fixed[:, :end].clone()
        window_fixed[:, :start] = True  # earlier blocks are final (any mask there was filled in its own turn)
        report = None
        if on_step is not None:
            report = _pad_report(on_step, tokens[:, :0], tokens[:, end:], len(info["committed_per_step"]))
        out, part = fn(model if cached is None else cached, tokens[:, :end], mask_token_id=mask_token_id,
                       steps=block_steps, generator=generator, fixed=window_fixed, on_step=report, **sampler_opts)
        tokens[:, :end] = out
        _add_info(info, part)
    return tokens, info


def generate_long(model: Model, prefix_ids: torch.Tensor, length: int, block_size: int,
                  sampler: str | SamplerFn, *, mask_token_id: int, steps: int, generator: torch.Generator | None,
                  new_block: int | None = None, on_step: OnStep | None = None,
                  **sampler_opts: Any) -> tuple[torch.Tensor, dict]:
    """Generate a sequence of ``length`` tokens (prefix included) longer than the model's window, block by block.

    Semi-autoregressive diffusion (SSD-LM, Han et al. 2023; LLaDA semi-AR sampling, Nie et al. 2025): each
    window holds up to ``block_size - new_block`` tokens of the text so far, fixed, followed by masks that the
    diffusion ``sampler`` fills in ``steps`` steps; the first window fills all the room the prefix leaves.
    prefix_ids (B, P) -> tokens (B, length) with tokens[:, :P] == prefix_ids. ``sampler_opts`` (temperature,
    top_k, top_p, schedule, ...) go to the sampler. ``on_step`` sees the whole text so far, with steps
    numbered across blocks; info sums the per-block infos and adds ``blocks``.
    """
    fn = get_sampler(sampler) if isinstance(sampler, str) else sampler
    new_block = block_size // 2 if new_block is None else new_block
    if not 1 <= new_block <= block_size:
        raise ValueError(f"new_block must be in [1, block_size={block_size}], got {new_block}")
    if prefix_ids.dim() != 2 or prefix_ids.size(1) > length:
        raise ValueError(f"prefix_ids must be (B, P) with P <= length={length}, got {tuple(prefix_ids.shape)}")
    text = prefix_ids
    info = new_info()
    info["blocks"] = 0
    while text.size(1) < length:
        cur = text.size(1)
        ctx = min(cur, block_size - new_block)  # context tokens kept (fixed) in the window
        n_new = min(block_size - ctx, length - cur)
        head = text[:, : cur - ctx]  # (B, cur - ctx): text that no longer fits in the window
        holes = torch.full((text.size(0), n_new), mask_token_id, dtype=text.dtype, device=text.device)
        canvas = torch.cat((text[:, cur - ctx:], holes), dim=1)  # (B, ctx + n_new)
        fixed = torch.zeros_like(canvas, dtype=torch.bool)
        fixed[:, :ctx] = True
        report = None
        if on_step is not None:
            report = _pad_report(on_step, head, canvas[:, :0], len(info["committed_per_step"]))
        window, block_info = fn(model, canvas, mask_token_id=mask_token_id, steps=steps, generator=generator,
                                fixed=fixed, on_step=report, **sampler_opts)
        text = torch.cat((text, window[:, ctx:]), dim=1)
        _add_info(info, block_info)
    return text, info
