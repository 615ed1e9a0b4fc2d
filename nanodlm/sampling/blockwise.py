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

from ..model.attention import KVCache
from .ar_sampling import Model, cache_dtype
from .samplers import APPROX_CACHES, OnStep, SamplerFn, SamplerOptions, get_sampler, new_info

__all__ = ["APPROX_CACHES", "generate_blocks", "generate_long"]


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
    """A block diffusion model whose finished blocks live in an exact KV cache. Called on a canvas (B, end) whose
    blocks before ``start`` (``begin``) are final, it runs canvas[:, cache.pos:end] against the cache: the first
    pass of a block also keeps the finished blocks not cached yet (block-causal, so their keys are exactly those
    of a pass of their own), later passes run the draft block alone. Logits (B, end, V) are zero before the
    positions run (samplers never read logits at fixed positions)."""

    def __init__(self, model: Model, batch: int, device: torch.device) -> None:
        super().__init__()
        self.model, self.start = model, 0
        self.cache = model.new_kv_cache(batch, device, cache_dtype(model, device))

    def begin(self, start: int) -> None:
        self.start = start

    def forward(self, canvas: torch.Tensor, **_: Any) -> tuple[torch.Tensor, None]:
        done = self.cache.pos
        logits = self.model.decode(canvas[:, done:], self.cache, keep=self.start - done)  # (B, end - done, V)
        return torch.cat((logits.new_zeros(canvas.size(0), done, logits.size(-1)), logits), dim=1), None


class _SpanCache(KVCache):
    """A KV cache that also returns the positions after the span being written, up to ``span``: Fast-dLLM's
    dual cache, where a block attends to the kept prefix, itself, and the suffix as the last refresh saw it."""

    span = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = max(super().update(layer, k, v)[0].size(2), self.span)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class _Bidirectional(torch.nn.Module):
    """A bidirectional model decoding canvas[:, :end] of a longer canvas (semi-autoregressive, LLaDA): every call
    sees the whole canvas, the positions after the block (``tail``, still masked) appended.

    ``approx_cache`` (Fast-dLLM, Wu et al. 2025), approximate by design: the first pass of each block runs the
    whole canvas and keeps every position's keys and values (exact logits); later passes in the block run
    canvas[:, start:] against the cached prefix (``prefix``), or only the block against the cached prefix and
    tail (``dual``). The cached keys were computed before the block's latest reveals; logits are zero before
    ``start`` (samplers never read logits at fixed positions).
    """

    def __init__(self, model: Model, approx_cache: str, batch: int, device: torch.device) -> None:
        super().__init__()
        if approx_cache not in APPROX_CACHES:
            raise ValueError(f"approx_cache must be one of {APPROX_CACHES}, got {approx_cache!r}")
        self.model, self.mode, self.tail, self.start, self.fresh = model, approx_cache, None, 0, True
        c = model.config
        self.cache = None if approx_cache == "none" else _SpanCache(
            c.n_layer, batch, c.n_head, c.block_size, c.n_embd // c.n_head, device, cache_dtype(model, device))

    def begin(self, start: int, tail: torch.Tensor) -> None:
        self.start, self.tail, self.fresh = start, tail, True

    def forward(self, window: torch.Tensor, **_: Any) -> tuple[torch.Tensor, None]:
        end, full = window.size(1), torch.cat((window, self.tail), dim=1)  # (B, L)
        if self.cache is None:
            return self.model(full)[0][:, :end], None
        if self.fresh:  # refresh: every position's keys and values from the current canvas
            self.cache.reset()
            self.cache.span = 0
            logits = self.model.decode(full, self.cache, keep=False)  # (B, L, V)
            self.cache.advance(self.start)
            self.cache.span, self.fresh = (full.size(1) if self.mode == "dual" else 0), False
            return logits[:, :end], None
        run = window[:, self.start:] if self.mode == "dual" else full[:, self.start:]
        logits = self.model.decode(run, self.cache, keep=False)[:, :end - self.start]
        return torch.cat((logits.new_zeros(window.size(0), self.start, logits.size(-1)), logits), dim=1), None


def generate_blocks(model: Model, canvas: torch.Tensor, *, block: int, sampler: str | SamplerFn,
                    mask_token_id: int, steps: int, generator: torch.Generator | None,
                    fixed: torch.Tensor | None = None, on_step: OnStep | None = None,
                    use_cache: bool = SamplerOptions.use_kv_cache, approx_cache: str = SamplerOptions.approx_cache,
                    **sampler_opts: Any) -> tuple[torch.Tensor, dict]:
    """Block-by-block sampling: canvas (B, L) -> tokens (B, L), denoised block by block, left to right.

    Blocks are positions [k*block, (k+1)*block). Block k is one ``sampler`` call on canvas[:, :(k+1)*block]
    with every earlier position fixed. Blocks without an editable (non-fixed) position are skipped; the
    ``steps`` are shared among the others as evenly as possible, at least one each, so a canvas of N
    editable blocks takes max(steps, N) steps. Same signature and info as a sampler, plus ``blocks``.
    A block diffusion model (BD3-LM) never sees the positions after the block. With ``use_cache`` (models with
    ``new_kv_cache``) finished blocks go into a KV cache in the first pass of the block after them, so each pass
    runs one block (the first also the blocks finished since the last pass), not the whole prefix;
    the logits agree with the uncached pass up to rounding. A bidirectional model (``diffusion_block`` 0) sees
    the whole canvas, later blocks still masked (semi-autoregressive, LLaDA), with the approximate
    ``approx_cache`` (``_Bidirectional``). Models without a config (test fakes) see canvas[:, :end].
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
    info["blocks"] = 0
    cached = bidirectional = None
    model_block = getattr(getattr(model, "config", None), "diffusion_block", None)
    if use_cache and hasattr(model, "new_kv_cache") and model_block == block:
        cached = _PrefixCache(model, tokens.size(0), tokens.device)
    elif model_block == 0:
        bidirectional = _Bidirectional(model, approx_cache, tokens.size(0), tokens.device)
    runner = cached if cached is not None else bidirectional if bidirectional is not None else model
    for i, k in enumerate(todo):
        start, end = k * block, min((k + 1) * block, L)
        if cached is not None:
            cached.begin(start)
        if bidirectional is not None:
            bidirectional.begin(start, tokens[:, end:])
        block_steps = max(1, steps // len(todo) + int(i < steps % len(todo)))
        window_fixed = fixed[:, :end].clone()
        window_fixed[:, :start] = True  # earlier blocks are final (any mask there was filled in its own turn)
        report = None
        if on_step is not None:
            report = _pad_report(on_step, tokens[:, :0], tokens[:, end:], len(info["committed_per_step"]))
        out, part = fn(runner, tokens[:, :end], mask_token_id=mask_token_id,
                       steps=block_steps, generator=generator, fixed=window_fixed, on_step=report, **sampler_opts)
        tokens[:, :end] = out
        _add_info(info, part)
    return tokens, info


def generate_long(model: Model, prefix_ids: torch.Tensor, length: int, block_size: int,
                  sampler: str | SamplerFn, *, mask_token_id: int, steps: int, generator: torch.Generator | None,
                  new_block: int | None = SamplerOptions.new_block, on_step: OnStep | None = None,
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
