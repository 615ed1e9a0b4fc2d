"""Start training from trained weights: ``init_from = <AR out_dir> | gpt2* | <Hugging Face GPT-2 dir>``.

With ``model_type=gpt2`` this is fine-tuning (nanoGPT's ``init_from=gpt2``). With ``model_type=diffusion`` it is
AR -> diffusion adaptation (DiffuGPT / DiffuLLaMA, Gong et al. 2024, arXiv:2410.17891):
- the architecture (layers, heads, width, biases, positions, activation) is the source's; ``block_size`` may be
  smaller than the source's (learned positions are cropped, as nanoGPT's ``crop_block_size``);
- the vocabulary grows by ``[MASK]`` at id V (= the source's vocabulary size, so mask id = vocab_size - 1 of the
  diffusion model): one new row of the tied embedding / output table, set to the mean of the V real rows
  (the padded table grows only if V + 1 crosses a multiple of 64; for GPT-2, 50,258 still pads to 50,304);
- ``shift`` defaults to on, so the pretrained head keeps predicting the next token (see model.py);
- a learned-position source gets rotary attention on top (``pos_emb=learned_rope``): the AR model found where
  keys are from its causal mask, and its absolute positions alone do not tell full attention which key is the
  neighbour; without rope the adapted model fell to a bigram predictor (masked CE 2.64 vs 2.04 with it after
  200 iterations on shakespeare_char, 4L/128d); ``--pos_emb=learned`` keeps the source's positions only (DiffuGPT),
  the one choice whose adapted model starts as exactly the AR model under a causal mask;
- attention is annealed from causal to full by train.py (``attn_anneal_iters``).
Block diffusion (``diffusion_block > 0``) adapts the same way; block-causal is one step from causal.
The optimizer starts fresh at iteration 0; the source is never modified.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import UserError
from ..model.model import GPTConfig
from ..runs.checkpoint import find_checkpoint, load_checkpoint
from ..runs.pretrained import GPT2_SIZES, is_init_source, is_pretrained_source, load_hf_gpt2


def load_source(init_from: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(model_args, state_dict, description) of the weights ``init_from`` names; always on the CPU."""
    if not is_init_source(init_from):
        raise UserError(f"init_from={init_from!r} must be scratch, resume, {', '.join(GPT2_SIZES)}, or a directory "
                        "holding a training run (ckpt.pt) or a Hugging Face GPT-2 (config.json)")
    if is_pretrained_source(init_from):
        model_args, state = load_hf_gpt2(init_from)
        return model_args, state, f"GPT-2 weights {init_from}"
    path = find_checkpoint(init_from, "last")
    ckpt = load_checkpoint(path)
    return dict(ckpt["meta"]["model_args"]), ckpt["model"], f"{path} (iter {ckpt['meta'].get('iter_num')})"


def adapt_state(src_args: dict[str, Any], state: dict[str, torch.Tensor], cfg: Any,
                data_vocab: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Source (model_args, state) -> the (model_args, state) that ``cfg`` (a TrainConfig) trains.

    Raises UserError when the source cannot serve: a diffusion source, another vocabulary, a shorter window.
    """
    if src_args.get("model_type", "gpt2") != "gpt2":
        raise UserError("init_from must name an autoregressive (gpt2) model; to continue a diffusion run use "
                        "--init_from=resume with its out_dir")
    V = int(src_args["vocab_size"])
    if V != data_vocab:
        raise UserError(f"the source model has a vocabulary of {V} tokens but dataset '{cfg.dataset}' has {data_vocab}:"
                        " prepare the data with the source's tokenizer (GPT-2 weights need a gpt2-tokenised dataset)")
    if cfg.block_size > src_args["block_size"]:
        raise UserError(f"block_size {cfg.block_size} exceeds the source model's {src_args['block_size']}: lower it")
    diffusion = cfg.model_type == "diffusion"
    args = dict(src_args)
    args.update(model_type=cfg.model_type, block_size=cfg.block_size, dropout=cfg.dropout,
                diffusion_block=cfg.diffusion_block, vocab_size=V + int(diffusion),
                mask_token_id=V if diffusion else None, draft_len=0 if diffusion else cfg.draft_len,
                shift=(cfg.shift is not False) if diffusion else None)  # None (auto) -> on when adapting
    if diffusion and args.get("pos_emb", "learned") == "learned" and cfg.pos_emb != "learned":  # learned: DiffuGPT
        args["pos_emb"] = "learned_rope"
    new = GPTConfig(**args)
    state = dict(state)
    if "transformer.wpe.weight" in state:
        state["transformer.wpe.weight"] = state["transformer.wpe.weight"][: cfg.block_size].clone()
    wte = state["transformer.wte.weight"]  # (padded V, C), tied to lm_head.weight
    table = torch.zeros(new.padded_vocab_size, wte.size(1), dtype=wte.dtype)
    table[:V] = wte[:V]
    if diffusion or (new.draft_len and not src_args.get("draft_len")):  # a new [MASK] row (TiDAR: never a logit)
        table[V] = wte[:V].mean(dim=0)  # [MASK]: the average token, so its logit starts neither high nor low
    elif new.draft_len:
        table[V] = wte[V]  # a TiDAR source's own [MASK]
    state["transformer.wte.weight"] = state["lm_head.weight"] = table
    return new.to_dict(), state


def describe_changes(cfg: Any, src_args: dict[str, Any]) -> str:
    """A one-line note of which requested model keys the source overrides (its architecture wins)."""
    keys = ("n_layer", "n_head", "n_embd", "bias", "qk_norm")
    differ = [f"{k}={src_args[k]}" for k in keys if k in src_args and getattr(cfg, k) != src_args[k]]
    pos = src_args.get("pos_emb")
    if cfg.pos_emb != "auto" and pos != cfg.pos_emb:
        differ.append(f"pos_emb={pos}")
    return f" (the source's architecture: {', '.join(differ)})" if differ else ""


def init_from_source(cfg: Any, data_vocab: int) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """Everything train.py needs: (model_args, state_dict, a line for the log)."""
    src_args, state, what = load_source(cfg.init_from)
    model_args, state = adapt_state(src_args, state, cfg, data_vocab)
    verb = "adapting" if cfg.model_type == "diffusion" else "fine-tuning"
    return model_args, state, f"{verb} {what} to {cfg.model_type}{describe_changes(cfg, src_args)}"

