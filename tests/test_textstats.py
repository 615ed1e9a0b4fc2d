"""Text statistics and the AR judge, checked against hand-computed values with fake judges."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from nanodlm.core.errors import UserError
from nanodlm.evaluation.textstats import (
    distinct_n,
    judge_nll,
    longest_repeated_substring,
    unigram_entropy,
)

# --- surface statistics ---------------------------------------------------------------------------


def test_unigram_entropy() -> None:
    assert unigram_entropy("aaaa", bits=True) == 0.0
    assert unigram_entropy("abab", bits=True) == pytest.approx(1.0)
    assert unigram_entropy("abcd", bits=True) == pytest.approx(2.0)
    # p = (1/2, 1/4, 1/4): 0.5*1 + 2*0.25*2 = 1.5 bits
    assert unigram_entropy("aabc", bits=True) == pytest.approx(1.5)
    assert unigram_entropy("", bits=True) == 0.0
    assert unigram_entropy([7, 7, 3, 3], bits=True) == pytest.approx(1.0)
    # one function for text, token lists, tensors and (chunked) numpy splits; nats unless bits=True
    ids = [0, 0, 1, 2, 2, 2, 5]
    expect = -sum(c / 7 * math.log(c / 7) for c in (2, 1, 3, 1))
    assert unigram_entropy(ids) == pytest.approx(expect)
    assert unigram_entropy(torch.tensor(ids).view(7, 1)) == pytest.approx(expect)
    assert unigram_entropy(np.array(ids, dtype=np.uint16), chunk=3) == pytest.approx(expect)


def test_distinct_n() -> None:
    assert distinct_n("aaaa", 1) == pytest.approx(1 / 4)
    assert distinct_n("aaaa", 2) == pytest.approx(1 / 3)  # aa, aa, aa
    assert distinct_n("abab", 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n("abcd", 2) == 1.0
    assert distinct_n("ab", 3) == 0.0  # no trigrams at all
    assert distinct_n([1, 2, 1, 2, 3], 2) == pytest.approx(3 / 4)  # (1,2) (2,1) (1,2) (2,3)
    with pytest.raises(UserError, match="n >= 1"):
        distinct_n("abc", 0)


def test_longest_repeated_substring_hand_checked() -> None:
    assert longest_repeated_substring("banana") == 3  # "ana", overlapping
    assert longest_repeated_substring("aaaa") == 3
    assert longest_repeated_substring("abab") == 2
    assert longest_repeated_substring("mississippi") == 4  # "issi"
    assert longest_repeated_substring("abcd") == 0
    assert longest_repeated_substring("") == 0
    assert longest_repeated_substring([5, 1, 5, 1]) == 2


def _lrs_brute(s: str) -> int:
    best = 0
    for length in range(1, len(s)):
        grams = [s[i:i + length] for i in range(len(s) - length + 1)]
        if len(set(grams)) < len(grams):
            best = length
    return best


def test_longest_repeated_substring_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(200):
        s = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 30)))
        assert longest_repeated_substring(s) == _lrs_brute(s), s


def test_longest_repeated_substring_10k_is_fast() -> None:
    assert longest_repeated_substring("a" * 10_000) == 9_999  # worst case for prefix doubling
    text = "".join(random.Random(1).choice("abcdefgh ") for _ in range(10_000))
    loop = text[:500] + "the same sentence again. " * 40 + text[500:]
    assert longest_repeated_substring(loop) >= 25 * 39


# --- judge_nll ------------------------------------------------------------------------------------


class UniformJudge(nn.Module):
    """Same logits everywhere: every token has probability 1/V, so perplexity is exactly V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, all_logits: bool = False):
        assert all_logits
        self.calls.append(x.size(1))
        return torch.zeros(x.size(0), x.size(1), self.vocab), None


class BigramJudge(nn.Module):
    """log p(next | context) = table[last token, next]: context-free, so the exact NLL is known by hand."""

    def __init__(self, table: torch.Tensor, block_size: int) -> None:
        super().__init__()
        self.logp = table.log_softmax(-1)  # (V, V)
        self.block_size = block_size
        self.windows: list[int] = []

    def forward(self, x: torch.Tensor, all_logits: bool = False):
        assert all_logits and x.dim() == 2
        assert x.size(1) <= self.block_size, "a window longer than the model's block"
        self.windows.append(x.size(1))
        return self.logp[x], None  # (1, T, V)


class ContextLengthJudge(nn.Module):
    """Vocab 2; at window position j (context j+1 tokens) p(token 0) = 1/(j+2), so NLL = log(context + 1)."""

    def forward(self, x: torch.Tensor, all_logits: bool = False):
        T = x.size(1)
        other = torch.log(torch.arange(1, T + 1, dtype=torch.float32))  # logit of token 1: log(j+1)
        logits = torch.stack([torch.zeros(T), other], dim=-1)  # (T, 2)
        return logits.unsqueeze(0), None


def test_uniform_judge_perplexity_is_vocab_size() -> None:
    judge = UniformJudge(vocab=13)
    ids = torch.randint(0, 13, (50,), generator=torch.Generator().manual_seed(0))
    nll, count = judge_nll(judge, ids, block_size=64)
    assert count == 49
    assert nll == pytest.approx(math.log(13), rel=1e-6)
    assert math.exp(nll) == pytest.approx(13.0, rel=1e-6)
    assert judge.calls == [49]  # fits in one window: one forward pass


def test_uniform_judge_sliding_window() -> None:
    judge = UniformJudge(vocab=7)
    ids = torch.zeros(100, dtype=torch.long)
    nll, count = judge_nll(judge, ids, block_size=16, stride=5)
    assert count == 99
    assert math.exp(nll) == pytest.approx(7.0, rel=1e-6)
    assert max(judge.calls) <= 16


def _bigram_expected(logp: torch.Tensor, ids: torch.Tensor) -> float:
    nll = [-logp[ids[i - 1], ids[i]].item() for i in range(1, len(ids))]
    return sum(nll) / len(nll)


@pytest.mark.parametrize("n", [2, 9, 10, 11, 37, 200])
@pytest.mark.parametrize("stride", [None, 1, 3, 8])
def test_bigram_judge_scores_each_token_once(n: int, stride: int | None) -> None:
    V, B = 5, 8
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(1))
    judge = BigramJudge(table, block_size=B)
    ids = torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(n))
    nll, count = judge_nll(judge, ids, block_size=B, stride=stride)
    assert count == n - 1
    # a double-counted or skipped token would change the mean of these unequal per-token NLLs
    assert nll == pytest.approx(_bigram_expected(judge.logp, ids), rel=1e-5)


def test_stride_one_gives_longest_context() -> None:
    n, B = 40, 8
    nll, count = judge_nll(ContextLengthJudge(), torch.zeros(n, dtype=torch.long), block_size=B, stride=1)
    # target p (1..n-1) sees min(p, B) tokens of context
    expected = sum(math.log(min(p, B) + 1) for p in range(1, n)) / (n - 1)
    assert count == n - 1
    assert nll == pytest.approx(expected, rel=1e-6)


def test_default_stride_overlaps_windows() -> None:
    # with ContextLengthJudge a longer context means a larger NLL, so the mean NLL orders the strides by context
    ids, B = torch.zeros(100, dtype=torch.long), 8
    by_stride = {s: judge_nll(ContextLengthJudge(), ids, block_size=B, stride=s)[0] for s in (B, None, 1)}
    assert by_stride[B] < by_stride[None] < by_stride[1]
    # after the first window, the default stride B//2 leaves each target at least B - B//2 + 1 tokens of context
    assert by_stride[None] > math.log(B - B // 2 + 1 + 1) * 0.95


def test_judge_restores_training_mode_and_no_grad() -> None:
    judge = BigramJudge(torch.randn(4, 4), block_size=4)
    judge.train()
    nll, _ = judge_nll(judge, torch.tensor([0, 1, 2, 3, 0, 1]), block_size=4)
    assert judge.training and isinstance(nll, float)


def test_judge_bad_input() -> None:
    judge = UniformJudge(3)
    with pytest.raises(UserError, match="at least 2 tokens"):
        judge_nll(judge, torch.tensor([1]), block_size=4)
    with pytest.raises(UserError, match="1D"):
        judge_nll(judge, torch.zeros(2, 3, dtype=torch.long), block_size=4)
    with pytest.raises(UserError, match="stride"):
        judge_nll(judge, torch.zeros(10, dtype=torch.long), block_size=4, stride=5)
