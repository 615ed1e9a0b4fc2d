"""Block diffusion (BD3-LM): the block-causal mask, training forward == sampling forward, per-block
diffusion times, the bound, and block-by-block sampling. Tiny real GPTs and fake models we control."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nanodlm.core.errors import UserError
from nanodlm.diffusion import diffusion as D
from nanodlm.diffusion.diagnostics import diagnostics
from nanodlm.model.attention import block_diffusion_mask
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling.blockwise import generate_blocks, generate_long
from nanodlm.training.config import TrainConfig

V = 11
M = V - 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def block_gpt(block: int, T: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=2, n_head=2, n_embd=16, model_type="diffusion",
                         pos_emb="rope", diffusion_block=block)).eval()


# --- model ------------------------------------------------------------------------------------------------

def test_block_mask_structure():
    m = block_diffusion_mask(4, 2, torch.device("cpu"), with_clean=False)
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    m2 = block_diffusion_mask(4, 2, torch.device("cpu"), with_clean=True).int()
    noisy, clean = m2[:4], m2[4:]
    assert noisy[:, :4].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]  # own noisy block
    assert noisy[:, 4:].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]  # earlier clean blocks
    assert clean[:, :4].sum() == 0 and clean[:, 4:].tolist() == m.int().tolist()  # clean never sees x_t


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_training_forward_matches_sampling_forward(pos_emb):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=V, n_layer=2, n_head=2, n_embd=16, model_type="diffusion",
                          pos_emb=pos_emb, diffusion_block=4)).eval()
    x = torch.randint(0, M, (2, 16), generator=gen(1))
    x_t = x.clone()
    x_t[:, 8:12] = M
    x_t[:, 9] = x[:, 9]  # a visible token inside the noisy block
    train_logits, _ = model(x_t, clean=x)  # (B, 16, V): every block noisy, earlier blocks clean
    canvas = torch.cat((x[:, :8], x_t[:, 8:12]), dim=1)  # what block 2's sampler sees
    sample_logits, _ = model(canvas)
    torch.testing.assert_close(train_logits[:, 8:12], sample_logits[:, 8:12], rtol=1e-5, atol=1e-5)


def test_block_model_sees_only_its_block_and_the_clean_past():
    model = block_gpt(4)
    x = torch.randint(0, M, (1, 16), generator=gen(2))
    x_t = torch.full_like(x, M)
    base, _ = model(x_t, clean=x)
    later_clean = x.clone()
    later_clean[:, 8:] = (later_clean[:, 8:] + 1) % M  # clean text from block 2 on
    other_noisy = x_t.clone()
    other_noisy[:, 0] = 3  # a token in noisy block 0
    changed_clean, _ = model(x_t, clean=later_clean)
    changed_noisy, _ = model(other_noisy, clean=x)
    torch.testing.assert_close(changed_clean[:, :12], base[:, :12])  # noisy blocks 0-2 see clean blocks < own
    assert not torch.allclose(changed_clean[:, 12:], base[:, 12:])  # noisy block 3 sees the clean block 2
    torch.testing.assert_close(changed_noisy[:, 4:], base[:, 4:])  # noisy block 0 is invisible to later blocks
    assert not torch.allclose(changed_noisy[:, :4], base[:, :4])


def test_block_config_validation():
    with pytest.raises(ValueError, match="divide"):
        GPTConfig(block_size=16, vocab_size=V, model_type="diffusion", diffusion_block=5)
    with pytest.raises(ValueError, match="diffusion_block"):
        GPTConfig(block_size=16, vocab_size=V, model_type="gpt2", diffusion_block=4)
    with pytest.raises(ValueError, match="clean"):
        block_gpt(0)(torch.zeros(1, 16, dtype=torch.long), clean=torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(UserError, match="divide block_size"):
        TrainConfig(model_type="diffusion", block_size=64, diffusion_block=6)
    with pytest.raises(UserError, match="model_type=diffusion"):
        TrainConfig(model_type="gpt2", diffusion_block=4)
    with pytest.raises(UserError, match="mdlm_eps < mdlm_t_max"):
        TrainConfig(model_type="diffusion", mdlm_eps=0.5, mdlm_t_max=0.4)


# --- objective and bound ------------------------------------------------------------------------------------

def test_mdlm_corrupt_one_time_per_block():
    x = torch.randint(0, M, (64, 32), generator=gen(3))
    _, t, masked = D.mdlm_corrupt(x, M, gen(4), block=8)
    assert t.shape == (64, 4)
    frac = masked.view(64, 4, 8).float().mean(-1)  # per block
    assert abs((frac - t).mean().item()) < 0.02  # each block masked at its own rate
    assert t.std() > 0.2  # blocks of one row differ


def test_mdlm_loss_per_block_weights_by_hand():
    logits = torch.zeros(1, 4, V)  # uniform over the 10 real tokens under SUBS
    x = torch.zeros(1, 4, dtype=torch.long)
    masked = torch.tensor([[True, False, True, True]])
    t = torch.tensor([[0.5, 0.25]])  # blocks of 2
    expected = torch.log(torch.tensor(10.0)) * (1 / 0.5 + 1 / 0.25 + 1 / 0.25) / 4
    torch.testing.assert_close(D.mdlm_loss(logits, x, masked, t, M, block=2), expected)


def test_per_block_t_when_length_is_not_a_multiple_of_the_block():
    # T=6 in blocks of 4: positions 0-3 are block 0, positions 4-5 a short block 1 (ceil(6/2)=3 was wrong)
    t = torch.tensor([[0.1, 0.9]])
    assert torch.equal(D._per_token_t(t, 6, 4), torch.tensor([[0.1] * 4 + [0.9] * 2]))
    logits = torch.zeros(1, 6, V)
    x = torch.zeros(1, 6, dtype=torch.long)
    masked = torch.tensor([[False, False, False, True, True, False]])
    expected = torch.log(torch.tensor(10.0)) * (1 / 0.1 + 1 / 0.9) / 6  # position 3 keeps its own block's t
    torch.testing.assert_close(D.mdlm_loss(logits, x, masked, t, M, block=4), expected)
    _, t_corrupt, _ = D.mdlm_corrupt(torch.zeros(2, 6, dtype=torch.long), M, gen(1), block=4)
    assert t_corrupt.shape == (2, 2)
    with pytest.raises(ValueError, match="blocks of 4"):
        D._per_token_t(torch.rand(1, 3), 6, 4)


@pytest.mark.parametrize("objective", ["mdlm", "repair"])
def test_whole_sequence_block_equals_plain_model(objective):
    """diffusion_block = block_size is plain MDLM: same loss, same bound, same draws."""
    plain, whole = block_gpt(0), block_gpt(16)
    whole.load_state_dict(plain.state_dict())
    x = torch.randint(0, M, (4, 16), generator=gen(5))
    opts = D.DiffusionOptions(mask_token_id=M, copy_weight=0.1)
    fn = D.get_objective(objective)
    torch.testing.assert_close(fn(whole, x, gen(6), opts), fn(plain, x, gen(6), opts))
    torch.testing.assert_close(D.nelbo(whole, x, M, gen(7)), D.nelbo(plain, x, M, gen(7)))


def test_block_objective_backprops_and_bound_is_finite():
    model = block_gpt(4).train()
    x = torch.randint(0, M, (3, 16), generator=gen(8))
    loss = D.get_objective("repair")(model, x, gen(9), D.DiffusionOptions(mask_token_id=M, copy_weight=0.1))
    loss.backward()
    assert torch.isfinite(loss) and model.lm_head.weight.grad is not None
    bound = D.nelbo(model.eval(), x, M, gen(10))
    assert bound.shape == (3, 4) and torch.isfinite(bound).all()
    assert set(diagnostics(model, x, M, gen(11))) >= {"masked_ce@15", "detect_rate"}


# --- sampling -----------------------------------------------------------------------------------------------

class Recorder(nn.Module):
    """Prefers token 1 everywhere; records the canvas of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, idx: torch.Tensor, **_: object):
        self.seen.append(idx.clone())
        logits = torch.zeros(*idx.shape, V)
        logits[..., 1] = 10.0
        return logits, None


@pytest.mark.parametrize("sampler", ["ancestral", "confidence", "remask"])
def test_generate_blocks_left_to_right(sampler):
    model = Recorder()
    canvas = torch.full((2, 12), M)
    canvas[:, 5] = 7  # a given token inside block 1
    tokens, info = generate_blocks(model, canvas, block=4, sampler=sampler, mask_token_id=M, steps=6,
                                   generator=gen())
    assert (tokens != M).all() and (tokens[:, 5] == 7).all()
    lengths = [s.size(1) for s in model.seen]
    assert lengths == sorted(lengths) and set(lengths) == {4, 8, 12}  # each block sees only what precedes it
    for s in model.seen:
        done = (s.size(1) // 4 - 1) * 4
        assert (s[:, :done] != M).all()  # earlier blocks are complete before a block starts
    assert info["blocks"] == 3 and info["steps_used"] <= 6


def test_generate_blocks_splits_steps_and_skips_fixed_blocks():
    canvas = torch.full((1, 16), M)
    canvas[:, :8] = 2  # blocks 0 and 1 given
    calls = []

    def fake_sampler(model, c, *, mask_token_id, steps, generator, fixed, on_step=None):
        calls.append((c.size(1), steps, fixed.clone()))
        out = c.masked_fill(c == mask_token_id, 3)
        info = {"committed_per_step": [1] * steps, "remasked_per_step": [0] * steps, "steps_used": steps,
                "forward_passes": steps}
        return out, info

    tokens, info = generate_blocks(None, canvas, block=4, sampler=fake_sampler, mask_token_id=M, steps=5,
                                   generator=gen())
    assert [(n, s) for n, s, _ in calls] == [(12, 3), (16, 2)]  # 5 steps over the 2 open blocks
    assert calls[1][2][0, :12].all() and not calls[1][2][0, 12:].any()  # block 2 is fixed when block 3 runs
    assert info["steps_used"] == 5 and (tokens[:, 8:] == 3).all()
    _, info = generate_blocks(None, canvas, block=4, sampler=fake_sampler, mask_token_id=M, steps=1,
                              generator=gen())
    assert info["steps_used"] == 2  # at least one step per open block


def test_block_model_long_generation_end_to_end():
    model = block_gpt(4)
    prefix = torch.randint(0, M, (2, 3), generator=gen(12))
    seen = []
    fn = lambda m, c, **kw: generate_blocks(m, c, block=4, sampler="remask", **kw)  # noqa: E731
    tokens, info = generate_long(model, prefix, 40, 16, fn, mask_token_id=M, steps=8, generator=gen(),
                                 on_step=lambda s, t, r, rm: seen.append(t.size(1)))
    assert tokens.shape == (2, 40) and (tokens != M).all() and torch.equal(tokens[:, :3], prefix)
    assert seen and max(seen) == 40


# --- KV cache -----------------------------------------------------------------------------------------------

def test_cached_block_forward_matches_full_forward():
    model = block_gpt(4)
    x = torch.randint(0, M, (2, 16), generator=gen(13))
    draft = x[:, 8:12].clone()
    draft[:, 1:3] = M
    full, _ = model(torch.cat((x[:, :8], draft), 1))
    cache = model.new_kv_cache(2, torch.device("cpu"), torch.float32)
    for pos in (0, 4):
        model.decode(x[:, pos:pos + 4], cache)
    assert cache.pos == 8
    part = model.decode(draft, cache, keep=False)
    assert cache.pos == 8  # a draft is not kept
    torch.testing.assert_close(part, full[:, 8:12], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="keep must be"):
        model.decode(draft, cache, keep=5)
    model.decode(x[:, 8:12], cache, keep=2)
    with pytest.raises(ValueError, match="whole blocks"):
        model.decode(x[:, 10:12], cache)


def test_finished_blocks_kept_in_the_pass_that_denoises_the_next():
    # one pass over [two finished blocks ; a draft] keeps the first 8 positions and gives the draft's logits
    model = block_gpt(4)
    x = torch.randint(0, M, (2, 16), generator=gen(14))
    draft = x[:, 8:12].clone()
    draft[:, :2] = M
    full, _ = model(torch.cat((x[:, :8], draft), 1))
    cache = model.new_kv_cache(2, torch.device("cpu"), torch.float32)
    logits = model.decode(torch.cat((x[:, :8], draft), 1), cache, keep=8)
    assert cache.pos == 8
    torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.decode(draft, cache, keep=False), full[:, 8:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["confidence", "remask", "seed"])
def test_generate_blocks_cached_equals_uncached(sampler):
    model = block_gpt(4, seed=3)
    canvas = torch.full((3, 14), M)
    canvas[:, :2] = torch.tensor([1, 2])
    runs = [generate_blocks(model, canvas, block=4, sampler=sampler, mask_token_id=M, steps=8, temperature=0.0,
                            generator=gen(), use_cache=use) for use in (True, False)]
    assert torch.equal(runs[0][0], runs[1][0]) and (runs[0][0] != M).all()
    assert runs[0][1]["forward_passes"] == runs[1][1]["forward_passes"]
