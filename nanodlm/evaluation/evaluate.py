"""``nanodlm eval``: the held-out likelihood of a checkpoint, comparable across model types and runs.

- gpt2: next-token cross-entropy (nats/token).
- diffusion: the absorbing-mask NELBO, an upper bound on -log p(x) / T (continuous time, SUBS
  parameterisation: Sahoo et al. 2024, MDLM, arXiv:2406.07524; Shi et al. 2024, MD4, arXiv:2406.04329; over
  sub-tokens for a prime model, prime.py, still per token: nats per character for a char vocabulary),
  plus the denoising diagnostics of ``diagnostics.diagnostics`` and the unigram entropy of the split
  (``textstats.unigram_entropy``).

Both score the same deterministic, evenly spaced windows of the split (``eval_windows``), so every run and
every model sees the same text. A window holds T + 1 tokens (T = the model's block_size): the AR model
predicts tokens 1..T from their left context, the diffusion model scores tokens 0..T-1 jointly. Each
side scores T tokens of the same passage, each within its own window of T positions, which is the
standard comparison (MDLM reports AR perplexity next to the diffusion bound the same way). The diffusion
number is an upper bound on that model's true NLL: the model is at least as good as it reports.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..core.errors import UserError, check_finite
from ..core.fileio import check_output_path
from ..core.report import print_table, write_json
from ..data.dataset import SPLITS, load_meta, open_split
from ..diffusion.diagnostics import diagnostics, meaning
from ..diffusion.diffusion import mean_and_stderr, nelbo
from ..diffusion.tidar import two_stream_logits
from ..runs.checkpoint import load_model
from ..sampling.ar_sampling import inference_mode, model_device
from ..training.config import load_config, print_keys
from ..training.distributed import resolve_device
from .textstats import unigram_entropy

LN2 = math.log(2.0)


@dataclass
class EvalConfig:
    out_dir: str = "out"  # the training run to evaluate
    ckpt: str = "best"  # best | last
    split: str = "val"  # train | val
    num_batches: int = 20  # windows = num_batches * batch_size, capped at the disjoint windows the split holds
    batch_size: int | None = None  # default: the checkpoint's training batch_size
    data_dir: str | None = None  # default: the checkpoint's data_dir
    dataset: str | None = None  # default: the checkpoint's dataset
    n_draws: int = 4  # diffusion: stratified (t, mask) draws per window
    seed: int = 1337  # fixes the diffusion masks: same seed, same numbers
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    json: str | None = None  # also write the results to this file
    threads: int = 0  # torch CPU threads (0 = torch's default, one per core)

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf floats, seeds outside torch's range
        if self.split not in SPLITS:
            raise UserError(f"--split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if self.ckpt not in ("best", "last"):
            raise UserError(f"--ckpt must be best or last; got {self.ckpt!r}")
        for key in ("num_batches", "n_draws"):
            if getattr(self, key) < 1:
                raise UserError(f"--{key} must be >= 1; got {getattr(self, key)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch_size must be >= 1; got {self.batch_size}")
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0 (0 = torch's default); got {self.threads}")
        if self.json is not None:
            check_output_path(self.json, "--json", make_folder=True)


# --- the windows -------------------------------------------------------------------------------------


def eval_windows(data: np.ndarray, block_size: int, num_windows: int) -> torch.Tensor:
    """(num_windows, block_size + 1) int64: windows at evenly spaced offsets from the start to the end of data.

    No randomness, so every run and every model sees the same text. Windows are disjoint while
    num_windows <= len(data) // (block_size + 1); beyond that they overlap (and the stderr understates).
    """
    if block_size < 1 or num_windows < 1:
        raise UserError(f"block_size and num_windows must be positive, got {block_size} and {num_windows}")
    width = block_size + 1
    if len(data) < width:
        raise UserError(f"the split has {len(data)} tokens but a window needs block_size + 1 = {width}; "
                        "evaluate on more text or a model with a smaller block_size")
    starts = np.linspace(0, len(data) - width, num_windows).round().astype(np.int64)  # (N,)
    rows = starts[:, None] + np.arange(width)  # (N, T+1) indices into data
    return torch.from_numpy(np.asarray(data[rows]).astype(np.int64))


# --- the two likelihoods ----------------------------------------------------------------------------


@torch.no_grad()
def ar_cross_entropy(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Next-token CE (nats/token) of an AR model on windows (N, T+1): tokens 1..T given their left context.

    Returns ``loss`` (mean over all N*T tokens), ``stderr`` (of the per-window means, which are i.i.d.
    across disjoint windows) and ``tokens``. The model is called as ``logits, _ = model(x, all_logits=True)``
    with logits (B, T, V); the CE is computed in fp32. A FIM model (``fim_sentinels``) is scored left to right
    with its sentinels ruled out: plain text, as it writes plain text.
    """
    device = model_device(model)
    text_vocab = getattr(getattr(model, "config", None), "text_vocab_size", None)
    per_window = []
    with inference_mode(model):
        for i in range(0, windows.size(0), batch_size):
            w = windows[i:i + batch_size].to(device)  # (B, T+1)
            x, y = w[:, :-1], w[:, 1:]  # (B, T) inputs and next-token targets
            logits, _ = model(x, all_logits=True)  # (B, T, V)
            logits = logits[..., :text_vocab] if text_vocab else logits
            ce = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (B, T)
            per_window.append(ce.mean(dim=1).cpu())
    loss, stderr = mean_and_stderr(torch.cat(per_window))  # equal-length windows: window mean = token mean
    return {"loss": loss, "stderr": stderr, "tokens": int(windows.size(0) * (windows.size(1) - 1))}


@torch.no_grad()
def draft_cross_entropy(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> dict[str, float]:
    """A TiDAR model's draft loss (tidar.py): CE (nats/token) of its [MASK] blocks on windows[:, :T], each block
    of draft_len predicting its tokens from the text before it. Returns ``loss``, ``stderr`` (across windows)."""
    device = model_device(model)
    T = windows.size(1) - 1
    per_window = []
    with inference_mode(model):
        for i in range(0, windows.size(0), batch_size):
            x = windows[i:i + batch_size, :T].to(device)  # (B, T)
            _, drafts = two_stream_logits(model, x)  # (B, T, V)
            ce = F.cross_entropy(drafts.float().transpose(1, 2), x, reduction="none")  # (B, T)
            per_window.append(ce.mean(dim=1).cpu())
    loss, stderr = mean_and_stderr(torch.cat(per_window))
    return {"loss": loss, "stderr": stderr}


@torch.no_grad()
def diffusion_nelbo(model: torch.nn.Module, windows: torch.Tensor, batch_size: int, generator: torch.Generator,
                    n_draws: int = 4) -> dict[str, float]:
    """Absorbing-mask NELBO (nats/token) of a diffusion model on windows[:, :T] (tokens 0..T-1 jointly).

    ``diffusion.nelbo`` per batch: n_draws stratified times t per window (t_k = (k + u) / n_draws), each
    masking tokens with probability t, the [MASK] logit excluded (SUBS), weighted 1/t (Sahoo et al. 2024
    eq. 10 with alpha_t = 1 - t; Shi et al. 2024). Returns ``nelbo`` (mean), ``stderr`` (across windows,
    each window's draws averaged first) and ``tokens``. ``generator`` must live on the model's device.
    """
    device = model_device(model)
    T = windows.size(1) - 1
    mask_id = model.config.mask_token_id
    rows = []
    with inference_mode(model):
        for i in range(0, windows.size(0), batch_size):
            x = windows[i:i + batch_size, :T].to(device)  # (B, T): the same T tokens as the AR inputs
            rows.append(nelbo(model, x, mask_id, generator, n_draws).cpu())  # (B, n_draws)
    value, stderr = mean_and_stderr(torch.cat(rows))
    return {"nelbo": value, "stderr": stderr, "tokens": int(windows.size(0) * T)}


# --- one checkpoint ---------------------------------------------------------------------------------


def evaluate_checkpoint(cfg: EvalConfig) -> dict[str, Any]:
    """Load a checkpoint, score the split's evaluation windows, return a flat dict of numbers.

    gpt2: loss, stderr, bits_per_token, bits_per_char. diffusion: nelbo, stderr, bits_per_token,
    bits_per_char, unigram_entropy (nats) and the diagnostics averaged over batches. bits_per_char divides
    the total nats by the characters the scored tokens decode to (= bits_per_token for char tokenizers),
    which makes char and BPE models comparable. A fixed seed gives identical dicts on the same device.
    """
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, meta, tok = load_model(cfg.out_dir, cfg.ckpt, device)
    train_cfg = meta.get("config", {})
    data_dir = cfg.data_dir or train_cfg.get("data_dir", "data")
    dataset = cfg.dataset or train_cfg.get("dataset", "shakespeare_char")
    batch_size = cfg.batch_size or int(train_cfg.get("batch_size", 12))
    data = open_split(data_dir, dataset, cfg.split)
    T = model.config.block_size
    model_type = model.config.model_type
    data_vocab = model.config.text_vocab_size
    ds_meta = load_meta(data_dir, dataset)
    itos = getattr(tok, "itos", None)  # char models: the same size is not enough, the characters must match
    if ds_meta["vocab_size"] != data_vocab or ds_meta.get("itos", itos) != itos:
        raise UserError(f"dataset {dataset!r} ({ds_meta['vocab_size']} tokens) is not the vocabulary the model in "
                        f"{cfg.out_dir} was trained on ({data_vocab} tokens); pass the --dataset it was trained on")
    disjoint = max(1, len(data) // (T + 1))
    num_windows = min(cfg.num_batches * batch_size, disjoint)
    windows = eval_windows(data, T, num_windows)  # (N, T+1)
    work = "" if model_type == "gpt2" else f" x {cfg.n_draws} mask draws, then diagnostics"
    print(f"scoring {num_windows} windows of {T} tokens{work} on {device} (batch {batch_size}; fewer with "
          "--num_batches) ...", file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "out_dir": str(cfg.out_dir), "model_type": model_type,
        "objective": train_cfg.get("objective") if model_type == "diffusion" or model.config.draft_len
        or model.config.fim_sentinels else "ar",
        "iter_num": meta.get("iter_num"), "dataset": dataset, "split": cfg.split, "block_size": T,
        "num_windows": num_windows, "seed": cfg.seed,
    }
    if model.config.prime_bits:  # partial masking: the bound is over sub-tokens, reported per token all the same
        result.update(prime_base=model.config.prime_base, prime_bits=model.config.prime_bits)
    if model_type == "gpt2":
        scored = windows[:, 1:]  # AR targets
        out = ar_cross_entropy(model, windows, batch_size)
        mean = out["loss"]
        result.update(loss=mean, stderr=out["stderr"], tokens=out["tokens"])
        if model.config.draft_len:  # a TiDAR model: its draft stream too
            drafts = draft_cross_entropy(model, windows, batch_size)
            result.update(draft_loss=drafts["loss"], draft_stderr=drafts["stderr"], draft_len=model.config.draft_len)
    else:
        scored = windows[:, :T]
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        out = diffusion_nelbo(model, windows, batch_size, gen, cfg.n_draws)
        mean = out["nelbo"]
        result.update(nelbo=mean, stderr=out["stderr"], tokens=out["tokens"])
    chars = sum(len(tok.decode(row)) for row in scored)  # BPE: tokens decode to several characters
    result["bits_per_token"] = mean / LN2
    result["bits_per_char"] = mean * out["tokens"] / max(chars, 1) / LN2
    result["chars"] = chars
    if model_type == "diffusion":
        # a separate generator so the NELBO does not depend on whether diagnostics run
        diag_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        rows = []
        for i in range(0, num_windows, batch_size):
            rows.append(diagnostics(model, windows[i:i + batch_size, :T].to(device), model.config.mask_token_id,
                                    diag_gen))
        # nan (an empty position set) stays nan in the mean rather than being skipped silently
        result.update({k: sum(r[k] for r in rows) / len(rows) for k in rows[0]})
        result["unigram_entropy"] = unigram_entropy(data)
    return result


# --- CLI --------------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def print_result(result: dict[str, Any]) -> None:
    main_key = "loss" if result["model_type"] == "gpt2" else "nelbo"
    title = f"{result['out_dir']} · {result['model_type']} · {result['split']} · iter {result['iter_num']}"
    headline = f"{format_value(result[main_key])} ± {format_value(result['stderr'])}"
    what = ("an upper bound on -log p(x) per token (lower is better)" if main_key == "nelbo"
            else "next-token cross-entropy (lower is better)")
    rows = [[f"{main_key} (nats/token)", headline, what]]
    skip = {main_key, "stderr", "out_dir", "model_type", "split", "iter_num"}
    rows += [[key, format_value(value), meaning(key)] for key, value in result.items() if key not in skip]
    print_table(title, ["metric", "value", "meaning"], rows, left=(0, 2))


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: nanodlm eval --out_dir=DIR [--key=value ...]")
        print_keys(EvalConfig, "keys (defaults):")
        return 0
    cfg = load_config(EvalConfig, argv)
    result = evaluate_checkpoint(cfg)
    print_result(result)
    if cfg.json:
        write_json(cfg.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
