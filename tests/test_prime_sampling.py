"""The prime samplers (prime_sampling.py) and how a partly known character is drawn (--show, the page)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from fakes import gen

from nanodlm.model import subtokens as S
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling.prime_sampling import sample_prime_ancestral, sample_prime_confidence
from nanodlm.sampling.samplers import sample_ancestral
from nanodlm.sampling.trajectory import Recorder
from nanodlm.web.live import PARTIAL_GLYPH, LiveView

V = 65  # real tokens; [MASK] = 65


def prime_gpt(seed: int = 0, **prime) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(model_type="diffusion", vocab_size=V + 1, n_layer=2, n_head=2, n_embd=32, block_size=16,
                         **(prime or {"prime_base": 2}))).eval()


class Adversary(nn.Module):
    """A prime model's code with logits that push every forbidden id: [MASK] and every token that contradicts a
    known digit get the largest logits. The samplers must rule them out themselves."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model  # subtokens.model_code finds the code here

    def forward(self, idx: torch.Tensor, **_: object):
        code = S.model_code(self.model)
        allowed = S.consistent(S.state_digits(idx, code), code)  # (B, L, V)
        noise = torch.rand(*idx.shape, V + 1, generator=gen(int(idx.sum()) % 1000))
        logits = torch.where(allowed, noise[..., :V], 50.0)  # forbidden tokens: huge
        return torch.cat((logits, torch.full_like(noise[..., :1], 99.0)), dim=-1), None  # [MASK]: huger


def canvas(B: int = 4, L: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.full((B, L), V)
    c[:, :3] = torch.tensor([7, 8, 9])  # a prompt
    c[:, -1] = 4  # a suffix
    return c, c != V


@pytest.mark.parametrize("sampler", [sample_prime_ancestral, sample_prime_confidence])
@pytest.mark.parametrize("opts", [{}, {"temperature": 0.0}, {"top_k": 3}, {"top_p": 0.5, "temperature": 2.0}])
def test_samplers_never_write_an_id_outside_the_vocabulary(sampler, opts: dict) -> None:
    model = Adversary(prime_gpt())
    c, fixed = canvas()
    seen = []
    out, info = sampler(model, c, mask_token_id=V, steps=5, generator=gen(1), **opts,
                        on_step=lambda s, t, r, m: seen.append(t.clone()))
    assert out.min() >= 0 and out.max() < V  # tokens only: no [MASK], no padding, no partial id left
    assert torch.equal(out[fixed], c[fixed])
    code = S.model_code(model)
    for t in seen:  # every intermediate state is consistent with some real token
        assert S.consistent(S.state_digits(t, code), code).any(-1).all()
    assert info["steps_used"] <= 5 and info["forward_passes"] <= 5 and sum(info["digits_per_step"]) == 12 * 4 * 7


def test_a_step_fixes_some_digits_and_leaves_others_masked() -> None:
    model = prime_gpt()
    c, _ = canvas()
    for sampler in (sample_prime_ancestral, sample_prime_confidence):
        seen: list[torch.Tensor] = []
        sampler(model, c, mask_token_id=V, steps=8, generator=gen(2),
                on_step=lambda s, t, r, m, seen=seen: seen.append(t))
        assert any((t > V).any() for t in seen[:-1])  # partly known characters on the way
        assert not (seen[-1] >= V).any()


def test_one_digit_per_token_samples_exactly_as_ancestral() -> None:
    model = prime_gpt(prime_bits=1, prime_shuffle=False)
    c, _ = canvas()
    a, ia = sample_ancestral(model, c, mask_token_id=V, steps=6, generator=gen(3))
    b, ib = sample_prime_ancestral(model, c, mask_token_id=V, steps=6, generator=gen(3))
    assert torch.equal(a, b) and ia["forward_passes"] == ib["forward_passes"]


def test_confidence_options_and_pass_counting() -> None:
    model = prime_gpt()
    c, _ = canvas(B=2)
    for opts in ({"order": "entropy", "prior_weight": 0.0}, {"order": "margin", "prior_weight": 0.0},
                 {"parallel_threshold": 0.9}, {"max_per_pass": 5}, {"noise": 0.0, "schedule": "linear"}):
        out, info = sample_prime_confidence(model, c, mask_token_id=V, steps=4, generator=gen(4), **opts)
        assert out.max() < V
        # a pass per step that changed the canvas; a cap of 5 digits per pass and row needs ceil(12 * 7 / 5) of them
        assert info["forward_passes"] == info["steps_used"] == len(info["digits_per_step"])
        if opts.get("max_per_pass"):
            assert max(info["digits_per_step"]) <= 2 * 5 and info["steps_used"] == -(-12 * 7 // 5)
    same = [sample_prime_confidence(model, c, mask_token_id=V, steps=4, generator=gen(5))[0] for _ in range(2)]
    assert torch.equal(*same)  # seeded: the same draws


def test_bad_calls_are_errors() -> None:
    with pytest.raises(ValueError, match="need a prime model"):
        sample_prime_ancestral(GPT(GPTConfig(model_type="diffusion", vocab_size=V + 1, n_layer=1, n_head=1,
                                             n_embd=8, block_size=8)), torch.full((1, 8), V), mask_token_id=V,
                               steps=2, generator=gen(0))
    with pytest.raises(ValueError, match="token ids and"):
        sample_prime_ancestral(prime_gpt(), torch.full((1, 8), V + 5), mask_token_id=V, steps=2, generator=gen(0))


def test_partly_known_characters_are_drawn_in_the_terminal_and_the_page() -> None:
    model = prime_gpt()
    code = S.model_code(model)
    x = torch.tensor([[10, 11, 12]])
    masked = torch.tensor([[[False] * 7, [True] * 7, [True] * 3 + [False] * 4]])
    ids = S.state_ids(code.table[x].masked_fill(masked, 2), x, code)  # known, [MASK], partly known
    decode = chr  # token i -> a one-character text
    rec = Recorder(decode, mask_token_id=V, model=model)
    rec(1, ids, torch.ones_like(ids, dtype=torch.bool), torch.zeros_like(ids, dtype=torch.bool))
    event = rec.event(rec.frames[-1])["samples"][0]
    assert event["tokens"] == [chr(10), None, None]
    [[pos, left]] = event["partial"]
    want = [chr(i) for i in S.consistent(S.state_digits(ids[0, 2], code), code).nonzero().flatten().tolist()]
    assert pos == 2 and left == want and chr(12) in left and 1 < len(left) <= 8  # 3 of 7 bits masked
    assert "partial" not in rec.event(rec.frames[0])["samples"][0]  # step 0: nothing partly known yet
    view = LiveView(decode, mask_token_id=V, enabled=False, partial=rec.partial)
    text = view._row(ids[0].tolist(), [False] * 3, [False] * 3, None)
    assert text.plain == chr(10) + "\u2591" + PARTIAL_GLYPH
