"""The GPT model, top to bottom: attention, MLP, block, GPT (config: config.py; masks, rotary, KV cache: attention.py).

One transformer serves both modes (``GPTConfig.model_type``):
- ``gpt2``: causal attention; without targets the forward returns logits for the last position.
- ``diffusion``: bidirectional attention and an extra ``[MASK]`` token
  (``mask_token_id = vocab_size - 1``); the forward returns logits for every position.
  With ``diffusion_block = b > 0`` attention is block-causal over blocks of b positions (block diffusion,
  BD3-LM, Arriola et al. 2025): a block sees itself and the blocks before it, so text is denoised block by
  block, left to right, each block conditioned on the clean text before it.
- ``shift`` (diffusion adapted from an AR model; DiffuGPT / DiffuLLaMA, Gong et al. 2024, arXiv:2410.17891): the
  logit for position i is read from the hidden state at position i-1, as in the AR model it came from, so
  the pretrained next-token head keeps its meaning; position 0 reads its own. Every caller (samplers, NELBO,
  generation) sees logits aligned to positions as usual: the shift happens here, in ``_head``.
- ``draft_len`` (gpt2; TiDAR, tidar.py): one more embedding row, [MASK] (``mask_token_id = vocab_size``, never a
  logit); ``forward(x, drafts=True)`` also runs blocks of [MASK] that draft the text after the text before them.
- ``prime_bits`` / ``prime_base`` (diffusion; MDM-Prime, subtokens.py): partial masking, each token written as
  sub-tokens masked one by one; the input embedding reads a position's digit states (``transformer.wse``) and the
  logits rule out every token that contradicts a known digit (exactly zero probability).
- ``attn_allow`` (training only): DiffuLLaMA's attention annealing, a causal mask opened at random towards full
  attention (``annealed_attention``), so an AR model becomes bidirectional gradually.

This file knows nothing about training, data, DDP or I/O.
References: nanoGPT (Karpathy), GPT-2 (Radford et al. 2019), RoFormer (Su et al. 2021).
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from .attention import (
    KVCache,
    TwoStreamAttention,
    apply_rotary,
    block_diffusion_mask,
    rotary_at,
    rotary_cos_sin,
    shift_hidden,
    tidar_train_mask,
)
from .config import GPTConfig
from .subtokens import SubTokenEmbedding


class SelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.attn_dropout = config.dropout if config.attn_dropout is None else config.attn_dropout
        self.causal = config.model_type == "gpt2"
        self.qk_norm = config.qk_norm

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv_cache: KVCache | None, layer: int, attn_mask: torch.Tensor | TwoStreamAttention | None = None
                ) -> torch.Tensor:
        B, T, C = x.size()
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).transpose(1, 3)  # (B, nh, 3, T, hs)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]  # (B, nh, 2, T, hs), (B, nh, T, hs)
        if self.qk_norm:  # Dehghani et al. 2023; parameter-free, so old checkpoints keep loading
            qk = F.rms_norm(qk, (qk.size(-1),))
        if rope is not None:  # queries and keys rotated in one op: (T, hs/2) tables broadcast over (B, nh, 2)
            qk = apply_rotary(qk, *rope)
        q, k = qk.unbind(2)  # (B, nh, T, hs) each
        is_causal = self.causal
        if kv_cache is not None:
            # a prefill on an empty cache is causal as usual; a single new query sees the whole cache
            is_causal = self.causal and kv_cache.pos == 0
            k, v = kv_cache.update(layer, k, v)
        dropout_p = self.attn_dropout if self.training else 0.0
        if isinstance(attn_mask, TwoStreamAttention):  # block diffusion training: (B, nh, 2T or T, hs)
            y = attn_mask(q, k, v, dropout_p, last=layer == attn_mask.last_layer)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                               is_causal=is_causal and attn_mask is None)
        y = y.transpose(1, 2).contiguous().view(B, y.size(2), C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope, kv_cache: KVCache | None, layer: int,
                attn_mask: torch.Tensor | TwoStreamAttention | None = None) -> torch.Tensor:
        a = self.attn(self.ln_1(x), rope, kv_cache, layer, attn_mask)
        x = x[:, :a.size(1)] + a  # the last two-stream layer returns the noisy stream only
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    # block diffusion training: True runs the dense (2T, 2T) mask instead of TwoStreamAttention (the reference
    # the tests compare against; same result up to float rounding, ~2x the attention time)
    dense_block_mask = False

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        modules = dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        )
        if config.prime_bits:  # partial masking: ids are digit states (subtokens.py); wte stays the output layer
            modules["wse"] = SubTokenEmbedding(config.vocab_size - 1, config.prime_base, config.prime_bits,
                                               config.n_embd, config.prime_shuffle, config.prime_embed)
        if "learned" in config.pos_emb:
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        if "rope" in config.pos_emb:  # rotary tables, computed once; not saved (derived from the config)
            cos, sin = rotary_cos_sin(config.block_size, config.n_embd // config.n_head, torch.device("cpu"))
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def new_kv_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        c = self.config
        return KVCache(c.n_layer, batch, c.n_head, c.block_size, c.n_embd // c.n_head, device, dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, clean: torch.Tensor | None = None,
                all_logits: bool = False, attn_allow: torch.Tensor | None = None, drafts: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A full pass (training, evaluation, uncached sampling): idx (B, T) -> (logits, loss).

        Logits are (B, T, vocab_size), or (B, 1, vocab_size) for gpt2 without targets or ``all_logits`` (the
        next-token distribution is all generation needs); they are cut to ``vocab_size``, so padded ids are
        never predicted. With targets, loss is the mean cross-entropy over positions whose target is not -1.
        ``clean`` (B, T), block diffusion training only: the uncorrupted text, appended after idx with the same
        positions so each noisy block attends to the clean blocks before it (BD3-LM); logits are for idx only.
        ``attn_allow`` (L, L) bool with L >= T, training only: which (query, key) positions may attend on top of
        the model's own mask (``annealed_attention``); the clean copy is indexed by the same positions.
        ``drafts`` (TiDAR training, draft_len > 0; tidar.py): T [MASK] after idx at the same positions, in blocks of
        draft_len that see the text before them; logits (B, 2T, V) are the text's, then the masks'.
        """
        B, T = idx.size()
        self._check_length(T)
        ids = idx  # the canvas as given (a prime model's logits depend on its known digits)
        block = self.config.diffusion_block
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        attn_mask = None
        if clean is not None:
            if not block or clean.shape != idx.shape:
                raise ValueError("clean is for block diffusion models (diffusion_block > 0) and must match idx's shape")
            idx, pos = torch.cat((idx, clean), dim=1), torch.cat((pos, pos))  # (B, 2T), (2T,)
        if clean is not None and not self.dense_block_mask and attn_allow is None:
            # the shifted head reads the clean stream's last states: then the last layer computes them too
            last = -1 if self.config.shift else self.config.n_layer - 1
            attn_mask = TwoStreamAttention(T, block, idx.device, last_layer=last)
        elif block:
            attn_mask = block_diffusion_mask(T, block, idx.device, with_clean=clean is not None)
        if attn_allow is not None:
            allow = attn_allow[pos[:, None], pos[None, :]]  # (T or 2T, T or 2T)
            attn_mask = allow if attn_mask is None else attn_mask & allow
        if drafts:
            if not self.config.draft_len or clean is not None or attn_allow is not None:
                raise ValueError("drafts is for models with draft_len > 0 (objective=tidar), alone")
            idx = torch.cat((idx, torch.full_like(idx, self.config.mask_token_id)), dim=1)  # (B, 2T)
            pos, attn_mask = torch.cat((pos, pos)), tidar_train_mask(T, self.config.draft_len, idx.device)
        h = self._trunk(idx, pos, attn_mask, None)  # (B, T or 2T, C)
        x = h if drafts else h[:, :T]
        if self.config.shift:
            x = shift_hidden(x, None, block, h[:, T:] if clean is not None else None)
        logits = self._head(x, all_logits or drafts or targets is not None)
        if "wse" in self.transformer:
            logits = self.transformer.wse.restrict(logits, ids)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def decode(self, idx: torch.Tensor, cache: KVCache, *, keep: bool | int = True, all_logits: bool = False
               ) -> torch.Tensor:
        """Cached inference: idx (B, T) in slots cache.pos .. cache.pos + T - 1 -> logits, shaped as forward's. The
        positions are the slots plus ``cache.offset`` (0 unless a rolling cache evicted keys: rope models only).

        ``keep``: True keeps all T positions in the cache, False none (a draft still being denoised), an int n the
        first n. gpt2: a prefill on an empty cache, then one token at a time. Block diffusion: a span starting at a
        block boundary, block-causal within itself, attending to the cache; so finished blocks can be kept in the
        same pass that denoises the draft after them. Bidirectional diffusion: any span, attending to every key the
        cache returns (the kept prefix, itself, and more if the cache returns more, e.g. a stale suffix). That is
        approximate by design: the cached keys were computed against an older canvas (Fast-dLLM's prefix and dual
        caches).
        """
        T, start, block = idx.size(1), cache.pos, self.config.diffusion_block
        self._check_length(start + T)
        if block and start % block:
            raise ValueError(f"a block diffusion cache takes whole blocks of {block}: got {T} tokens at {start}")
        if self.config.model_type == "gpt2" and start > 0 and T > 1:
            raise ValueError("a gpt2 KV cache takes a prefill or one token at a time")
        n_keep = T if keep is True else int(keep)
        if not 0 <= n_keep <= T:
            raise ValueError(f"keep must be a bool or 0 <= n <= {T}; got {keep}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device) + cache.offset  # absolute
        mask = None
        if block and T > block:  # several blocks: block-causal among themselves, the whole cache before them
            mask = torch.cat((torch.ones(T, start, dtype=torch.bool, device=idx.device),
                              block_diffusion_mask(T, block, idx.device, with_clean=False)), dim=1)  # (T, start + T)
        x = self._trunk(idx, pos, mask, cache)  # (B, T, C)
        if self.config.shift:  # the state before position `start` was stored when that position was decoded
            if cache.hidden is None:
                cache.hidden = x.new_zeros(x.size(0), cache.size, x.size(2))
            cache.hidden[:, start:start + T] = x
            x = shift_hidden(x, cache.hidden[:, start - 1:start] if start else None, block, None)
        if n_keep:
            cache.advance(n_keep)
        logits = self._head(x, all_logits)
        return self.transformer.wse.restrict(logits, idx) if "wse" in self.transformer else logits

    def _check_length(self, end: int) -> None:
        if end > self.config.block_size:
            raise ValueError(f"sequence of length {end} exceeds block_size {self.config.block_size}")

    def _trunk(self, idx: torch.Tensor, pos: torch.Tensor, attn_mask: torch.Tensor | None,
               cache: KVCache | None) -> torch.Tensor:
        """Embeddings and the transformer blocks: idx (B, T), pos (T,) -> residual stream (B, T, C)."""
        if "wse" in self.transformer:  # partial masking: digit states (and the tokens still possible, tied to wte)
            x = self.transformer.wse(idx, self.transformer.wte.weight)  # (B, T, C)
        else:
            x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if "learned" in self.config.pos_emb:
            if cache is not None and cache.offset:
                raise ValueError("a rolling KV cache moves positions past block_size, which learned position "
                                 "embeddings do not have: use it with pos_emb=rope models only")
            x = x + self.transformer.wpe(pos)
        if "rope" in self.config.pos_emb:
            if cache is not None and cache.offset:  # a rolling cache: positions may run past the table
                rope = rotary_at(pos, self.config.n_embd // self.config.n_head, x.device, self.rope_cos.dtype)
            else:
                rope = (self.rope_cos[pos], self.rope_sin[pos])  # (T, hs/2) each
        x = self.transformer.drop(x)
        for layer, block_module in enumerate(self.transformer.h):
            x = block_module(x, rope, cache, layer, attn_mask)
        return x

    def _head(self, x: torch.Tensor, all_positions: bool) -> torch.Tensor:
        """Final norm and the tied output layer: (B, T, C) -> logits (B, T or 1, vocab_size)."""
        if not all_positions and self.config.model_type == "gpt2":
            x = x[:, [-1], :]  # (B, 1, C): generation needs only the next-token distribution
        return self.lm_head(self.transformer.ln_f(x))[..., : self.config.vocab_size]

    def configure_optimizers(self, weight_decay: float, learning_rate: float,
                             betas: tuple[float, float], device_type: str) -> torch.optim.AdamW:
        params = [p for p in self.parameters() if p.requires_grad]
        # matrices (weights, embeddings) decay; biases and norms do not
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, peak_flops: float = 312e12) -> float:
        """Model FLOPs utilisation against ``peak_flops`` (A100 bf16 by default; PaLM appendix B)."""
        c = self.config
        N = self.get_num_params()
        L, H, Q, T = c.n_layer, c.n_head, c.n_embd // c.n_head, c.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T
        flops_per_iter = flops_per_token * T * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops
