"""What attention sees: pure functions of positions (rotary tables, block diffusion masks (BD3-LM), DiffuLLaMA's
annealed mask, the shifted head's hidden states, block diffusion training attention over [x_t ; x_0] in chunks), and
the KV cache that incremental decoding writes.

model.py builds the transformer from these; they import only torch.
References: RoFormer (Su et al. 2021), BD3-LM (Arriola et al. 2025), DiffuLLaMA (Gong et al. 2024).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def rotary_cos_sin(T: int, head_size: int, device: torch.device, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (T, head_size // 2) for positions offset .. offset+T-1."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size))
    pos = torch.arange(offset, offset + T, device=device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    return angles.cos(), angles.sin()


def rotary_at(pos: torch.Tensor, head_size: int, device: torch.device, dtype: torch.dtype = torch.float32
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (T, head_size // 2) in ``dtype`` at any positions pos (T,), e.g. past the model's table (a
    rolling cache keeps absolute positions). Angles in float64 on the CPU (MPS has no float64): in fp32 an angle
    at position p is off by ~p * 6e-8 rad, which grows without bound in a long generation."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size))
    angles = torch.outer(pos.detach().to("cpu", torch.float64), inv_freq)  # (T, hs/2)
    return angles.cos().to(device, dtype), angles.sin().to(device, dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (..., T, hs) with cos/sin broadcastable to (..., T, hs/2); rotate the two halves as complex pairs
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # under autocast x is bf16/fp16: stay in its dtype
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def block_diffusion_mask(T: int, block: int, device: torch.device, with_clean: bool) -> torch.Tensor:
    """Boolean attention mask (True = may attend) for block diffusion over blocks of ``block`` positions.

    without clean: (T, T) block-causal; a query sees keys in its own block and earlier blocks. At sampling time
    the canvas is clean blocks followed by the block being denoised, so this is exactly what training saw.
    with clean: (2T, 2T) over [x_t ; x_0] (BD3-LM's vectorised training): noisy queries see their own noisy
    block and the earlier *clean* blocks; clean queries see clean blocks up to their own, never x_t.
    """
    blk = torch.arange(T, device=device) // block
    up_to = blk[:, None] >= blk[None, :]  # (T, T)
    if not with_clean:
        return up_to
    same = blk[:, None] == blk[None, :]
    noisy_rows = torch.cat((same, up_to & ~same), dim=1)  # (T, 2T)
    clean_rows = torch.cat((torch.zeros_like(same), up_to), dim=1)  # (T, 2T)
    return torch.cat((noisy_rows, clean_rows), dim=0)


def tidar_train_mask(T: int, k: int, device: torch.device) -> torch.Tensor:
    """(2T, 2T) bool over [text ; masks] (TiDAR training, tidar.py). Text rows: causal over the text. Mask row i
    (block b = i // k): the text before the block's first position b * k, and the masks of its own block."""
    pos = torch.arange(T, device=device)
    blk = pos // k
    before = pos[None, :] < (blk * k)[:, None]  # (T, T): text key j lies before query i's block
    text_rows = torch.cat((pos[:, None] >= pos[None, :], torch.zeros_like(before)), dim=1)
    mask_rows = torch.cat((before, blk[:, None] == blk[None, :]), dim=1)
    return torch.cat((text_rows, mask_rows), dim=0)


def tidar_pass_mask(start: int, c: int, m: int, device: torch.device, blocks: int = 1) -> torch.Tensor:
    """(c + blocks * m, start + c + blocks * m) bool for a TiDAR decoding pass: c text tokens after ``start`` cached
    ones (causal among themselves, the whole cache before them), then ``blocks`` blocks of m masks; block b sees
    the cache, the first c - blocks + 1 + b text tokens and itself (block b drafts for the case that b of the
    last blocks - 1 text tokens, the drafts, are accepted; one block: every text token)."""
    n = c + blocks * m
    rows = torch.zeros(n, start + n, dtype=torch.bool, device=device)
    rows[:, :start] = True
    rows[:c, start:start + c] = torch.ones(c, c, dtype=torch.bool, device=device).tril()
    for b in range(blocks):
        lo = c + b * m
        rows[lo:lo + m, start:start + c - blocks + 1 + b] = True
        rows[lo:lo + m, start + lo:start + lo + m] = True
    return rows


def annealed_attention(T: int, ratio: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(T, T) bool, True = may attend: causal, plus each future key with probability ``ratio``.

    Attention annealing (DiffuLLaMA, Gong et al. 2024, arXiv:2410.17891): ratio 0 is the AR model's causal
    mask, ratio 1 full attention; training raises it linearly. Indexed by position, one draw per step.
    """
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    return causal | (torch.rand(T, T, generator=generator, device=device) < ratio)


def shift_hidden(x: torch.Tensor, before: torch.Tensor | None, block: int, clean: torch.Tensor | None) -> torch.Tensor:
    """Hidden states (B, T, C) -> those the shifted head reads: position i gets i-1's, position 0 ``before``.

    ``before`` (B, 1, C): the state at the position before x (a cache's kept prefix); None: x's own first.
    ``clean`` (B, T, C), block diffusion training: a block's first position reads the *clean* state before it,
    which is what it reads at sampling time, where the earlier blocks are final (the noisy one never is).
    """
    prev = torch.cat((x[:, :1] if before is None else before, x[:, :-1]), dim=1)
    if clean is not None and block < x.size(1):
        starts = torch.arange(block, x.size(1), block, device=x.device)  # (n_blocks - 1,)
        prev = prev.index_copy(1, starts, clean[:, starts - 1])
    return prev


class TwoStreamAttention:
    """Block diffusion training attention over [x_t ; x_0] (2T positions) without the dense (2T, 2T) mask.

    Queries go in chunks of ``chunk`` positions (a multiple of the block). The noisy queries of chunk c attend to
    the clean keys of chunks 0..c and the noisy keys of chunk c; the clean queries of chunk c to the clean keys of
    chunks 0..c (a contiguous slice): two SDPA calls per chunk with small masks, ~(1 + 3/n) T^2 query-key pairs
    for n chunks instead of the dense mask's 4 T^2, for the same allowed keys per query as
    ``block_diffusion_mask(T, block, with_clean=True)`` (equal up to float rounding). On the layer ``last_layer``
    it returns the noisy stream only (the clean stream's outputs there would be discarded).
    """

    def __init__(self, T: int, block: int, device: torch.device, last_layer: int = -1, chunk: int | None = None
                 ) -> None:
        self.T, self.last_layer = T, last_layer
        chunk = chunk or max(block, (T // 4) // block * block)  # 4 chunks: the fastest of 2-8 on CPU at T = 256
        dense = block_diffusion_mask(T, block, device, with_clean=True)  # (2T, 2T), sliced once per forward
        self.spans = []
        for s in range(0, T, chunk):
            e = min(s + chunk, T)
            noisy = dense[s:e][:, torch.cat((torch.arange(T, T + e), torch.arange(s, e))).to(device)]  # (n, e + n)
            self.spans.append((s, e, noisy, dense[T + s:T + e, T:T + e]))  # clean rows: (n, e)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
                 last: bool = False) -> torch.Tensor:
        """q, k, v (B, nh, 2T, hs) -> y (B, nh, 2T, hs), or (B, nh, T, hs) (the noisy stream) if ``last``."""
        T, noisy, clean = self.T, [], []
        for s, e, noisy_mask, clean_mask in self.spans:
            kc = torch.cat((k[:, :, T:T + e], k[:, :, s:e]), dim=2)  # (B, nh, e + n, hs): clean prefix, own noisy
            vc = torch.cat((v[:, :, T:T + e], v[:, :, s:e]), dim=2)
            noisy.append(F.scaled_dot_product_attention(q[:, :, s:e], kc, vc, attn_mask=noisy_mask,
                                                        dropout_p=dropout_p))
            if not last:
                clean.append(F.scaled_dot_product_attention(q[:, :, T + s:T + e], k[:, :, T:T + e], v[:, :, T:T + e],
                                                            attn_mask=clean_mask, dropout_p=dropout_p))
        return torch.cat(noisy + clean, dim=2)


class KVCache:
    """Per-layer keys and values for incremental decoding, preallocated to block_size; it owns its position.

    AR: a prefill, then one token at a time. Block diffusion: one block at a time; a block attends to the
    cache and to itself, and is kept (``advance``) only once it is final, so the passes that denoise it
    cost one block each instead of the whole prefix. See ``GPT.decode``.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, block_size: int, head_size: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (n_layer, batch, n_head, block_size, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self._pos = 0
        # the position of slot 0: 0 unless ``evict`` dropped the oldest keys (a rolling cache, sampling only)
        self.offset = 0
        self.hidden: torch.Tensor | None = None  # (B, block_size, C): final states, for a shifted head

    @property
    def pos(self) -> int:
        """Positions kept so far, which is also the position of the next token."""
        return self._pos

    @property
    def size(self) -> int:
        return self.k.size(3)

    def reset(self) -> None:
        """Forget every position (the next pass is a prefill from position 0)."""
        self._pos = 0
        self.offset = 0

    def evict(self, n: int) -> None:
        """Drop the n oldest positions (a rolling cache): the kept keys and values move to the front of the slots
        and ``offset`` grows by n, so a key keeps the absolute position it was rotated at (rope scores depend on
        the distance between positions only). n above ``pos`` also skips n - pos positions that were never kept
        (the next pass starts there). Approximate by design: the kept keys were computed while the evicted
        positions were visible, which a fresh pass over the kept window would not see."""
        if n < 0:
            raise ValueError(f"evict takes n >= 0 positions; got {n}")
        keep = max(0, self._pos - n)
        if keep:  # clone: the source and destination slices overlap
            self.k[:, :, :, :keep] = self.k[:, :, :, self._pos - keep:self._pos].clone()
            self.v[:, :, :, :keep] = self.v[:, :, :, self._pos - keep:self._pos].clone()
            if self.hidden is not None:
                self.hidden[:, :keep] = self.hidden[:, self._pos - keep:self._pos].clone()
        self._pos = keep
        self.offset += n

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) after the kept positions; returns the keys and values up to them."""
        end = self._pos + k.size(2)
        self.k[layer, :, :, self._pos:end] = k
        self.v[layer, :, :, self._pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Keep the ``n`` positions the last pass wrote (a pass that is not kept is overwritten by the next)."""
        if self._pos + n > self.size:
            raise ValueError(f"a KV cache of {self.size} positions cannot keep {self._pos + n}")
        self._pos += n
