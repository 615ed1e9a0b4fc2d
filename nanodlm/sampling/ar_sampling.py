"""Token-level sampling shared by every sampler, and autoregressive generation.

- ``filter_logits`` / ``sample_logits``: temperature, top-k and nucleus (top-p) sampling,
  vectorised over any leading dimensions; temperature 0 means argmax.
- ``generate_ar``: nanoGPT-style left-to-right generation, with or without the KV cache.

All randomness comes from an explicit ``torch.Generator``.
References: nanoGPT ``generate`` (Karpathy); top-k (Fan et al. 2018, "Hierarchical Neural Story
Generation"); top-p (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

# anything called as ``logits, _ = model(idx, ...)``: a GPT, or a fake model in tests
Model = Callable[..., tuple[torch.Tensor, Any]]


MIN_TEMPERATURE = 1e-6  # smaller positive temperatures act as this one (greedy but for exact ties)


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError for settings that cannot mean anything (negative temperature, top_p outside (0, 1])."""
    if not 0 <= temperature < float("inf"):  # nan and inf too
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 1, or 0/None to disable, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], or None to disable, got {top_p}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Scale by temperature and set tokens outside top-k / the top-p nucleus to -inf.

    logits (..., V) -> float32 logits (..., V). Temperature 0 leaves the scale alone (the caller
    takes the argmax). top_k is clamped to V; top_k 0/None and top_p None/1.0 disable the filter.
    """
    check_sampling_args(temperature, top_k, top_p)
    logits = logits.float()  # a copy in float32: bf16 logits lose the tail of the distribution
    if temperature > 0:  # a tiny temperature divides as MIN_TEMPERATURE: 1e-300 would overflow to inf - inf = nan
        logits = logits / max(temperature, MIN_TEMPERATURE)
    else:
        logits = logits.clone()
    V = logits.size(-1)
    if top_k and top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # nucleus: keep the smallest set of most likely tokens whose mass reaches top_p (Holtzman et al. 2020)
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False  # the most likely token always stays (a top_p of 1e-300 is 0 in float32)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_with_logprobs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                         top_p: float | None = None, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (..., V) -> (ids (...) long, log-probs (..., V) of the filtered distribution ids were drawn from).
    """
    logprobs = F.log_softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    if temperature == 0:
        ids = logprobs.argmax(dim=-1)
    else:
        flat = logprobs.exp().reshape(-1, logprobs.size(-1))  # multinomial wants (N, V)
        ids = torch.multinomial(flat, num_samples=1, generator=generator).view(logprobs.shape[:-1])
    return ids, logprobs


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row: logits (..., V) -> ids (...). Temperature 0 = argmax."""
    return sample_with_logprobs(logits, temperature, top_k, top_p, generator)[0]


@contextmanager
def inference_mode(model: Model) -> Iterator[None]:
    """no_grad and eval() for the duration (dropout off), restoring the model's training flag afterwards."""
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def model_device(model: Model, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of the model's first parameter (``fallback`` for parameter-free fakes)."""
    p = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    return p.device if p is not None else torch.device(fallback)


def cache_dtype(model: nn.Module, device: torch.device) -> torch.dtype:
    # under autocast k/v come out in the autocast dtype; the cache must hold the same dtype for SDPA
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def generate_ar(model: Model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None,
                use_cache: bool = True, on_token: Callable[[int, torch.Tensor], None] | None = None,
                stats: dict[str, int] | None = None, vocab_size: int | None = None, rolling_cache: bool = False
                ) -> torch.Tensor:
    """Append ``max_new_tokens`` sampled tokens to idx (B, T) -> (B, T + max_new_tokens).

    The context is cropped to the last ``block_size`` tokens (nanoGPT). With the KV cache each new
    token costs one single-token forward; once the cache is full every step re-prefills the cropped
    window, which is exactly what the uncached path computes, so both give the same tokens.
    Models without ``new_kv_cache`` (fakes) always take the uncached path.
    on_token(i, idx (B, T + i)) is called after the i-th new token is appended (i = 1 .. max_new_tokens).
    stats: ``stats["passes"]`` grows by one at every model call (full, cached or re-prefill), counted where the
    call is made.
    ``vocab_size``: sample from the first ids only (a FIM model's text, its sentinels ruled out).
    ``rolling_cache`` (with the KV cache, a rope model): once the cache is full, evict its oldest key and decode
    the newest token against the other block_size - 1 (one token through the model instead of a window). Not AR
    sampling of the model past block_size: the kept keys were computed while the evicted tokens were visible
    (StreamingLLM's window attention, without sink tokens); ``stats["rolled"]`` counts these passes.
    """
    check_sampling_args(temperature, top_k, top_p)
    config = getattr(model, "config", None)
    block_size = getattr(config, "block_size", None)
    cached = use_cache and hasattr(model, "new_kv_cache") and block_size is not None
    with inference_mode(model):
        cache = None
        for i in range(1, max_new_tokens + 1):
            window = idx if block_size is None else idx[:, -block_size:]  # (B, <= block_size)
            if not cached:
                logits, _ = model(window)
            elif rolling_cache and cache is not None and cache.pos >= block_size:
                cache.evict(1)  # (B, nh, block_size - 1, hs) kept; keys keep their absolute positions
                logits = model.decode(idx[:, -1:], cache)  # attends to exactly block_size keys
                if stats is not None:
                    stats["rolled"] = stats.get("rolled", 0) + 1
            elif cache is None or cache.pos >= block_size:
                # first step, or the cache is full: (re-)prefill the cropped window from position 0
                if cache is None:
                    cache = model.new_kv_cache(idx.size(0), idx.device, cache_dtype(model, idx.device))
                cache.reset()
                logits = model.decode(window, cache)
            else:
                logits = model.decode(idx[:, -1:], cache)  # (B, 1): the newest token only
            if stats is not None:
                stats["passes"] = stats.get("passes", 0) + 1
            idx_next = sample_logits(logits[:, -1, :vocab_size], temperature, top_k, top_p, generator)  # (B,)
            idx = torch.cat((idx, idx_next[:, None]), dim=1)
            if on_token is not None:
                on_token(i, idx)
    return idx
