"""Infilling with a FIM-trained AR model (``objective=fim``, diffusion/fim.py): the model is prompted with the
prefix and the suffix and writes the middle left to right, with the KV cache.

A hole of known length n is filled with exactly n tokens: <EOM> (and the other sentinels) get no probability
until then, so the middle is drawn from the model's distribution over middles of that length, the one
``fim_middle_nll`` scores (the diffusion model knows the length too: its canvas has n [MASK]). Without a length
the model writes until it samples <EOM>, or ``max_new`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..diffusion.fim import FimIds, fim_ids, fim_prompt
from .ar_sampling import Model, cache_dtype, check_sampling_args, inference_mode, model_device, sample_logits


def model_fim_ids(model: Model) -> FimIds:
    """The sentinel ids of a FIM model (its vocabulary's last four); ValueError for any other model."""
    config = getattr(model, "config", None)
    n = int(getattr(config, "fim_sentinels", 0) or 0)
    if not n:
        raise ValueError("this gpt2 model was not trained to infill: train one with objective=fim (or use a "
                         "diffusion model)")
    return fim_ids(config.vocab_size - n)


def _restrict(logits: torch.Tensor, ids: FimIds, allow_eom: bool) -> torch.Tensor:
    """logits (..., V + 4) -> the same with every sentinel at -inf, <EOM> kept when ``allow_eom``."""
    out = logits.float().clone()
    out[..., ids.pre:] = float("-inf")
    if allow_eom:
        out[..., ids.eom] = logits[..., ids.eom].float()
    return out


def generate_fim(model: Model, prefix: list[int], suffix: list[int], num_samples: int, *, length: int | None,
                 max_new: int, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, spm: bool = False, use_cache: bool = True,
                 on_token: Callable[[int, list[list[int]]], None] | None = None
                 ) -> tuple[list[list[int]], dict[str, Any]]:
    """``num_samples`` middles for (prefix, suffix) ids: exactly ``length`` tokens each, or (length None) until
    <EOM> or ``max_new``. Returns (middles, info with ``forward_passes``). on_token(i, middles so far) after the
    i-th token (i = 1, 2, ...)."""
    check_sampling_args(temperature, top_k, top_p)
    ids = model_fim_ids(model)
    prompt = fim_prompt(prefix, suffix, ids, spm)
    budget = length if length is not None else max_new
    block_size = model.config.block_size
    if len(prompt) + budget > block_size:
        raise ValueError(f"the hole ({budget} tokens) and its context ({len(prefix)} + {len(suffix)} tokens and 3 "
                         f"sentinels) do not fit in block_size {block_size}: shorten the hole or the context")
    device = model_device(model)
    idx = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)  # (B, P)
    middles: list[list[int]] = [[] for _ in range(num_samples)]
    done = [False] * num_samples
    passes = 0
    with inference_mode(model):
        cache = None
        if use_cache and hasattr(model, "new_kv_cache"):
            cache = model.new_kv_cache(num_samples, device, cache_dtype(model, device))
            logits = model.decode(idx, cache)
        else:
            logits, _ = model(idx)
        passes += 1
        for i in range(budget):
            allow_eom = length is None
            nxt = sample_logits(_restrict(logits[:, -1, :], ids, allow_eom), temperature, top_k, top_p, generator)
            for b, t in enumerate(nxt.tolist()):
                if not done[b]:
                    if t == ids.eom:
                        done[b] = True
                    else:
                        middles[b].append(t)
            if on_token is not None:
                on_token(i + 1, middles)
            if all(done) or i == budget - 1:
                break
            idx = torch.cat((idx, nxt[:, None]), dim=1)
            logits = model.decode(nxt[:, None], cache) if cache is not None else model(idx)[0]
            passes += 1
    return middles, {"forward_passes": passes, "ended_by_eom": sum(done), "prompt_tokens": len(prompt)}


def fim_middle_nll(model: Model, prefix: list[int], middle: list[int], suffix: list[int],
                   spm: bool = False) -> float:
    """Exact -log p(middle | prefix, suffix, its length) in nats (a sum over the middle's tokens): one forward
    pass over the prompt and the middle, each middle token scored with the sentinels ruled out (the
    distribution ``generate_fim`` draws a known-length hole from)."""
    ids = model_fim_ids(model)
    prompt = fim_prompt(prefix, suffix, ids, spm)
    seq = prompt + middle
    if len(seq) > model.config.block_size:
        raise ValueError(f"prefix, middle, suffix and 3 sentinels ({len(seq)} tokens) exceed block_size "
                         f"{model.config.block_size}")
    x = torch.tensor([seq[:-1]], dtype=torch.long, device=model_device(model))  # (1, P + n - 1)
    with inference_mode(model):
        logits, _ = model(x, all_logits=True)  # (1, P + n - 1, V + 4)
    scored = _restrict(logits[0, len(prompt) - 1:], ids, allow_eom=False)  # (n, V + 4): the middle's predictions
    target = torch.tensor(middle, dtype=torch.long, device=scored.device)
    return float(-F.log_softmax(scored, dim=-1).gather(1, target[:, None]).sum())
