"""The web demo's models and the jobs a request asks of them: sizes, settings and the run, checked before any work.

A server holds a *main* model (``--out_dir``: a diffusion model or a TiDAR model) and optionally an *ar* model
(``--ar_out_dir``). A request names one of them (``model``: main, alias diffusion | ar) or races both (``race``:
the main model, then the AR model on the same prompt and length). Which settings each reads is decided by
``sampling/settings.py``, as for ``nanodlm sample``: a setting that cannot run is a 400, one given and not read is a
``warning`` event. In a race the AR opponent samples as AR (the shared temperature, top-k, top-p, cache and seed),
whatever sampler the main model uses: that is the race's contract, not a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..core.errors import UserError
from ..sampling.generate import Generation, Prompt, SamplerOptions, build_canvas, fim_gap, generate
from ..sampling.samplers import CAUSAL_SAMPLERS
from ..sampling.settings import check_settings
from .request import GenerateRequest

KINDS = {"diffusion": "diffusion model", "tidar": "TiDAR model (its masks draft, its AR stream verifies)",
         "gpt2": "autoregressive model"}
LENGTH_KEYS = ("length", "max_new_tokens")  # an AR panel reads both itself: length (prompt included) wins


@dataclass
class Engine:
    """A loaded model, its tokenizer, its name in requests and events (main | ar) and where it came from."""

    name: str  # main | ar
    out_dir: str
    model: Any
    tok: Any
    device: str

    @property
    def kind(self) -> str:
        """diffusion | tidar (a gpt2 model with a draft stream, objective=tidar) | gpt2."""
        c = self.model.config
        return "tidar" if c.draft_len else c.model_type

    @property
    def mask_token_id(self) -> int | None:
        return self.model.config.mask_token_id if self.name == "main" else None

    def describe(self) -> dict[str, Any]:
        c = self.model.config
        return {"out_dir": self.out_dir, "kind": self.kind, "model_type": c.model_type, "block_size": c.block_size,
                "diffusion_block": c.diffusion_block, "draft_len": c.draft_len, "infills": self.infills,
                "n_params": sum(p.numel() for p in self.model.parameters())}

    @property
    def infills(self) -> bool:
        """Keeps a suffix and fills a gap: a diffusion model, or a gpt2 model trained with objective=fim."""
        c = self.model.config
        return self.kind == "diffusion" or bool(getattr(c, "fim_sentinels", 0))


@dataclass
class Job:
    """A validated request for one model: its sizes (checked against the limits), the settings it will not read
    (``warnings``) and ``run(on_step) -> Generation``."""

    length: int
    steps: int
    num_samples: int
    run: Callable[[Callable[..., None]], Generation]
    warnings: list[str] = field(default_factory=list)


def plan_job(engine: Engine, request: GenerateRequest, options: SamplerOptions, prompt: Prompt, given: Collection[str],
             limit_length: int, race_length: int | None = None) -> Job:
    """The job's sizes, found as ``generate`` will find them (the same one-line errors), the settings it ignores
    and its run function. ``given``: the request's keys; ``race_length``: the AR opponent in a race writes the main
    panel's length (prompt included); otherwise an AR panel writes ``length``, or ``max_new_tokens``, or up to
    ``limit_length``."""
    model, tok = engine.model, engine.tok
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(request.seed)
    given = set(given)
    if engine.kind == "diffusion":
        warnings = check_settings(model.config, options, prompt, given)
        _, _, length = build_canvas(tok, prompt, model.config.block_size, model.config.mask_token_id)
        steps = options.steps
    else:
        if race_length is not None:  # the race's AR opponent: AR sampling of the shared settings, nothing to warn
            options = SamplerOptions(sampler="ar", temperature=options.temperature, top_k=options.top_k,
                                     top_p=options.top_p, use_kv_cache=options.use_kv_cache)
        elif engine.kind == "tidar" and "sampler" not in given:
            options = replace(options, sampler="speculative")  # a TiDAR model drafts unless asked for ar
        if engine.kind == "tidar" and options.sampler not in CAUSAL_SAMPLERS:
            raise UserError(f"sampler {options.sampler!r} is a diffusion sampler; this server's main model is a TiDAR "
                            "model, which writes with sampler speculative (or ar, its AR stream alone)")
        warnings = [] if race_length is not None else check_settings(
            model.config, options, replace(prompt, length=None), given - set(LENGTH_KEYS))
        if prompt.suffix is not None or prompt.infill is not None:
            return _fim_job(engine, request, options, prompt, generator, warnings)
        n_prompt = len(tok.encode(prompt.start) or [0]) if prompt.start is not None else 1  # generate's "\n"
        length = race_length if race_length is not None else prompt.length
        if length is not None:
            if length <= n_prompt:
                raise UserError(f"--length {length} leaves no room after {n_prompt} prompt tokens: raise --length")
            if "max_new_tokens" in given and race_length is None:  # in a race the main panel read it
                warnings.append(f"--max_new_tokens={prompt.max_new_tokens}: --length={length} (prompt included) sets "
                                "how much is written")
            new = length - n_prompt
        elif "max_new_tokens" in given:
            new = prompt.max_new_tokens
        else:  # neither: as much as the server allows, as a diffusion canvas is block_size
            if limit_length <= n_prompt:
                raise UserError(f"the prompt's {n_prompt} tokens leave no room in this server's length limit of "
                                f"{limit_length}; shorten the prompt")
            new = limit_length - n_prompt
        prompt = replace(prompt, max_new_tokens=new, length=None)
        length, steps = n_prompt + new, new  # one token per step

    def run(on_step: Callable[..., None]) -> Generation:
        return generate(model, tok, options, prompt, num_samples=request.num_samples, seed=generator, on_step=on_step)

    return Job(length, steps, request.num_samples, run, warnings)


def _fim_job(engine: Engine, request: GenerateRequest, options: SamplerOptions, prompt: Prompt,
             generator: torch.Generator, warnings: list[str]) -> Job:
    """A gap filled by an AR model trained to fill in the middle (objective=fim), left to right: the gap's size,
    or until <EOM> (``max_new_tokens`` at most)."""
    if not engine.infills:
        raise UserError("this autoregressive model writes left to right: suffix and infill need the diffusion model "
                        "or an AR model trained to fill in the middle (objective=fim)")
    model, tok = engine.model, engine.tok
    prefix, suffix, gap = fim_gap(tok, prompt)
    steps = gap or prompt.max_new_tokens
    ar_options = replace(options, sampler="ar")  # it writes as AR, whatever the race's sampler

    def run_fim(on_step: Callable[..., None]) -> Generation:
        return generate(model, tok, ar_options, prompt, num_samples=request.num_samples, seed=generator,
                        on_step=on_step)

    return Job(len(prefix) + steps + len(suffix), steps, request.num_samples, run_fim, warnings)


def check_limits(job: Job, limits: dict[str, int]) -> None:
    """A UserError naming the first size above this server's limit (``Server.limits``)."""
    for key, value in (("length", job.length), ("steps", job.steps), ("num_samples", job.num_samples)):
        if value > limits[key]:
            flag = {"num_samples": "limit_samples"}.get(key, f"limit_{key}")
            raise UserError(f"{key} {value} is above this server's limit of {limits[key]} (nanodlm serve --{flag})")
