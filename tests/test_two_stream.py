"""Block diffusion training attention without the dense (2T, 2T) mask: same loss and gradients as the mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanodlm.model.attention import TwoStreamAttention, block_diffusion_mask
from nanodlm.model.model import GPT, GPTConfig

V = 11


@pytest.mark.parametrize("T,block,chunk", [(16, 4, None), (24, 4, 8), (20, 4, 12), (12, 3, 3), (8, 8, None)])
def test_two_stream_attention_equals_the_dense_mask(T, block, chunk):
    g = torch.Generator().manual_seed(T + block)
    q, k, v = (torch.randn(2, 3, 2 * T, 8, generator=g, requires_grad=True) for _ in range(3))
    w = torch.randn(2, 3, 2 * T, 8, generator=g)  # a random linear read-out, so every output's gradient counts
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=block_diffusion_mask(T, block, q.device, True))
    grads_dense = torch.autograd.grad((dense * w).sum(), (q, k, v))
    two = TwoStreamAttention(T, block, q.device, chunk=chunk)(q, k, v, 0.0)
    torch.testing.assert_close(two, dense, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad((two * w).sum(), (q, k, v)), grads_dense):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    noisy = TwoStreamAttention(T, block, q.device, chunk=chunk)(q, k, v, 0.0, last=True)
    torch.testing.assert_close(noisy, dense[:, :, :T], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pos_emb,shift", [("rope", False), ("learned", False), ("rope", True)])
def test_block_diffusion_loss_and_gradients_match_the_dense_mask(pos_emb, shift):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=V, n_layer=3, n_head=2, n_embd=16, model_type="diffusion",
                          diffusion_block=4, pos_emb=pos_emb, shift=shift))
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, V - 1, (3, 32), generator=g)
    noisy = clean.masked_fill(torch.rand(3, 32, generator=g) < 0.5, V - 1)
    results = []
    for dense in (True, False):
        model.dense_block_mask = dense
        model.zero_grad()
        logits, loss = model(noisy, clean, clean=clean)
        loss.backward()
        results.append((logits.detach(), loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (l0, loss0, g0), (l1, loss1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
