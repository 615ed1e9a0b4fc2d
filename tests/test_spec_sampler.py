"""The `seed` sampler is the specification's ``generate_diffusion`` draw for draw.

``spec_generate_diffusion`` below is the specification's loop as written there (section 1.5 of its plan), only
lifted out of the GPT class (``self`` is the model argument). Both run on a fake model from the same global
RNG state; the sampler must return the same tokens.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

from nanodlm.sampling.samplers import sample_seed

V, MASK = 12, 11


class FakeDiffusion(nn.Module):
    """Logits that depend on the canvas (so every step differs), with a real chance of sampling [MASK]."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"mask_token_id": MASK, "model_type": "diffusion"})()
        self.table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits = self.table[idx] + torch.arange(idx.size(1), dtype=torch.float)[None, :, None] * 0.1  # (B, L, V)
        logits[..., MASK] += 1.5  # [MASK] is often drawn: positions stay masked and the final pass runs
        return logits, None


@torch.no_grad()
def spec_generate_diffusion(self, idx, max_steps, temperature=1.0, top_k=None):
    assert self.config.model_type == 'diffusion', "This generation method is only for diffusion models"
    assert self.config.mask_token_id is not None, "mask_token_id must be configured."
    self.eval()

    for _ in range(max_steps):
        # Check if we are done
        mask_token_id = self.config.mask_token_id
        if not (idx == mask_token_id).any():
            break

        logits, _ = self(idx)
        logits = logits / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, :, [-1]]] = -float('Inf')

        probs = F.softmax(logits, dim=-1)
        idx_next = torch.multinomial(probs.view(-1, probs.size(-1)), num_samples=1).view(idx.shape)

        # Only update the tokens that were previously [MASK]
        mask = (idx == mask_token_id)
        idx = torch.where(mask, idx_next, idx)

    # Finalization: force any remaining [MASK] tokens to be something else
    if (idx == self.config.mask_token_id).any():
        logits, _ = self(idx)
        logits[:, :, self.config.mask_token_id] = -float('Inf') # Forbid predicting MASK
        probs = F.softmax(logits / temperature, dim=-1)
        idx_next = torch.multinomial(probs.view(-1, probs.size(-1)), num_samples=1).view(idx.shape)
        mask = (idx == self.config.mask_token_id)
        idx = torch.where(mask, idx_next, idx)

    self.train()
    return idx


@pytest.mark.parametrize("max_steps,temperature,top_k", [(3, 1.0, None), (2, 0.7, 3), (5, 1.3, 1), (1, 1.0, 2)])
def test_seed_sampler_is_the_specification(max_steps: int, temperature: float, top_k: int | None) -> None:
    model = FakeDiffusion()
    canvas = torch.full((3, 10), MASK, dtype=torch.long)
    canvas[:, :2] = torch.tensor([1, 2])  # a prefix: given positions are never touched
    torch.manual_seed(1234)
    expected = spec_generate_diffusion(model, canvas.clone(), max_steps, temperature, top_k)
    torch.manual_seed(1234)
    tokens, info = sample_seed(model, canvas, mask_token_id=MASK, steps=max_steps, temperature=temperature,
                               top_k=top_k, generator=torch.default_generator)
    assert torch.equal(tokens, expected)
    assert (tokens != MASK).all()


def test_the_final_pass_runs_and_uses_no_top_k() -> None:
    # top_k=1 with [MASK] the top token everywhere: the loop leaves every position masked, and the final pass
    # must draw from softmax(logits / T) over the real tokens, not the top-1 real token
    model = FakeDiffusion()
    model.table[:, MASK] = 50.0
    canvas = torch.full((4, 16), MASK, dtype=torch.long)
    torch.manual_seed(7)
    expected = spec_generate_diffusion(model, canvas.clone(), 2, 1.0, 1)
    torch.manual_seed(7)
    tokens, info = sample_seed(model, canvas, mask_token_id=MASK, steps=2, top_k=1, generator=torch.default_generator)
    assert info["final_pass"] and info["committed_per_step"] == [0, 0, 64]
    assert torch.equal(tokens, expected)
    assert len(set(tokens[:, 0].tolist())) > 1  # position 0 has one top real token; the draws vary anyway
