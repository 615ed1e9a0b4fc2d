"""Typed, validated configuration: dataclass defaults < config file < ``--key=value`` flags.

A config file is nanoGPT-style Python made of literal assignments (``n_layer = 4``); it is parsed
with ``ast`` and never executed. JSON files work too. Unknown keys and wrong types are a one-line
error that names the key.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Collection
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import UserError, check_finite
from ..core.fileio import parse_json
from ..diffusion.diffusion import MODEL_OBJECTIVES
from ..model.config import ModelArgs
from .distributed import BACKENDS, DTYPES

T = TypeVar("T")
PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"  # package data (configs/ in the repo links here)
MAX_LITERAL = 1000  # characters of a --key=value value parsed as a Python literal


@dataclass
class TrainConfig(ModelArgs):
    """Every ``nanodlm train`` key. The model keys (model_type, block_size, n_layer, n_head, n_embd, dropout, bias,
    pos_emb, qk_norm, diffusion_block) are inherited from ``model.ModelArgs``, which declares and checks them."""

    # I/O
    out_dir: str = "out"  # where checkpoints, metrics.jsonl and loss.png go
    eval_interval: int = 2000  # iterations between evals (and checkpoint saves)
    log_interval: int = 1  # iterations between logged training losses
    eval_iters: int = 200  # batches per split at each eval
    eval_only: bool = False  # evaluate once and exit
    always_save_checkpoint: bool = True  # save ckpt.pt at every eval, not only when val loss improves
    init_from: str = "scratch"  # scratch | resume | gpt2 | gpt2-medium | gpt2-large | gpt2-xl | AR out_dir | HF dir
    overwrite: bool = False  # scratch run into an out_dir holding a trained model: replace it (else an error)
    # logging
    wandb_log: bool = False  # log to Weights & Biases (extra wandb)
    wandb_project: str = "nanodlm"  # W&B project
    wandb_run_name: str = "run"  # W&B run name
    progress: bool = True  # tqdm progress bar
    plot: bool = True  # loss-curve PNG in out_dir at each eval (needs matplotlib)
    # data
    data_dir: str = "data"  # folder holding prepared datasets
    dataset: str = "shakespeare_char"  # a folder in data_dir made by `nanodlm prepare`
    gradient_accumulation_steps: int = 1  # global value; divided by the number of DDP processes
    batch_size: int = 12  # sequences per micro-step
    # diffusion objective (see nanodlm/diffusion/diffusion.py)
    objective: str = "repair"  # repair (default) | mdlm | seed (the spec's) | prime (prime.py) | tidar | fim (gpt2)
    fim_rate: float | None = None  # objective=fim: share of windows laid out prefix/suffix/middle (None = 0.5)
    fim_spm_rate: float | None = None  # objective=fim: share of those in SPM order, the rest PSM (None = 0)
    tidar_alpha: float = 1.0  # objective=tidar: loss (alpha * L_AR + L_draft) / (1 + alpha)
    penalty_keep_mask: float = 0.25  # seed objective: weight of the loss at positions that stay [MASK]
    penalty_mask_correct: float = 0.5  # seed/repair: weight of flagging a correct visible token as [MASK]
    mdlm_eps: float = 1e-3  # mdlm/repair train on t ~ U(mdlm_eps, mdlm_t_max); eval always integrates over (0, 1)
    mdlm_t_max: float = 1.0  # < 1: BD3-LM's clipped schedule (with a larger mdlm_eps), training only
    repair_rate_max: float = 0.1  # repair/seed: most of the visible tokens swapped for wrong ones
    copy_weight: float = 0.1  # repair: weight of the "keep this token" loss on clean visible positions
    # a regularizer for many epochs of little data (arXiv 2510.04071): every next token is still predicted
    input_mask_rate: float = 0.0  # gpt2: share of input tokens replaced by a [MASK] embedding in training (0 = off)
    attn_anneal_iters: int = 0  # diffusion: attention goes from causal (iter 0) to full over these iters (DiffuLLaMA)
    # optimizer
    learning_rate: float = 6e-4  # peak learning rate (AdamW)
    max_iters: int = 600000  # total training iterations
    weight_decay: float = 1e-1  # AdamW weight decay on matrices
    beta1: float = 0.9  # AdamW beta1, in [0, 1)
    beta2: float = 0.95  # AdamW beta2, in [0, 1)
    grad_clip: float = 1.0  # 0 disables
    # learning-rate schedule: linear warmup, cosine decay to min_lr
    decay_lr: bool = True  # False: constant learning_rate
    warmup_iters: int = 2000  # linear warmup iterations
    lr_decay_iters: int = 600000  # cosine decay reaches min_lr here
    min_lr: float = 6e-5  # learning rate after the decay
    # system
    backend: str = "auto"  # DDP backend: auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto (bf16 on capable CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    compile: bool = False  # torch.compile the model (GPU)
    seed: int = 1337  # fixes the initial weights, batches and noise: same seed, same run
    threads: int = 0  # torch intra-op CPU threads; 0 = torch's default (one per core; oversubscribes a busy machine)

    def __post_init__(self) -> None:
        check_finite(self)
        try:
            super().__post_init__()  # the model keys
        except ValueError as e:
            raise UserError(str(e)) from None
        if not self.init_from:  # scratch | resume | a source of weights, checked when training starts (adapt.py)
            raise UserError("config key 'init_from' must be scratch, resume, a GPT-2 name or a directory; got ''")
        if self.attn_anneal_iters < 0 or (self.attn_anneal_iters and self.model_type != "diffusion"):
            raise UserError(f"attn_anneal_iters={self.attn_anneal_iters} needs model_type=diffusion and a size >= 0")
        choices = {
            "objective": MODEL_OBJECTIVES,
            "backend": BACKENDS,
            "dtype": DTYPES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UserError(f"config key '{key}' must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        if self.objective == "tidar":
            if self.model_type != "gpt2":
                raise UserError("objective=tidar trains a gpt2 model that also drafts (tidar.py): set model_type=gpt2")
            self.draft_len = self.draft_len or 8
            if self.draft_len >= self.block_size:  # a pass holds at least one token of text beside the k masks
                raise UserError(f"draft_len={self.draft_len} must be below block_size={self.block_size}: lower "
                                "--draft_len (8 is TiDAR's)")
        elif self.draft_len:
            raise UserError(f"draft_len={self.draft_len} needs objective=tidar (or set draft_len=0)")
        check_fim(self)
        if not 0.0 <= self.input_mask_rate < 1.0:
            raise UserError(f"config key 'input_mask_rate' must be in [0, 1); got {self.input_mask_rate}")
        if self.input_mask_rate and (self.model_type != "gpt2" or self.objective in ("tidar", "fim")):
            raise UserError(f"input_mask_rate={self.input_mask_rate} is for plain gpt2 models (a diffusion model masks "
                            "its inputs already): set model_type=gpt2 without objective=tidar/fim, or "
                            "input_mask_rate=0")
        if self.objective == "prime":  # partial masking (prime.py); the model keys checked the model type
            if self.model_type != "diffusion":
                raise UserError("objective=prime trains a diffusion model (partial masking): set model_type=diffusion")
            if self.diffusion_block:
                raise UserError("objective=prime is bidirectional (block diffusion over sub-tokens is not built): set "
                                "diffusion_block=0")
            if self.init_from not in ("scratch", "resume"):
                raise UserError("objective=prime trains from scratch (sub-token embeddings have no pretrained source): "
                                "use init_from=scratch")
            self.prime_base = self.prime_base if self.prime_bits or self.prime_base else 2
        elif self.prime_bits or self.prime_base or self.prime_embed != "candidates":
            raise UserError(f"prime_bits={self.prime_bits}, prime_base={self.prime_base}, prime_embed="
                            f"{self.prime_embed} need objective=prime (partial masking); got "
                            f"objective={self.objective}")
        positive = ("batch_size", "eval_interval", "eval_iters", "log_interval", "gradient_accumulation_steps")
        for key in positive:
            if getattr(self, key) <= 0:
                raise UserError(f"config key '{key}' must be positive; got {getattr(self, key)}")
        if self.max_iters < 0:
            raise UserError(f"config key 'max_iters' must be >= 0; got {self.max_iters}")
        if not self.out_dir.strip():
            raise UserError("config key 'out_dir' is empty: name a folder for the run (e.g. --out_dir=out)")
        if not 0.0 < self.mdlm_eps < self.mdlm_t_max <= 1.0:
            raise UserError(f"need 0 < mdlm_eps < mdlm_t_max <= 1; got {self.mdlm_eps} and {self.mdlm_t_max}")
        check_training_ranges(self)


def check_fim(cfg: TrainConfig) -> None:
    """objective=fim is for gpt2 models; its rates are set only with it (then defaulted: 0.5 and 0)."""
    if cfg.objective != "fim":
        for key in ("fim_rate", "fim_spm_rate"):
            if getattr(cfg, key) is not None:
                raise UserError(f"{key}={getattr(cfg, key)} needs objective=fim (a gpt2 model trained to fill in the "
                                "middle); drop it, or set objective=fim")
        return
    if cfg.model_type != "gpt2":
        raise UserError("objective=fim trains a gpt2 model to fill in the middle (a diffusion model infills "
                        "already): set model_type=gpt2, or choose a diffusion objective")
    cfg.fim_rate = 0.5 if cfg.fim_rate is None else cfg.fim_rate
    cfg.fim_spm_rate = 0.0 if cfg.fim_spm_rate is None else cfg.fim_spm_rate
    for key in ("fim_rate", "fim_spm_rate"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise UserError(f"config key '{key}' must be in [0, 1]; got {getattr(cfg, key)}")


def check_training_ranges(cfg: TrainConfig) -> None:
    """Optimizer, schedule and loss-weight keys: values AdamW would reject later, or accept and train nonsense."""
    non_negative = ("learning_rate", "min_lr", "weight_decay", "grad_clip", "warmup_iters", "lr_decay_iters",
                    "penalty_keep_mask", "penalty_mask_correct", "copy_weight", "threads", "tidar_alpha")
    for key in non_negative:
        value = getattr(cfg, key)
        if not value >= 0:  # also catches nan
            raise UserError(f"config key '{key}' must be >= 0; got {value}")
    for key in ("beta1", "beta2", "repair_rate_max"):
        value = getattr(cfg, key)
        if not 0.0 <= value < 1.0:
            raise UserError(f"config key '{key}' must be in [0, 1); got {value}")
    if cfg.decay_lr:  # a schedule that contradicts itself trains on a learning rate nobody chose
        if cfg.lr_decay_iters == 0:
            raise UserError("lr_decay_iters=0 with decay_lr=True decays to min_lr at once: set lr_decay_iters (about "
                            "max_iters), or decay_lr=False for a constant learning_rate")
        if cfg.warmup_iters > cfg.lr_decay_iters:
            raise UserError(f"warmup_iters={cfg.warmup_iters} is past lr_decay_iters={cfg.lr_decay_iters}: the warmup "
                            "would never finish; lower warmup_iters or raise lr_decay_iters")
        if cfg.min_lr > cfg.learning_rate:
            raise UserError(f"min_lr={cfg.min_lr} is above learning_rate={cfg.learning_rate}: the decay would raise "
                            "the learning rate; lower min_lr (nanoGPT: learning_rate / 10)")


def _coerce(key: str, value: Any, annotation: Any, text: bool = True) -> Any:
    """Check (and for strings from the command line, convert) ``value`` against a field's type. ``text=False``
    (JSON values, the web demo's requests): a string is a string, never a number, a bool or null."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (text and isinstance(value, str) and value.lower() == "none"):
            return None
        hint = args[0]
    if not text and isinstance(value, str) and hint is not str:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(hint, hint.__name__)
        raise UserError(f"key '{key}' expects {kind}{' or null' if hint is not annotation else ''}; got the "
                        f"string {short(value)}: send the JSON value itself, not a string")
    if isinstance(value, str) and hint is not str:
        text = value.strip()
        if hint is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise UserError(f"config key '{key}' expects true/false; got {short(value)}")
        try:
            if len(text) > MAX_LITERAL:  # no number is that long; the parser would only burn time and memory
                raise ValueError(text[:20])
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):  # nested or huge text too
            raise UserError(f"config key '{key}' expects {hint.__name__}; got {short(value)}") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is bool and not isinstance(value, bool):
        raise UserError(f"config key '{key}' expects true/false; got {short(value)}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"config key '{key}' expects int; got {short(value)}")
    if not isinstance(value, hint):
        raise UserError(f"config key '{key}' expects {hint.__name__}; got {short(value)}")
    if hint is float and not math.isfinite(value):  # nan and inf pass every `x < 0` check written after this
        raise UserError(f"config key '{key}' must be a finite number; got {value!r}")
    return value


def short(value: Any) -> str:
    """``repr(value)`` cut to one readable line (a 64 KB string in an error message helps nobody)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"


def read_config_file(path: str) -> dict[str, Any]:
    """Literal assignments from a nanoGPT-style ``.py`` config (or a ``.json`` object)."""
    p = Path(path)
    if not p.exists() and (PRESET_DIR / f"{path}.py").exists():
        p = PRESET_DIR / f"{path}.py"
    if not p.exists():
        raise UserError(f"config file '{path}' not found; presets: {', '.join(list_presets()) or 'none'}")
    if p.is_dir():
        raise UserError(f"config file '{path}' is a folder; give a .py or .json file of `key = value` lines")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"config file '{path}' is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
                        ) from None
    except OSError as e:
        raise UserError(f"cannot read config file '{path}' ({e.strerror or type(e).__name__})") from None
    if p.suffix == ".json":
        return parse_json(text, f"config file '{path}'", dict, "; write one object of keys")
    try:
        tree = ast.parse(text, filename=str(p))
    except SyntaxError as e:
        raise UserError(f"config file '{path}' line {e.lineno}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # a NUL byte; nesting deeper than the parser goes
        raise UserError(f"config file '{path}' is not a Python config ({type(e).__name__}); write `key = value` "
                        "lines") from None
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise UserError(f"config file '{path}' line {node.lineno}: only `key = literal` assignments are allowed")
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            raise UserError(f"config file '{path}' line {node.lineno}: the value must be a literal") from None
    return out


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.py")) if PRESET_DIR.exists() else []


def build_config(cls: type[T], values: dict[str, Any], text: bool = True) -> T:
    """``cls`` from {key: value}: strings converted as command-line text (``text=False``: JSON values, typed)."""
    known = {f.name: f for f in fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"unknown config key '{key}' (valid keys: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(key, value, hints[key], text)
    return cls(**kwargs)


def build_configs(values: dict[str, Any], *classes: type, text: bool = True) -> list[Any]:
    """Build every class from ``values``, each key going to the first class that has it (so a command's own
    key shadows a shared one of the same name); a key no class has is an error listing them all. ``text``: as
    ``build_config``."""
    groups: list[dict[str, Any]] = [{} for _ in classes]
    names = [{f.name for f in fields(cls) if f.init} for cls in classes]
    for key, value in values.items():
        owner = next((i for i, n in enumerate(names) if key in n), None)
        if owner is None:
            valid = sorted(set().union(*names))
            raise UserError(f"unknown config key '{key}' (valid keys: {', '.join(valid)})")
        groups[owner][key] = value
    return [build_config(cls, group, text) for cls, group in zip(classes, groups)]


def parse_overrides(args: list[str]) -> tuple[str | None, dict[str, str]]:
    """``[CONFIG_FILE] [--key=value ...]`` -> (config file, {key: raw value})."""
    config_file = None
    overrides: dict[str, str] = {}
    args = list(args)
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            if not sep:  # `--key value` works too, and a bare `--flag` means true
                value = "true" if not args or args[0].startswith("--") else args.pop(0)
            overrides[key.replace("-", "_")] = value
        elif config_file is None:
            config_file = arg
        else:
            raise UserError(f"unexpected argument '{arg}': give one config file, then --key=value flags")
    return config_file, overrides


def load_config(cls: type[T], args: list[str]) -> T:
    config_file, overrides = parse_overrides(args)
    values: dict[str, Any] = read_config_file(config_file) if config_file else {}
    values.update(overrides)
    return build_config(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def key_help(cls: type) -> dict[str, str]:
    """{field: the ``# comment`` that ends its line in the class source}: the one-line description of a key."""
    out: dict[str, str] = {}
    for klass in cls.__mro__:  # inherited keys too (TrainConfig's model keys live in ModelArgs)
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # no source (a builtin, a frozen build): keys without descriptions
            continue
        for line in source.splitlines():
            m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.*)$", line)
            if m:
                out.setdefault(m.group(1), m.group(2).strip())
    return out


def print_keys(cls: type, title: str | None = None, skip: Collection[str] = ()) -> None:
    """``--key=default  # description`` for each field of a config class (but ``skip``), under a title line."""
    if title:
        print(title)
    helps = key_help(cls)
    for f in fields(cls):
        if f.init and f.name not in skip:
            default = f.default if f.default is not MISSING else "(required)"
            note = f"  # {helps[f.name]}" if helps.get(f.name) else ""
            print(f"  --{f.name}={default!r}{note}")
