"""nanodlm: train and sample GPT-style autoregressive and masked-diffusion language models."""

__version__ = "0.1.0"
