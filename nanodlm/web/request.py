"""A web demo request: the JSON body of ``POST /api/generate`` -> its own keys, the sampler options and the prompt.

Every value is validated by the configs ``nanodlm sample`` uses (``sampling_configs``), so a bad one gets the
CLI's one-line message (the server answers it as a 400). Requests never name a file: ``FILE:`` values are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from ..core.errors import UserError
from ..sampling.generate import ALIASES, NUM_SAMPLES, SEED, Prompt, SamplerOptions, sampling_configs

MODELS = ("main", "ar")  # the main model (--out_dir: diffusion or TiDAR) and the optional AR one (--ar_out_dir)
MODEL_ALIASES = {"diffusion": "main"}  # the main model's name before it could be a TiDAR model


@dataclass
class GenerateRequest:
    """A request's own keys beside the sampler options and the prompt (defaults: ``nanodlm sample``'s)."""

    model: str = "main"  # main (the --out_dir model: diffusion or TiDAR; "diffusion" is an alias) | ar (--ar_out_dir)
    num_samples: int = NUM_SAMPLES
    seed: int = SEED
    race: bool = False  # the main model, then the AR model on the same prompt and length: one job, one stream

    def __post_init__(self) -> None:
        self.model = MODEL_ALIASES.get(self.model, self.model)
        if self.model not in MODELS:
            raise UserError(f"model must be one of {', '.join(MODELS)} (diffusion = main); got {self.model!r}")
        if self.race and self.model != "main":
            raise UserError("race runs the main model, then the AR model: leave model at main")
        if self.num_samples < 1:
            raise UserError(f"num_samples must be >= 1; got {self.num_samples}")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"seed must be in [0, 2**63); got {self.seed}")


def request_keys() -> list[str]:
    """Every key a request may set: its own, then the sampler options and the prompt, as ``nanodlm sample``."""
    return [f.name for cls in (GenerateRequest, SamplerOptions, Prompt) for f in fields(cls) if f.init]


def parse_request(body: bytes) -> tuple[GenerateRequest, SamplerOptions, Prompt, set[str]]:
    """JSON object -> the three configs, built and validated as the CLI builds them (UserError otherwise), each
    value of its JSON type ("16" is not a length, "yes" not true), and the keys the request gave."""
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    try:
        values = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"the request body is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    except RecursionError:  # [[[[...: nested deeper than the parser goes
        raise UserError("the request body is nested too deeply; send one flat object of sampling keys") from None
    if not isinstance(values, dict):
        raise UserError("the request body must be a JSON object of sampling keys, e.g. {\"steps\": 32}")
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("FILE:"):
            raise UserError(f"'{key}' starts with FILE:, which reads a file on the command line; send the text itself")
    request, options, prompt = sampling_configs(values, GenerateRequest, text=False)
    return request, options, prompt, {ALIASES.get(k, k) for k in values}
