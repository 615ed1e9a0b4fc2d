"""Text longer than block_size: semi-autoregressive windows over any diffusion sampler (blockwise.generate_long).

Block diffusion's generate_blocks is tested in test_block_diffusion.py.
"""

from __future__ import annotations

import pytest
import torch
from fakes import MASK, Fake, V, gen, one_hot_logits, tiny_gpt

from nanodlm.sampling.blockwise import generate_long
from nanodlm.sampling.samplers import get_sampler

# --- long generation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["seed", "confidence"])
def test_generate_long_past_block_size(name):
    model = tiny_gpt("diffusion")
    prefix = torch.randint(0, MASK, (2, 5), generator=gen(2))
    widths = []
    tokens, info = generate_long(model, prefix, 80, 32, name, mask_token_id=MASK, steps=3, generator=gen(),
                                 temperature=0.8, on_step=lambda s, t, rev, rem: widths.append(t.size(1)))
    assert tokens.shape == (2, 80) and torch.equal(tokens[:, :5], prefix) and (tokens != MASK).all()
    assert info["blocks"] == 4  # 5 + 27 new, then 16 of context + 16 new per block: 32, 48, 64, 80
    assert widths[-1] == 80 and widths == sorted(widths)


def test_generate_long_conditions_on_previous_text():
    windows = []

    def fn(idx, call):
        windows.append(idx.clone())
        return one_hot_logits(3).expand(idx.size(0), idx.size(1), V).clone()

    prefix = torch.tensor([[1, 2, 4, 5, 6, 7]])
    tokens, _ = generate_long(Fake(fn), prefix, 20, 8, get_sampler("seed"), mask_token_id=MASK, steps=2,
                              new_block=3, generator=gen())
    assert tokens[0].tolist() == [1, 2, 4, 5, 6, 7] + [3] * 14
    assert all(w.size(1) <= 8 for w in windows)
    assert windows[0][0, :5].tolist() == [2, 4, 5, 6, 7]  # the last block_size - new_block tokens, fixed
