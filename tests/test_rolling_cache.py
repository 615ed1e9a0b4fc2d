"""The opt-in rolling KV cache (``--rolling_cache``; speculative.py, ``generate_ar``, ``KVCache.evict``): past
block_size it keeps drafting over the newest keys instead of re-running the window. It is an approximation of AR
sampling there, so the tests check what it is: unchanged within block_size, every pass counted with its cost,
exactly block_size keys after an eviction, the logits of a fresh forward of the kept window where layer 0's keys
are all there is (one layer), and not where deeper keys saw evicted tokens (two layers)."""

from __future__ import annotations

import pytest
import torch
from test_speculative import V, markov_text, tiny_tidar

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.model.attention import KVCache
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling import speculative
from nanodlm.sampling.ar_sampling import generate_ar
from nanodlm.sampling.generate import Prompt, SamplerOptions
from nanodlm.sampling.settings import check_settings, notes
from nanodlm.web.request import parse_request

BS = 16  # tiny_tidar's block_size


@pytest.fixture(scope="module")
def model() -> GPT:
    return tiny_tidar()  # 2 layers, rope, draft_len 4, float64, trained on a Markov chain


def row(model: GPT, prompt: list[int], n: int, *, rolling: bool, seed: int = 0, k: int = 4, temperature: float = 1.0,
        predraft: bool = False) -> tuple[list[int], dict]:
    with torch.no_grad():
        return speculative.speculative_row(model, prompt, n, draft_len=k, temperature=temperature, top_k=None,
                                           top_p=None, generator=torch.Generator().manual_seed(seed),
                                           predraft=predraft, rolling_cache=rolling)


def test_evict_moves_the_newest_keys_to_the_front_and_keeps_their_positions() -> None:
    cache = KVCache(1, 1, 1, 8, 2, torch.device("cpu"), torch.float64)
    cache.update(0, torch.arange(10.0).view(1, 1, 5, 2), torch.arange(10.0).view(1, 1, 5, 2))
    cache.advance(5)
    cache.evict(2)
    assert (cache.pos, cache.offset) == (3, 2)
    assert cache.k[0, 0, 0, :3].flatten().tolist() == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]  # positions 2, 3, 4
    cache.evict(5)  # more than it holds: the 2 positions after the kept ones are skipped too
    assert (cache.pos, cache.offset) == (0, 7)
    cache.reset()
    assert (cache.pos, cache.offset) == (0, 0)


@pytest.mark.parametrize("k,predraft,temperature", [(4, False, 1.0), (2, True, 1.0), (4, False, 0.0)])
def test_within_block_size_the_option_changes_nothing(model: GPT, k: int, predraft: bool, temperature: float) -> None:
    for prompt, n in (([0], 15), (markov_text(6, 1).tolist(), 10)):  # prompt + n <= block_size 16
        for seed in range(3):
            off = row(model, prompt, n, rolling=False, seed=seed, k=k, predraft=predraft, temperature=temperature)
            on = row(model, prompt, n, rolling=True, seed=seed, k=k, predraft=predraft, temperature=temperature)
            assert on[0] == off[0] and on[1]["pass_tokens"] == off[1]["pass_tokens"]
            assert on[1]["rolled_passes"] == 0
    g = torch.Generator().manual_seed(0)
    ref = generate_ar(model, torch.tensor([[0, 1]]), 14, generator=g)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate_ar(model, torch.tensor([[0, 1]]), 14, generator=g, rolling_cache=True), ref)


def test_past_block_size_it_keeps_drafting_and_counts_each_pass_with_its_keys(model: GPT, monkeypatch) -> None:
    prompt, n = [0, 1, 2, 3], 60  # 64 tokens: 4 windows of 16
    exact, off = row(model, prompt, n, rolling=False, seed=2)  # the option off: full-window passes past 16
    keys: list[int] = []  # keys each pass attends to (layer 0)
    update = KVCache.update

    def counted(self, layer, k, v):
        out = update(self, layer, k, v)
        if layer == 0:
            keys.append(out[0].size(2))
        return out

    monkeypatch.setattr(KVCache, "update", counted)
    calls: list[int] = []
    hook = model.transformer.h[0].register_forward_hook(lambda module, args, out: calls.append(args[0].size(1)))
    try:
        out, stats = row(model, prompt, n, rolling=True, seed=2)
    finally:
        hook.remove()
    assert len(out) == len(prompt) + n and sum(stats["tokens_per_pass"]) == n
    assert stats["passes"] == len(calls) < n and stats["pass_tokens"] == calls  # passes and their cost, measured
    assert stats["passes"] < off["passes"] and sum(stats["pass_tokens"]) < sum(off["pass_tokens"])
    assert stats["window_passes"] == 0 and off["window_passes"] > 0
    first = next(i for i, e in enumerate(stats["evicted"]) if e)  # the first pass over a rolled cache
    assert stats["rolled_passes"] == stats["passes"] - first
    rolled = range(first, stats["passes"])
    assert sum(stats["tokens_per_pass"][i] for i in rolled) > len(rolled)  # drafts accepted past the window
    assert len(keys) == stats["passes"] and max(keys) <= BS
    before = [len(prompt) + sum(stats["tokens_per_pass"][:i]) for i in range(stats["passes"])]
    full = [i for i in rolled if stats["evicted"][i] and before[i] + 8 < len(out)]  # a full draft (not at the end)
    assert full and all(keys[i] == BS for i in full)  # after an eviction a pass sees a full window, no more
    # up to the first eviction the passes, and their draws, are the option off's
    written = len(prompt) + sum(stats["tokens_per_pass"][:first])
    assert out[:written] == exact[:written] and out != exact


def test_deterministic_under_a_seed(model: GPT) -> None:
    a = row(model, [0, 1], 50, rolling=True, seed=5, predraft=True, k=2)
    assert a == row(model, [0, 1], 50, rolling=True, seed=5, predraft=True, k=2)
    assert a[1]["rolled_passes"] > 0
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    x, y = (generate_ar(model, torch.tensor([[0, 1]]), 40, generator=gi, rolling_cache=True) for gi in g)
    assert torch.equal(x, y)


def long_prompt_passes(model: GPT, monkeypatch) -> tuple[list[int], list[tuple[int, int, list[int], torch.Tensor]]]:
    """A rolled speculative run (a prompt longer than the window) -> (its text, each pass's (cache offset, kept
    keys, clean tokens, AR logits))."""
    passes = []
    draft_pass = speculative.draft_pass

    def recorded(model, clean, n_masks, cache, blocks=1):
        offset, kept = cache.offset, cache.pos
        ar, dr = draft_pass(model, clean, n_masks, cache, blocks)
        passes.append((offset, kept, clean[0].tolist(), ar[0]))
        return ar, dr

    monkeypatch.setattr(speculative, "draft_pass", recorded)
    out, _ = row(model, markov_text(20, 7).tolist(), 30, rolling=True, seed=1)
    return out, passes


def window_error(model: GPT, out: list[int], passes: list) -> float:
    """The largest gap between a rolled pass's AR logits and a fresh forward of the window it kept."""
    err = 0.0
    for offset, kept, clean, ar in passes:
        assert offset > 0  # the 20-token prompt is longer than the window: every pass is rolled
        window = out[offset:offset + kept] + clean
        assert len(window) <= BS
        with torch.no_grad():
            ref = model(torch.tensor([window]), all_logits=True)[0][0, -len(clean):]
        err = max(err, float((ar - ref).abs().max()))
    return err


def test_one_layer_rolled_logits_are_a_fresh_forward_of_the_kept_window(monkeypatch) -> None:
    torch.manual_seed(0)  # untrained: the logits need no meaning to be compared
    one = GPT(GPTConfig(vocab_size=V, block_size=BS, n_layer=1, n_head=2, n_embd=32, pos_emb="rope",
                        draft_len=4)).double().eval()  # one layer: a key depends on its token and position only
    out, passes = long_prompt_passes(one, monkeypatch)
    assert window_error(one, out, passes) < 1e-6  # positions, eviction and masks: exactly the kept window


def test_two_layers_differ_from_a_fresh_forward_the_approximation(model: GPT, monkeypatch) -> None:
    out, passes = long_prompt_passes(model, monkeypatch)
    assert window_error(model, out, passes) > 1e-3  # layer 1's kept keys saw the evicted tokens


def test_one_layer_rolling_ar_is_exact_sliding_window_ar() -> None:
    torch.manual_seed(0)
    one = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=16, pos_emb="rope")).double().eval()
    for seed in range(3):
        ref = generate_ar(one, torch.tensor([[0, 1, 2]]), 30, generator=torch.Generator().manual_seed(seed))
        stats: dict = {}
        out = generate_ar(one, torch.tensor([[0, 1, 2]]), 30, generator=torch.Generator().manual_seed(seed),
                          rolling_cache=True, stats=stats)
        assert torch.equal(out, ref) and stats["rolled"] == 3 + 30 - 8 - 1 and stats["passes"] == 30


ROPE_TIDAR = GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16, draft_len=4, mask_token_id=8,
                       pos_emb="rope")
LEARNED = GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16)


def test_learned_positions_are_refused_in_one_line() -> None:
    for options in (SamplerOptions(rolling_cache=True), SamplerOptions(sampler="ar", rolling_cache=True)):
        with pytest.raises(UserError, match=r"--rolling_cache=True needs rotary positions \(pos_emb=rope\)") as e:
            check_settings(LEARNED, options, Prompt())
        assert "\n" not in str(e.value)
    cache = GPT(LEARNED).new_kv_cache(1, torch.device("cpu"), torch.float32)
    cache.evict(1)  # the model itself refuses a rolled cache too (library callers)
    with pytest.raises(ValueError, match="learned position embeddings"):
        GPT(LEARNED).decode(torch.tensor([[1]]), cache)
    assert check_settings(ROPE_TIDAR, SamplerOptions(sampler="speculative", rolling_cache=True), Prompt(),
                          {"sampler", "rolling_cache"}) == []


def test_what_it_cannot_roll_is_named_and_past_block_size_it_says_so() -> None:
    lines = check_settings(ROPE_TIDAR, SamplerOptions(sampler="ar", rolling_cache=True, use_kv_cache=False),
                           Prompt(), {"sampler", "rolling_cache", "use_kv_cache"})
    assert lines == ["--rolling_cache=True: it rolls the KV cache, and --use_kv_cache=False keeps none"]
    lines = check_settings(ROPE_TIDAR, SamplerOptions(rolling_cache=True), Prompt(suffix="x"), {"rolling_cache"})
    assert any(line.startswith("--rolling_cache=True: a FIM model") for line in lines)
    on = SamplerOptions(sampler="speculative", rolling_cache=True)
    assert notes(ROPE_TIDAR, on, Prompt(max_new_tokens=15)) == []  # within block_size: nothing to say
    said = notes(ROPE_TIDAR, on, Prompt(max_new_tokens=40))
    assert len(said) == 1 and "an approximation, not AR sampling" in said[0]


def test_the_api_takes_a_json_boolean() -> None:
    assert parse_request(b'{"rolling_cache": true}')[1].rolling_cache is True
    with pytest.raises(UserError, match="key 'rolling_cache' expects true or false; got the string 'yes'"):
        parse_request(b'{"rolling_cache": "yes"}')


def test_the_cli_rolls_past_block_size_and_says_so(tidar_run: str, tiny_runs: dict[str, str],
                                                   capsys: pytest.CaptureFixture) -> None:
    base = ["sample", "--device=cpu", "--num_samples=1", "--max_new_tokens=40", "--rolling_cache=True", "--verbose"]
    assert main([*base, f"--out_dir={tidar_run}", "--ckpt=last", "--sampler=speculative"]) == 0
    err = capsys.readouterr().err
    assert err.count("an approximation, not AR sampling") == 1 and "passes over a rolled cache" in err
    assert main([*base, f"--out_dir={tiny_runs['gpt2']}"]) == 1  # learned positions
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --rolling_cache=True needs rotary positions") and "\n" not in err
