"""GPT-2 weights from Hugging Face: a tiny random GPT2LMHeadModel saved to disk must give our model its logits."""

from __future__ import annotations

import pytest
import torch

from nanodlm.core.errors import UserError
from nanodlm.runs.pretrained import from_pretrained

transformers = pytest.importorskip("transformers")


def save_tiny_hf_gpt2(path, vocab_size: int = 65, n_positions: int = 32, seed: int = 0) -> None:
    """A randomly initialised 2-layer GPT-2 (HF defaults: gelu_new, biases, eps 1e-5) saved with save_pretrained."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  initializer_range=0.3)  # large weights: O(1) activations, where GELUs differ
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():  # HF zero-initialises biases and sets LayerNorms to 1/0: randomise them so they count
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)


@pytest.fixture
def hf_dir(tmp_path):
    path = tmp_path / "tiny-gpt2"
    save_tiny_hf_gpt2(path)
    return path


def test_logits_match_hf(hf_dir):
    ours = from_pretrained(str(hf_dir))
    theirs = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).float().eval()
    idx = torch.randint(0, 65, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = theirs(idx).logits  # (3, 32, 65)
        got, _ = ours(idx, all_logits=True)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-4
    assert ours.config.activation == "gelu_tanh" and ours.config.bias and ours.config.pos_emb == "learned"
    # the embedding table is padded to 128 rows with zeros and stays tied to the head
    assert ours.transformer.wte.weight.shape[0] == 128
    assert ours.transformer.wte.weight is ours.lm_head.weight
    assert ours.transformer.wte.weight[65:].abs().sum() == 0


def test_exact_gelu_variant_matches(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                  activation_function="gelu")
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    ours = from_pretrained(str(tmp_path))
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        assert (ours(idx, all_logits=True)[0] - theirs(idx).logits).abs().max().item() <= 1e-4
    assert ours.config.activation == "gelu"


def test_unsupported_variant_is_one_line_error(tmp_path):
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                  activation_function="relu")
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="activation_function='relu'"):
        from_pretrained(str(tmp_path))


def test_offline_without_cache_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as e:
        from_pretrained("gpt2-medium")
    msg = str(e.value)
    assert "\n" not in msg and "empty-cache" in msg and "HF_HOME" in msg


def test_unknown_name(tmp_path):
    with pytest.raises(UserError, match="neither a GPT-2 name"):
        from_pretrained(str(tmp_path / "nope"))
