"""Checkpoints: weights plus JSON-able metadata, written atomically, loaded with ``weights_only=True``.

Layout of ``ckpt.pt`` (a plain dict of tensors and primitives, so the safe unpickler accepts it):
``model`` (state dict), ``optimizer``, ``scaler`` (optional) and ``meta`` (JSON-able: format version,
model_args, config, iter_num, best_val_loss, dataset meta, tokenizer). No generator state is saved: training
seeds every draw from (seed, rank, iteration), so ``meta["rng"]`` is only a note saying so and a resumed run
replays the same batches and noise. ``meta`` is also written beside it as ``ckpt.json`` for people and tools.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .data import load_tokenizer
from .errors import UserError
from .fileio import atomic_write
from .model import GPT, GPTConfig

FORMAT_VERSION = 1
_PREFIXES = ("_orig_mod.", "module.")  # added by torch.compile and DDP


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        # in any order and nesting: DDP(torch.compile(m)) gives "module._orig_mod."
        while key.startswith(_PREFIXES):
            key = key[len(next(p for p in _PREFIXES if key.startswith(p))):]
        out[key] = value
    return out


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    path = Path(path)
    checkpoint = dict(checkpoint)
    checkpoint["model"] = clean_state_dict(checkpoint["model"])
    checkpoint.setdefault("meta", {})["format_version"] = FORMAT_VERSION
    atomic_write(path, lambda f: torch.save(checkpoint, f))
    meta_text = json.dumps(checkpoint["meta"], indent=2, default=str).encode()
    atomic_write(path.with_suffix(".json"), meta_text)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: train a model first or check --out_dir")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, foreign or tampered files all end here
        text = str(e).strip()
        if "Weights only load failed" in text:  # torch's long explanation: it is not a plain tensor dict
            why = "it is not a torch file of plain tensors, or it is truncated"
        else:
            why = text.splitlines()[0].split(". ")[0][:160] if text else type(e).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a nanodlm checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise UserError(f"checkpoint {path} is not a nanodlm checkpoint (missing 'model' or 'meta')")
    ckpt["model"] = clean_state_dict(ckpt["model"])
    meta = ckpt["meta"]
    # patch keys that older checkpoints lack, so they keep loading
    meta.setdefault("format_version", 0)
    model_args = meta.setdefault("model_args", {})
    model_args.setdefault("model_type", "gpt2")
    model_args.setdefault("pos_emb", "learned")
    model_args.setdefault("bias", True)  # GPTConfig's default before model keys had one home
    model_args.setdefault("qk_norm", False)
    model_args.setdefault("diffusion_block", 0)
    return ckpt


def build_model(model_args: dict[str, Any], state: dict[str, torch.Tensor] | None, path: str | Path) -> GPT:
    """The GPT that ``model_args`` describe, with ``state`` loaded; a one-line UserError when they disagree."""
    try:
        model = GPT(GPTConfig(**model_args))
    except (TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path} has invalid model_args ({e}); it was altered or is not a nanodlm "
                        "checkpoint") from None
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # missing / unexpected keys or shape mismatches, one per line
            details = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip())
            raise UserError(f"checkpoint {path}: its weights do not match its metadata ({details[:200]}); the file "
                            "was altered or mixed from two runs: use another checkpoint") from None
    return model


def find_checkpoint(out_dir: str | Path, which: str = "best") -> Path:
    """``best`` falls back to ``last`` (``ckpt.pt``) when no best checkpoint was written."""
    out = Path(out_dir)
    if which not in ("best", "last"):
        raise UserError(f"--ckpt must be best or last; got {which!r}")
    if not out.is_dir():
        raise UserError(f"out_dir {out} does not exist: train a model first or check --out_dir")
    best, last = out / "best.pt", out / "ckpt.pt"
    if which == "best" and best.exists():
        return best
    return last


def load_model(out_dir: str | Path, which: str = "best", device: str = "cpu"):
    """(model in eval mode on ``device``, checkpoint meta, tokenizer) from a training run's out_dir."""
    path = find_checkpoint(out_dir, which)
    ckpt = load_checkpoint(path, device)
    state, meta = ckpt["model"], ckpt["meta"]
    model = build_model(meta["model_args"], state, path)
    model.to(device).eval()
    tok_meta = dict(meta.get("dataset_meta", {}))
    tok_meta.update(tokenizer=meta.get("tokenizer", tok_meta.get("tokenizer")), itos=meta.get("itos"))
    return model, meta, load_tokenizer(tok_meta)
