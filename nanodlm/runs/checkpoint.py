"""Checkpoints: weights plus JSON-able metadata, written atomically, loaded with ``weights_only=True``.

Layout of ``ckpt.pt`` (a plain dict of tensors and primitives, so the safe unpickler accepts it):
``model`` (state dict), ``optimizer``, ``scaler`` (optional) and ``meta`` (JSON-able: format version,
model_args, config, iter_num, best_val_loss, dataset meta, tokenizer). No generator state is saved: training
seeds every draw from (seed, rank, iteration), so ``meta["rng"]`` is only a note saying so and a resumed run
replays the same batches and noise. ``meta`` is also written beside it as ``ckpt.json`` for people and tools.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..core.fileio import atomic_write
from ..data.tokenizers import load_tokenizer
from ..model.model import GPT, GPTConfig
from ..model.subtokens import permutation_problem

FORMAT_VERSION = 1
_PREFIXES = ("_orig_mod.", "module.")  # added by torch.compile and DDP
PRIME_PERM = "transformer.wse.perm"  # a prime model's token shuffle (subtokens.SubTokenEmbedding), saved as a buffer


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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", resume: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against its schema (``check_schema``) and patched for older formats.
    ``resume``: it must also hold the training state a resumed run continues from (``meta.iter_num``)."""
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
    check_schema(ckpt, path)
    if resume and "iter_num" not in ckpt["meta"]:
        raise UserError(f"checkpoint {path} has no meta.iter_num, so a resume cannot know where its schedule is: "
                        "start a new run from it (--init_from=scratch into another --out_dir)")
    ckpt["model"] = clean_state_dict(ckpt["model"])
    meta = ckpt["meta"]
    # patch keys that older checkpoints lack, so they keep loading
    meta.setdefault("format_version", 0)
    meta.setdefault("best_val_loss", float("inf"))
    model_args = meta.setdefault("model_args", {})
    model_args.setdefault("model_type", "gpt2")
    model_args.setdefault("pos_emb", "learned")
    model_args.setdefault("bias", True)  # GPTConfig's default before model keys had one home
    model_args.setdefault("qk_norm", False)
    model_args.setdefault("diffusion_block", 0)
    if model_args.get("prime_bits"):  # prime models saved before prime_embed existed embedded the digit sum alone
        model_args.setdefault("prime_embed", "sum")
    return ckpt


def check_schema(ckpt: Any, path: Path) -> None:
    """The shape of a loaded checkpoint, checked once here so that every reader can trust it: a dict with ``model``
    (a dict of tensors) and ``meta`` (a dict; ``model_args`` a dict, ``iter_num`` an int >= 0, ``best_val_loss``
    a number, when present); ``optimizer`` and ``scaler`` dicts when present (a resume needs ``optimizer``)."""
    def bad(what: str) -> UserError:
        return UserError(f"checkpoint {path} is not a nanodlm checkpoint ({what}); it was altered or truncated: "
                         "use another checkpoint")

    if not isinstance(ckpt, dict):
        raise bad(f"it holds a {type(ckpt).__name__}, not a dict")
    for key in ("model", "meta"):
        if key not in ckpt:
            raise bad(f"missing '{key}'")
        if not isinstance(ckpt[key], dict):
            raise bad(f"'{key}' is a {type(ckpt[key]).__name__}, not a dict")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items()):
        raise bad("'model' is not a dict of named tensors")
    for key in ("optimizer", "scaler"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise bad(f"'{key}' is a {type(ckpt[key]).__name__}, not a dict")
    meta = ckpt["meta"]
    if not isinstance(meta.get("model_args", {}), dict):
        raise bad("meta.model_args is not a dict")
    iter_num = meta.get("iter_num", 0)
    if isinstance(iter_num, bool) or not isinstance(iter_num, int) or iter_num < 0:
        raise bad(f"meta.iter_num is {iter_num!r}, not a count of iterations")
    loss = meta.get("best_val_loss", 0.0)
    if isinstance(loss, bool) or not isinstance(loss, int | float):
        raise bad(f"meta.best_val_loss is {loss!r}, not a number")
    for key in ("config", "dataset_meta"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise bad(f"meta.{key} is not a dict")


MAX_MEMORY_FRACTION = 0.5  # a model or a step estimated to need over half the memory is refused


def memory_bytes() -> int:
    """This machine's memory (the larger of RAM and the first GPU's), for the size checks."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not Linux/macOS: assume 1 TB, still stops the absurd
        memory = 2**40
    if torch.cuda.is_available():
        memory = max(memory, torch.cuda.get_device_properties(0).total_memory)
    return memory


def check_model_size(config: GPTConfig, path: str | Path, batch_size: int = 0) -> None:
    """Refuse, before allocating anything, a model (and for training, ``batch_size`` > 0, a training step) that
    cannot fit in this machine's memory: an absurd ``--n_embd=1048576`` or ``--batch_size=10000000`` would
    otherwise try to allocate terabytes. A lower estimate, one line with it; float32 throughout."""
    C, L, T, V, H = config.n_embd, config.n_layer, config.block_size, config.padded_vocab_size, config.n_head
    params = L * 12 * C * C + V * C + T * C  # blocks, embeddings, positions
    weights = (16 if batch_size else 4) * params  # training: + gradients and AdamW's two moments
    # activations kept for the backward pass, per token: ~16 C per layer, the attention row (H T), the logits
    activations = 4 * batch_size * T * (L * (16 * C + H * T) + 2 * V)
    memory = memory_bytes()
    if weights + activations <= MAX_MEMORY_FRACTION * memory:
        return
    where = "the configured model" if str(path) == "scratch" else f"the model of {path}"
    if weights >= activations:
        what = "float32 weights, gradients and AdamW moments" if batch_size else "float32 weights"
        raise UserError(f"{where} (n_layer={L}, n_embd={C}, vocab {config.vocab_size}) has about {params:.2g} "
                        f"parameters ({weights / 1e9:,.1f} GB for its {what}) and this machine has "
                        f"{memory / 1e9:,.0f} GB: choose a smaller n_embd or n_layer")
    raise UserError(f"a training step of batch_size={batch_size} x block_size={T} on {where} needs about "
                    f"{activations / 1e9:,.1f} GB of activations and this machine has {memory / 1e9:,.0f} GB: "
                    "lower batch_size (gradient_accumulation_steps keeps the tokens per iteration)")


def check_generation_size(config: Any, num_samples: int, length: int) -> None:
    """Refuse a generation whose canvas and logits cannot fit in memory (``--num_samples=100000000``): one line.
    ``config``: a GPTConfig (a test's fake model may carry fewer fields: they count as 0)."""
    width = getattr(config, "padded_vocab_size", 0) + 16 * getattr(config, "n_embd", 0)
    need = 4 * num_samples * max(length, 1) * width
    memory = memory_bytes()
    if need > MAX_MEMORY_FRACTION * memory:
        raise UserError(f"{num_samples:,} samples of {length:,} tokens need about {need / 1e9:,.1f} GB for their "
                        f"logits and this machine has {memory / 1e9:,.0f} GB: lower --num_samples or the length")


def build_model(model_args: dict[str, Any], state: dict[str, torch.Tensor] | None, path: str | Path,
                batch_size: int = 0) -> GPT:
    """The GPT that ``model_args`` describe, with ``state`` loaded; a one-line UserError when they disagree or
    when the model (for training, ``batch_size`` > 0: and its training step) would not fit in memory."""
    try:
        config = GPTConfig(**model_args)
    except (TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path} has invalid model_args ({e}); it was altered or is not a nanodlm "
                        "checkpoint") from None
    check_model_size(config, path, batch_size)
    try:
        model = GPT(config)
    except (TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path} has invalid model_args ({e}); it was altered or is not a nanodlm "
                        "checkpoint") from None
    if state is not None and config.prime_bits:  # the shuffle defines the code: its absence is not a shape error
        perm = state.get(PRIME_PERM)
        problem = "it is missing" if perm is None else permutation_problem(perm, config.vocab_size - 1)
        if problem:
            raise UserError(f"checkpoint {path}: its sub-token shuffle {PRIME_PERM} is invalid ({problem}); the file "
                            "was altered or is from another version: use another checkpoint or retrain")
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # missing / unexpected keys or shape mismatches, one per line
            details = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip())
            raise UserError(f"checkpoint {path}: its weights do not match its metadata ({details[:200]}); the file "
                            "was altered or mixed from two runs: use another checkpoint") from None
    return model


def find_checkpoint(out_dir: str | Path, which: str = "best") -> Path:
    """``best`` falls back to ``last`` (``ckpt.pt``) when no best checkpoint was written; a name ending in .pt is
    that file of the run."""
    if not str(out_dir).strip():
        raise UserError("--out_dir is empty: name the training run's folder")
    out = Path(out_dir)
    if which not in ("best", "last") and not (which.endswith(".pt") and "/" not in which):
        raise UserError(f"--ckpt must be best or last; got {which!r}")
    if not out.is_dir():
        raise UserError(f"out_dir {out} does not exist: train a model first or check --out_dir")
    if which.endswith(".pt"):  # a named checkpoint in the run (bench epochs' best_dev.pt)
        if not (out / which).is_file():
            raise UserError(f"{out / which} does not exist: train the run first")
        return out / which
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
