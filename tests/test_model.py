"""The GPT model: causal vs bidirectional, logits shapes, [MASK] id, vocab padding, positions, tying, KV cache."""

from __future__ import annotations

import pytest
import torch

from nanodlm.model.model import GPT, GPTConfig

VOCAB = 65  # a char vocabulary


def tiny(model_type: str = "gpt2", vocab_size: int = VOCAB, pos_emb: str = "learned", **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=16, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False,
                    model_type=model_type, pos_emb=pos_emb, **kw)
    return GPT(cfg).eval()


def tokens(B: int = 2, T: int = 12, vocab: int = VOCAB, seed: int = 1) -> torch.Tensor:
    return torch.randint(vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_gpt2_is_causal(pos_emb: str) -> None:
    model = tiny("gpt2", pos_emb=pos_emb)
    x = tokens()
    x2 = x.clone()
    x2[:, 8] = (x2[:, 8] + 1) % VOCAB  # change one "future" token
    with torch.no_grad():
        a, _ = model(x, all_logits=True)
        b, _ = model(x2, all_logits=True)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)  # positions before it cannot see it
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-4)


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_diffusion_is_bidirectional(pos_emb: str) -> None:
    model = tiny("diffusion", vocab_size=VOCAB + 1, pos_emb=pos_emb)
    x = tokens()
    x2 = x.clone()
    x2[:, 8] = (x2[:, 8] + 1) % VOCAB
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x2)
    for t in range(8):  # every earlier position sees the change
        assert not torch.allclose(a[:, t], b[:, t], atol=1e-5), t


def test_logits_shapes() -> None:
    x = tokens(B=3, T=10)
    diff = tiny("diffusion", vocab_size=VOCAB + 1)
    logits, loss = diff(x)
    assert logits.shape == (3, 10, VOCAB + 1) and loss is None  # data vocab + [MASK]
    gpt = tiny("gpt2")
    logits, loss = gpt(x)
    assert logits.shape == (3, 1, VOCAB) and loss is None  # generation only needs the last position
    full, _ = gpt(x, all_logits=True)
    assert full.shape == (3, 10, VOCAB)
    assert torch.allclose(full[:, -1:], logits, atol=1e-6)
    logits, loss = gpt(x, targets=tokens(B=3, T=10, seed=2))
    assert logits.shape == (3, 10, VOCAB) and loss.ndim == 0 and torch.isfinite(loss)


def test_loss_ignores_minus_one_targets() -> None:
    model = tiny("gpt2")
    x, y = tokens(), tokens(seed=3)
    y_ignored = y.clone()
    y_ignored[:, 6:] = -1
    full = torch.nn.functional.cross_entropy(model(x, all_logits=True)[0][:, :6].reshape(-1, VOCAB),
                                             y[:, :6].reshape(-1))
    assert torch.allclose(model(x, y_ignored)[1], full, atol=1e-6)


def test_mask_token_id_is_last() -> None:
    assert GPTConfig(vocab_size=66, model_type="diffusion").mask_token_id == 65
    assert GPTConfig(vocab_size=66, model_type="diffusion", mask_token_id=65).mask_token_id == 65
    with pytest.raises(ValueError, match="mask_token_id"):
        GPTConfig(vocab_size=66, model_type="diffusion", mask_token_id=3)
    with pytest.raises(ValueError):
        GPTConfig(model_type="bert")
    with pytest.raises(ValueError):
        GPTConfig(pos_emb="alibi")


def test_padded_vocab_never_produced() -> None:
    model = tiny("diffusion", vocab_size=50258)  # GPT-2 BPE + [MASK]
    assert model.config.padded_vocab_size == 50304
    assert model.transformer.wte.weight.shape[0] == 50304 and model.lm_head.weight.shape[0] == 50304
    x = tokens(vocab=50258)
    hidden = {}
    model.transformer.ln_f.register_forward_hook(lambda m, i, out: hidden.update(h=out))
    with torch.no_grad():
        model(x)
        h = hidden["h"][0, 0]  # the final hidden state at one position
        model.lm_head.weight[50258:] = 100.0 * h / h.norm()  # padded rows now win there if not cut
        assert int(model.lm_head(hidden["h"])[0, 0].argmax()) >= 50258  # the trap is armed
        logits, _ = model(x)
    assert logits.shape == (*x.shape, 50258)
    assert int(logits.argmax(-1).max()) < 50258
    assert GPTConfig(vocab_size=64).padded_vocab_size == 64
    assert GPTConfig(vocab_size=65).padded_vocab_size == 128


@pytest.mark.parametrize("model_type", ["gpt2", "diffusion"])
def test_rope_and_learned_positions(model_type: str) -> None:
    vocab = VOCAB + (model_type == "diffusion")
    learned, rope = tiny(model_type, vocab, "learned"), tiny(model_type, vocab, "rope")
    assert "wpe" in learned.transformer and "wpe" not in rope.transformer
    for model in (learned, rope):
        logits, loss = model(tokens(), tokens(seed=4))
        assert torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
    # both encode order: the same tokens in another order give different logits at the first position
    x = torch.arange(12).unsqueeze(0)
    for model in (learned, rope):
        a = model(x, all_logits=True)[0]
        b = model(x.flip(1), all_logits=True)[0]
        assert not torch.allclose(a[:, -1], b[:, 0], atol=1e-4)
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(n_embd=30, n_head=10, pos_emb="rope")


def test_weight_tying() -> None:
    model = tiny("gpt2")
    assert model.transformer.wte.weight is model.lm_head.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names or "transformer.wte.weight" not in names  # counted once
    model(tokens(), tokens(seed=5))[1].backward()
    assert model.lm_head.weight.grad is model.transformer.wte.weight.grad


def test_too_long_sequence() -> None:
    with pytest.raises(ValueError, match="block_size"):
        tiny("gpt2")(tokens(T=17))


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_kv_cache_matches_full_forward(pos_emb: str) -> None:
    model = tiny("gpt2", pos_emb=pos_emb)
    x = tokens(B=2, T=16)
    with torch.no_grad():
        full, _ = model(x, all_logits=True)  # (B, T, V)
        cache = model.new_kv_cache(2, x.device, torch.float32)
        prefill = model.decode(x[:, :5], cache, all_logits=True)
        steps = [prefill]
        for t in range(5, 16):
            logits = model.decode(x[:, t:t + 1], cache)
            steps.append(logits)
        assert cache.pos == 16
    incremental = torch.cat(steps, dim=1)
    assert incremental.shape == full.shape
    assert torch.allclose(incremental, full, atol=1e-5)
    with torch.no_grad(), pytest.raises(ValueError, match="block_size"):
        model.decode(x[:, :1], cache)  # the cache is full


def test_kv_cache_owns_its_position() -> None:
    model = tiny("gpt2")
    x = tokens(B=2, T=16)
    cache = model.new_kv_cache(2, x.device, torch.float32)
    with torch.no_grad():
        first = model.decode(x[:, :4], cache)
        assert cache.pos == 4
        with pytest.raises(ValueError, match="one token at a time"):
            model.decode(x[:, 4:6], cache)
        cache.reset()  # start over: the same prefill gives the same logits
        assert cache.pos == 0 and torch.equal(model.decode(x[:, :4], cache), first)
    with pytest.raises(ValueError, match="cannot keep"):
        cache.advance(13)  # 4 + 13 > block_size 16
    with pytest.raises(AttributeError):
        cache.pos = 0  # read-only: only the cache moves its position


@pytest.mark.parametrize(("attn_dropout", "expected"), [(None, 0.1), (0.0, 0.0), (0.05, 0.05)])
def test_attn_dropout_sets_the_attention_kernels_dropout_alone(
        monkeypatch: pytest.MonkeyPatch, attn_dropout: float | None, expected: float) -> None:
    # None follows dropout (nanoGPT); 0 keeps the fused CPU kernel, which has no dropout, while the residual
    # stream still drops at `dropout`
    import nanodlm.model.model as model_module

    seen: list[float] = []
    sdpa = model_module.F.scaled_dot_product_attention

    def spy(*args, dropout_p: float = 0.0, **kw):
        seen.append(dropout_p)
        return sdpa(*args, dropout_p=dropout_p, **kw)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", spy)
    cfg = GPTConfig(block_size=16, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, dropout=0.1,
                    attn_dropout=attn_dropout)
    model = GPT(cfg).train()
    x = tokens()
    model(x, x)
    assert seen == [expected, expected]
    out = [model.transformer.h[0].attn(model.transformer.wte(x), None, None, 0) for _ in range(2)]
    assert not torch.equal(out[0], out[1])  # the residual dropout still draws
    seen.clear()
    model.eval()(x, x)
    assert seen == [0.0, 0.0]


def test_attn_dropout_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="'attn_dropout' must be in"):
        GPTConfig(vocab_size=VOCAB, attn_dropout=1.0)
