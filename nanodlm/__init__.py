"""nanodlm: train and sample GPT-style autoregressive and masked-diffusion language models.

The public API (README, "Python"): these names, and nothing else, are promised; internals may move.

    model, meta, tok = nanodlm.load_model("out-cpu-diffusion")   # a run directory -> model, metadata, tokenizer
    out = nanodlm.generate(model, tok, nanodlm.SamplerOptions(steps=64), nanodlm.Prompt(start="ROMEO:"), seed=0)

Each name is imported on first use (PEP 562), so ``import nanodlm`` and ``nanodlm --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "load_model": "nanodlm.runs.checkpoint",
    "from_pretrained": "nanodlm.runs.pretrained",
    "generate": "nanodlm.sampling.generate",
    "Generation": "nanodlm.sampling.generate",
    "Prompt": "nanodlm.sampling.generate",
    "SamplerOptions": "nanodlm.sampling.samplers",
    "GPT": "nanodlm.model.model",
    "GPTConfig": "nanodlm.model.model",
    "TrainConfig": "nanodlm.training.config",
    "train": "nanodlm.training.train",
}
__all__ = ["GPT", "GPTConfig", "Generation", "Prompt", "SamplerOptions", "TrainConfig", "from_pretrained", "generate",
           "load_model", "train"]  # = _API's names (tests/test_api.py)

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on demand
    from .model.model import GPT, GPTConfig
    from .runs.checkpoint import load_model
    from .runs.pretrained import from_pretrained
    from .sampling.generate import Generation, Prompt, generate
    from .sampling.samplers import SamplerOptions
    from .training.config import TrainConfig
    from .training.train import train


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'nanodlm' has no attribute {name!r}")
    value = getattr(import_module(_API[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
