"""Fill-in-the-middle for gpt2 models: the layout, training, eval, infilling through the generation library."""

from __future__ import annotations

import pytest
import torch

from nanodlm.core.errors import UserError
from nanodlm.diffusion.fim import N_SENTINELS, fim_ids, fim_layout, fim_prompt, fim_restore, fim_transform
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling.fim import fim_middle_nll, generate_fim
from nanodlm.training.config import TrainConfig, build_config

V = 65
IDS = fim_ids(V)


def test_the_fim_layout_is_a_permutation_of_the_window_plus_sentinels_and_back() -> None:
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(0, V, (64, 33), generator=gen)  # (B, T+1)
    out = fim_transform(windows, 0.5, 0.5, IDS, gen)
    assert out.shape == windows.shape  # windows stay block_size + 1 long
    laid = [r for r in range(64) if out[r, 0] == IDS.pre]
    assert 15 < len(laid) < 50  # about half
    spm = 0
    for r in range(64):
        row = out[r].tolist()
        if r not in laid:
            assert row == windows[r].tolist()
            continue
        text = windows[r, :33 - N_SENTINELS].tolist()
        assert sorted(row) == sorted(text + list(IDS))  # a permutation of the text plus the four sentinels
        assert row[-1] == IDS.eom and fim_restore(row, IDS) == text  # and back
        spm += row[1] == IDS.suf
    assert 0 < spm < len(laid)
    assert fim_restore(windows[0].tolist(), IDS) == windows[0].tolist()


def test_layouts_and_prompts_agree() -> None:
    p, m, s = [1, 2], [3, 4, 5], [6]
    for spm in (False, True):
        seq = fim_layout(p, m, s, IDS, spm)
        prompt = fim_prompt(p, s, IDS, spm)
        if spm:
            assert seq[:len(prompt)] == prompt and seq[len(prompt):] == [*m, IDS.eom]
        else:
            assert seq == [*prompt, *m, IDS.eom]
        assert fim_restore(seq, IDS) == p + m + s
    assert fim_restore(fim_layout([], [], [7, 8], IDS), IDS) == [7, 8]


def _model(vocab: int = V + 4, **kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=vocab, fim_sentinels=4, **kw))


def test_a_filled_hole_has_exactly_its_length_and_no_sentinel() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(0)
    mids, info = generate_fim(model, [1, 2, 3], [4, 5], 8, length=7, max_new=7, temperature=1.5, generator=gen)
    assert all(len(m) == 7 and all(0 <= t < V for t in m) for m in mids)
    assert info["forward_passes"] == 7  # one prefill, then one per token after the first
    class EomLover:  # a fake model that always wants <EOM>: a known length is still written whole
        config = model.config

        def __call__(self, idx, **kw):
            logits = torch.zeros(*idx.shape, V + 4)
            logits[..., IDS.eom] = 20.0
            return logits, None

    model = EomLover()
    mids, _ = generate_fim(model, [1], [2], 3, length=5, max_new=5, generator=gen)
    assert [len(m) for m in mids] == [5, 5, 5]
    free, info = generate_fim(model, [1], [2], 3, length=None, max_new=9, generator=gen)
    assert free == [[], [], []] and info["ended_by_eom"] == 3  # without a length: until <EOM>
    with pytest.raises(ValueError, match="do not fit"):
        generate_fim(model, [1] * 20, [2] * 10, 1, length=5, max_new=5, generator=gen)


def test_the_cached_and_uncached_fills_agree_and_the_nll_is_what_greedy_maximizes() -> None:
    model = _model()
    a, _ = generate_fim(model, [1, 2], [3], 2, length=6, max_new=6, temperature=0.0,
                        generator=torch.Generator().manual_seed(1))
    b, _ = generate_fim(model, [1, 2], [3], 2, length=6, max_new=6, temperature=0.0,
                        generator=torch.Generator().manual_seed(1), use_cache=False)
    assert a == b
    greedy = fim_middle_nll(model, [1, 2], a[0], [3])
    other = fim_middle_nll(model, [1, 2], [(t + 1) % V for t in a[0]], [3])
    assert 0 < greedy < other


def test_fim_flags_are_checked() -> None:
    cfg = build_config(TrainConfig, {"model_type": "gpt2", "objective": "fim"})
    assert (cfg.fim_rate, cfg.fim_spm_rate) == (0.5, 0.0)
    with pytest.raises(UserError, match="objective=fim trains a gpt2"):
        build_config(TrainConfig, {"model_type": "diffusion", "objective": "fim"})
    with pytest.raises(UserError, match="needs objective=fim"):
        build_config(TrainConfig, {"model_type": "diffusion", "fim_rate": 0.5})
    with pytest.raises(UserError, match="fim_rate"):
        build_config(TrainConfig, {"model_type": "gpt2", "objective": "fim", "fim_rate": 1.5})
    with pytest.raises(ValueError, match="fim_sentinels"):
        GPTConfig(model_type="diffusion", vocab_size=70, fim_sentinels=4)
