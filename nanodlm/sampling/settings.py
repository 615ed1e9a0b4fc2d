"""Which settings a generation reads: the one place that decides it, for ``nanodlm sample`` and the web demo alike.

For a model (its config: model_type, draft_len, block_size, diffusion_block) and a sampler, ``check_settings``

- refuses what cannot run (a one-line UserError before any work): a sampler the model cannot use (``speculative``
  without a draft stream, ``ar`` / ``speculative`` on a diffusion model), a ``draft_len`` that leaves no room for
  text in ``block_size``, ``rolling_cache`` on a gpt2 model with learned positions (they end at block_size);
- returns every setting that was given but will be ignored, one ``--key=value: reason`` line each (the CLI prints
  them as warnings, the server sends them as a ``warning`` event): keys the model or the chosen sampler does not
  read, ``--rolling_cache`` without a KV cache or on a FIM gap, ``--approx_cache`` without semi-autoregressive
  decoding, ``--semi_ar_block`` not below the canvas, ``--length`` with an ``--infill`` template.

A key counts as given when it is in ``given`` (the keys the user set: flags, a preset, a request's fields), or,
without ``given``, when it differs from its default (library callers).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from typing import Any

from ..core.errors import UserError
from .samplers import CAUSAL_SAMPLERS, DIFFUSION_SAMPLERS, SamplerOptions, sampler_keys

# what each model type reads beside its sampler's own options
AR_OPTIONS = ("temperature", "top_k", "top_p", "use_kv_cache", "rolling_cache")
DIFFUSION_EXTRAS = ("sampler", "use_kv_cache", "semi_ar_block", "approx_cache", "new_block")


def refuse(config: Any, options: SamplerOptions) -> None:
    """A one-line UserError when ``options`` cannot run on a model of ``config`` (see the module docstring)."""
    if config.model_type != "gpt2" and options.sampler in CAUSAL_SAMPLERS:
        diffusion = ", ".join(DIFFUSION_SAMPLERS)
        raise UserError(f"--sampler={options.sampler} is for AR models (speculative: trained with objective=tidar); "
                        f"this is a diffusion model: choose one of {diffusion}")
    if options.rolling_cache and config.model_type == "gpt2" and config.pos_emb != "rope":
        raise UserError(f"--rolling_cache=True needs rotary positions (pos_emb=rope); this model's are "
                        f"pos_emb={config.pos_emb}, which end at block_size {config.block_size}: drop --rolling_cache "
                        "(past block_size the window then slides exactly)")
    if options.sampler != "speculative":
        return
    if not getattr(config, "draft_len", 0):
        raise UserError("--sampler=speculative needs a TiDAR model (objective=tidar); this gpt2 model has no draft "
                        "stream (draft_len = 0): use --sampler=ar")
    k = options.draft_len or config.draft_len
    if k >= config.block_size:
        raise UserError(f"--draft_len={k} does not fit: a pass holds the text and k masks in block_size "
                        f"{config.block_size} positions; use --draft_len below {config.block_size} (the model's is "
                        f"{config.draft_len})")


def _is_set(obj: Any, name: str, default: Any, given: Collection[str] | None) -> bool:
    return name in given if given is not None else getattr(obj, name) != default


def options_read(model_type: str, sampler: str) -> set[str]:
    """The SamplerOptions keys a ``model_type`` model reads with ``sampler``: a gpt2 model the AR options (a causal
    sampler, ar or speculative: exactly that sampler's), a diffusion model its sampler's and DIFFUSION_EXTRAS."""
    if model_type == "gpt2":
        return {"sampler", *sampler_keys(sampler)} if sampler in CAUSAL_SAMPLERS else set(AR_OPTIONS)
    return set(sampler_keys(sampler)) | set(DIFFUSION_EXTRAS)


def ignored_settings(model_type: str, options: SamplerOptions, prompt: Any, block_size: int | None = None,
                     diffusion_block: int = 0, given: Collection[str] | None = None) -> list[str]:
    """Every given setting the generation will ignore, as ``--key=value: reason`` lines (see the module
    docstring): keys ``model_type`` (and the chosen sampler) does not read, e.g. --sampler=remask or --steps on
    a gpt2 model, --use_kv_cache with --sampler=speculative (it always keeps an exact cache), --max_new_tokens on
    diffusion; and the diffusion-only cases."""
    used_options = options_read(model_type, options.sampler)
    if model_type == "gpt2":  # --length sizes a FIM model's gap between --start and --suffix
        unused_prompt: tuple[str, ...] = () if prompt.suffix is not None else ("length",)
    else:
        unused_prompt = ("max_new_tokens",)
    if model_type == "gpt2" and options.sampler not in CAUSAL_SAMPLERS:
        why = "not used by a gpt2 model"
    else:
        why = f"not used by a {model_type} model with sampler {options.sampler}"
    out = []
    for f in fields(SamplerOptions):
        if f.name not in used_options and _is_set(options, f.name, f.default, given):
            out.append(f"--{f.name}={getattr(options, f.name)}: {why}")
    for f in fields(prompt):
        if f.name in unused_prompt and _is_set(prompt, f.name, f.default, given):
            out.append(f"--{f.name}={getattr(prompt, f.name)}: {why}")
    if model_type == "gpt2" and options.rolling_cache:
        if prompt.suffix is not None or prompt.infill is not None:
            out.append("--rolling_cache=True: a FIM model fills its gap without a rolling cache")
        elif options.sampler != "speculative" and not options.use_kv_cache:
            out.append("--rolling_cache=True: it rolls the KV cache, and --use_kv_cache=False keeps none")
    if model_type == "gpt2":
        return out
    if options.approx_cache != "none" and diffusion_block:
        out.append(f"--approx_cache={options.approx_cache}: a block diffusion model keeps an exact KV cache")
    elif options.approx_cache != "none" and not options.semi_ar_block:
        out.append(f"--approx_cache={options.approx_cache}: it caches semi-autoregressive blocks; add --semi_ar_block")
    if prompt.infill is not None and prompt.length is not None:
        out.append(f"--length={prompt.length}: the --infill template sets the length")
    length = prompt.length if prompt.length is not None else block_size
    if options.semi_ar_block and not diffusion_block and length is not None and prompt.infill is None \
            and options.semi_ar_block >= length:
        out.append(f"--semi_ar_block={options.semi_ar_block}: not below the length {length}, so the canvas is one "
                   "block")
    return out


def notes(config: Any, options: SamplerOptions, prompt: Any) -> list[str]:
    """What a generation with these settings does that the user may not expect, one line each (warnings, not
    ignored settings), for a gpt2 generation that runs past block_size: speculative decoding writes one token per
    full-window pass, no drafts; with ``rolling_cache`` the text there is an approximation of AR sampling."""
    out: list[str] = []
    if config.model_type != "gpt2" or prompt.suffix is not None or prompt.infill is not None \
            or prompt.max_new_tokens + 1 <= config.block_size:
        return out
    cached = options.sampler == "speculative" or options.use_kv_cache
    if options.rolling_cache and cached:
        out.append(f"--rolling_cache=True: past block_size {config.block_size} the oldest keys are evicted and the "
                   "rest reused (keys computed under a longer context, StreamingLLM-style): an approximation, not AR "
                   "sampling of the model (--verbose counts these rolled passes)")
    elif options.sampler == "speculative":
        out.append(f"--max_new_tokens={prompt.max_new_tokens} runs past block_size {config.block_size}: there the "
                   "speculative sampler writes one token per pass over the whole window, without drafts (exact AR "
                   "sampling; --verbose counts these window passes)")
    return out


def check_settings(config: Any, options: SamplerOptions, prompt: Any, given: Collection[str] | None = None
                   ) -> list[str]:
    """``refuse`` what cannot run on a model of ``config``, then the ``ignored_settings`` lines of what will not
    be read. ``given``: the keys the user set (None: those that differ from their defaults)."""
    refuse(config, options)
    return ignored_settings(config.model_type, options, prompt, config.block_size, config.diffusion_block, given)
