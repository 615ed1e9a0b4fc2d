"""Pretrained GPT-2 weights from Hugging Face ``transformers`` (optional extra: ``pip install 'nanodlm[hf]'``).

``load_hf_gpt2(name_or_dir)`` -> (model_args, state_dict) in our layout; ``from_pretrained`` builds the GPT.
Names are nanoGPT's (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``, looked up in the Hugging Face
cache and downloaded once if the network allows), or a local directory written by ``save_pretrained``.

The conversion: HF's GPT-2 stores its linear layers as ``Conv1D`` with weights (in, out), so those four
matrices are transposed; our embedding table is padded to a multiple of 64 rows (50,257 -> 50,304) with zero
rows that are never predicted (logits are cut to ``vocab_size``); GPT-2's MLP uses the tanh approximation of
GELU (HF ``gelu_new``), recorded as ``activation = "gelu_tanh"``; biases everywhere, learned positions, tied
input/output embeddings and LayerNorm eps 1e-5, which our model has with ``bias=True, pos_emb="learned"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..core.fileio import parse_json
from ..model.model import GPT, GPTConfig
from .checkpoint import check_model_size

# nanoGPT's names -> (n_layer, n_head, n_embd); all have block_size 1024 and vocab 50,257
GPT2_SIZES = {
    "gpt2": (12, 12, 768),  # 124M
    "gpt2-medium": (24, 16, 1024),  # 350M
    "gpt2-large": (36, 20, 1280),  # 774M
    "gpt2-xl": (48, 25, 1600),  # 1558M
}
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def is_pretrained_source(init_from: str) -> bool:
    """True for a GPT-2 name or a directory holding a Hugging Face ``config.json``."""
    return init_from in GPT2_SIZES or (Path(init_from) / "config.json").is_file()


def is_init_source(init_from: str) -> bool:
    """True for what ``init_from`` can start from: GPT-2 weights, or a training run's out_dir."""
    return is_pretrained_source(init_from) or (Path(init_from) / "ckpt.pt").is_file()


def hf_cache_dir() -> str:
    """Where ``transformers`` looks for downloaded weights (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("loading GPT-2 weights needs transformers: pip install 'nanodlm[hf]'") from None
    return transformers


def _load_hf_model(name_or_dir: str):
    transformers = _import_transformers()
    local = Path(name_or_dir).is_dir()
    if not local and name_or_dir not in GPT2_SIZES:
        raise UserError(f"init_from={name_or_dir!r} is neither a GPT-2 name ({', '.join(GPT2_SIZES)}) nor a "
                        "directory holding a Hugging Face GPT-2 checkpoint (config.json + weights)")
    if local:
        check_hf_config(Path(name_or_dir) / "config.json")
    try:
        return transformers.GPT2LMHeadModel.from_pretrained(name_or_dir).float()
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as e:
        if local:
            why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError(f"{name_or_dir} is not a loadable Hugging Face GPT-2 checkpoint ({why})") from None
        raise UserError(f"no weights for {name_or_dir!r} in the Hugging Face cache {hf_cache_dir()} and no download "
                        "(offline?): run once with network access (or set HF_HOME to a cache that has them; "
                        "HF_HUB_OFFLINE=1 skips the retries), or pass a local directory written by save_pretrained"
                        ) from None


HF_SIZES = ("n_positions", "n_embd", "n_layer", "n_head", "vocab_size")  # config.json keys that size the model


def check_hf_config(path: Path) -> None:
    """A local Hugging Face ``config.json``, checked before transformers builds (and allocates) the model: a JSON
    object whose size keys are positive integers and whose model fits in memory; one-line UserError otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    config = parse_json(text, str(path), dict, "; it must be a Hugging Face GPT-2 config")
    for key in HF_SIZES:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{path}: {key} must be a positive integer; got {value!r}")
    for key in ("activation_function", "model_type"):
        if key in config and not isinstance(config[key], str):
            raise UserError(f"{path}: {key} must be a string; got {config[key]!r}")
    if all(key in config for key in HF_SIZES):
        if config["n_embd"] % config["n_head"]:
            raise UserError(f"{path}: n_embd {config['n_embd']} is not a multiple of n_head {config['n_head']}")
        check_model_size(GPTConfig(model_type="gpt2", block_size=config["n_positions"],
                                   vocab_size=config["vocab_size"], n_layer=config["n_layer"],
                                   n_head=config["n_head"], n_embd=config["n_embd"]), path.parent)


def hf_model_args(hf_config: Any) -> dict[str, Any]:
    """A HF ``GPT2Config`` -> our ``GPTConfig`` arguments (model_type gpt2); unsupported variants are errors."""
    activation = _ACTIVATIONS.get(hf_config.activation_function)
    n_inner = getattr(hf_config, "n_inner", None)
    problems = []
    if activation is None:
        problems.append(f"activation_function={hf_config.activation_function!r}")
    if n_inner not in (None, 4 * hf_config.n_embd):
        problems.append(f"n_inner={n_inner} (we use 4 * n_embd)")
    if abs(hf_config.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={hf_config.layer_norm_epsilon} (we use 1e-5)")
    if not getattr(hf_config, "scale_attn_weights", True) or getattr(hf_config, "scale_attn_by_inverse_layer_idx",
                                                                       False):
        problems.append("non-standard attention scaling")
    if problems:
        raise UserError(f"unsupported GPT-2 variant: {', '.join(problems)}")
    return dict(model_type="gpt2", block_size=hf_config.n_positions, vocab_size=hf_config.vocab_size,
                n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=hf_config.n_embd, dropout=0.0, bias=True,
                pos_emb="learned", activation=activation)


def convert_hf_state(hf_state: dict[str, torch.Tensor], padded_vocab_size: int) -> dict[str, torch.Tensor]:
    """HF GPT2LMHeadModel state dict -> ours: Conv1D weights transposed, embeddings padded with zero rows."""
    out: dict[str, torch.Tensor] = {}
    for key, value in hf_state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of older transformers
            continue
        if key.endswith(_TRANSPOSED):
            value = value.t()
        out[key] = value.detach().float().contiguous()
    wte = out["transformer.wte.weight"]  # (vocab, C)
    padded = torch.zeros(padded_vocab_size, wte.size(1))
    padded[: wte.size(0)] = wte
    out["transformer.wte.weight"] = out["lm_head.weight"] = padded  # tied, as in GPT-2
    return out


def load_hf_gpt2(name_or_dir: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model_args, state_dict) of a GPT-2 from Hugging Face, ready for ``GPT(GPTConfig(**model_args))``."""
    hf = _load_hf_model(name_or_dir)
    model_args = hf_model_args(hf.config)
    state = convert_hf_state(hf.state_dict(), GPTConfig(**model_args).padded_vocab_size)
    return model_args, state


def from_pretrained(name_or_dir: str, **overrides: Any) -> GPT:
    """A GPT (eval mode, fp32, CPU) with GPT-2's weights; ``overrides`` may set ``dropout`` and ``attn_dropout``."""
    bad = set(overrides) - {"dropout", "attn_dropout"}
    if bad:
        raise UserError(f"from_pretrained can only override dropout and attn_dropout; got {', '.join(sorted(bad))}")
    model_args, state = load_hf_gpt2(name_or_dir)
    model_args.update(overrides)
    model = GPT(GPTConfig(**model_args))
    model.load_state_dict(state)
    return model.eval()
