"""Statistics of generated text, for a judge that scores samples without reading them.

Surface statistics (no model): character unigram entropy, distinct-n (Li et al. 2016, "A Diversity-Promoting
Objective Function for Neural Conversation Models") and the longest repeated substring, which catch
degenerate samples (one repeated character, loops). ``judge_nll`` scores the text with a separate
autoregressive model: a low perplexity under a good AR judge means fluent text (the "generative perplexity"
used to evaluate diffusion LMs, e.g. MDLM, Sahoo et al. 2024).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..core.errors import UserError
from ..sampling.ar_sampling import inference_mode, model_device


def unigram_entropy(items: str | Sequence | np.ndarray | torch.Tensor, bits: bool = False,
                    chunk: int = 1 << 24) -> float:
    """Entropy of the unigram distribution of ``items``, in nats (bits with ``bits=True``); 0.0 when empty.

    ``items``: the characters of a str, or token ids as a sequence, a tensor, or a numpy array (a memmapped split
    is counted ``chunk`` ids at a time, so it stays on disk). For token ids this is the masked cross-entropy of a
    model that ignores context (what ``masked_ce@k`` falls to when a denoiser does not use its context).
    """
    if isinstance(items, torch.Tensor):
        counts = torch.bincount(items.flatten().cpu().long()).numpy()
    elif isinstance(items, np.ndarray):
        counts = np.zeros(0, dtype=np.int64)
        for i in range(0, len(items), chunk):
            part = np.bincount(np.asarray(items[i:i + chunk]).ravel())
            counts = np.pad(counts, (0, max(0, len(part) - len(counts))))
            counts[: len(part)] += part
    else:
        counts = np.fromiter(Counter(items).values(), dtype=np.int64)
    p = counts[counts > 0] / max(int(counts.sum()), 1)
    h = float(-(p * np.log(p)).sum())
    return max(h / math.log(2) if bits else h, 0.0)  # a single symbol gives -0.0


def distinct_n(text: str | Sequence, n: int) -> float:
    """Unique n-grams / total n-grams over characters of a str (or items of a token sequence).

    1.0 means no n-gram repeats; near 0 means a loop. Text shorter than n has no n-grams: 0.0.
    """
    if n < 1:
        raise UserError(f"distinct_n needs n >= 1, got {n}")
    total = len(text) - n + 1
    if total <= 0:
        return 0.0
    if isinstance(text, str):
        grams = {text[i:i + n] for i in range(total)}
    else:
        items = list(text)
        grams = {tuple(items[i:i + n]) for i in range(total)}
    return len(grams) / total


def _suffix_array(s: list[int]) -> list[int]:
    """Start indices of the suffixes of s in sorted order; prefix doubling, O(n log^2 n)."""
    n = len(s)
    rank = s[:]
    sa = list(range(n))
    k = 1
    while True:
        # sort by (rank of the first k symbols, rank of the next k); -1 sorts a suffix's end first.
        # Both parts lie in [-1, n + alphabet), so one integer key orders the pair.
        base = max(rank) + 2
        key = [rank[i] * base + (rank[i + k] + 1 if i + k < n else 0) for i in range(n)]
        sa.sort(key=key.__getitem__)
        new = [0] * n
        for j in range(1, n):
            new[sa[j]] = new[sa[j - 1]] + (key[sa[j]] != key[sa[j - 1]])
        rank = new
        if rank[sa[-1]] == n - 1 or k >= n:  # all ranks distinct: fully sorted
            return sa
        k *= 2


def longest_repeated_substring(text: str | Sequence) -> int:
    """Length of the longest substring occurring at least twice (occurrences may overlap).

    "banana" -> 3 ("ana"), "aaaa" -> 3. Suffix array + Kasai LCP: the answer is the largest common prefix
    of two suffixes adjacent in sorted order. About 0.1 s for 10k characters.
    """
    n = len(text)
    if n < 2:
        return 0
    # symbols -> dense ints, so the doubling keys stay small
    alphabet = {c: i for i, c in enumerate(sorted(set(text)))}
    s = [alphabet[c] for c in text]
    sa = _suffix_array(s)
    rank = [0] * n
    for i, start in enumerate(sa):
        rank[start] = i
    # Kasai et al. 2001: LCP of each suffix with its predecessor in sa, in O(n)
    best = h = 0
    for i in range(n):
        r = rank[i]
        if r == 0:
            h = 0
            continue
        j = sa[r - 1]
        while i + h < n and j + h < n and s[i + h] == s[j + h]:
            h += 1
        best = max(best, h)
        if h:
            h -= 1
    return best


@torch.no_grad()
def judge_nll(model: torch.nn.Module, ids: torch.Tensor, block_size: int,
              stride: int | None = None) -> tuple[float, int]:
    """Mean next-token cross-entropy (nats) of ``ids`` under an AR ``model``, and the number of scored tokens.

    ``ids`` is 1D (N,). Every token after the first is scored exactly once (N - 1 tokens). Texts longer than
    the model's window use a sliding window (as in Hugging Face's perplexity guide): each window holds up to
    ``block_size`` tokens and scores only targets not yet scored, so a token sees at least
    ``block_size - stride + 1`` tokens of left context once the text is longer than a window. ``stride`` defaults
    to ``block_size // 2``; ``stride=1`` gives every token the longest context that fits (N forward passes).
    The model is called as ``logits, _ = model(x, all_logits=True)`` with x (1, T), logits (1, T, V), and is
    put in eval mode for the call (then restored). exp(mean NLL) is the perplexity.
    """
    if ids.dim() != 1:
        raise UserError(f"judge_nll needs a 1D tensor of token ids, got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise UserError(f"judge_nll needs integer token ids, got {ids.dtype}")
    n = ids.numel()
    if n < 2:
        raise UserError(f"judge_nll needs at least 2 tokens to score a next token, got {n}")
    if block_size < 1:
        raise UserError(f"block_size must be positive, got {block_size}")
    stride = max(1, block_size // 2) if stride is None else stride
    if not 1 <= stride <= block_size:
        raise UserError(f"stride must be between 1 and block_size ({block_size}), got {stride}")

    ids = ids.to(model_device(model, ids.device), dtype=torch.long)
    with inference_mode(model):
        total, count = 0.0, 0
        scored = 0  # targets ids[1..scored] are done; target p is predicted from ids[:p]
        end = min(block_size, n - 1)  # window input ids[start:end] predicts targets ids[start+1 : end+1]
        while True:
            start = max(0, end - block_size)
            x = ids[start:end].unsqueeze(0)  # (1, T)
            logits, _ = model(x, all_logits=True)  # (1, T, V)
            new = end - scored  # targets scored+1 .. end are the last `new` positions of the window
            pred = logits[0, -new:].float()  # (new, V)
            target = ids[scored + 1:end + 1]  # (new,)
            total += F.cross_entropy(pred, target, reduction="sum").item()
            count += new
            scored = end
            if end == n - 1:
                break
            end = min(end + stride, n - 1)
    return total / count, count
