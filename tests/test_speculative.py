"""TiDAR (tidar.py) and its speculative sampler (speculative.py): the text is AR sampling of the same model.

The models are tiny real GPTs in float64 (so cached and uncached passes agree far below any argmax margin),
trained for a few seconds on a Markov chain so that drafts are often, not always, accepted.
"""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch
from torch.nn import functional as F

from nanodlm.diffusion.tidar import draft_pass, tidar_loss, two_stream_logits
from nanodlm.model.attention import tidar_pass_mask, tidar_train_mask
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sampling import speculative
from nanodlm.sampling.ar_sampling import filter_logits, generate_ar
from nanodlm.sampling.speculative import sample_speculative, speculative_row, verify

V = 4  # a tiny vocabulary; [MASK] is id V


def markov_text(n: int, seed: int) -> torch.Tensor:
    """(n,) ids of a chain that mostly steps +1 (mod V), sometimes +2: predictable, not deterministic."""
    g = torch.Generator().manual_seed(seed)
    steps = 1 + (torch.rand(n, generator=g) < 0.3).long()
    return steps.cumsum(0) % V


def tiny_tidar(draft_len: int = 4, block_size: int = 16, iters: int = 150, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=32, pos_emb="rope",
                          draft_len=draft_len)).double()
    data = markov_text(4000, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(iters):
        starts = torch.randint(0, len(data) - block_size - 1, (16,), generator=g)
        w = torch.stack([data[s:s + block_size + 1] for s in starts.tolist()])
        loss = tidar_loss(model, w[:, :-1], w[:, 1:], alpha=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> GPT:
    return tiny_tidar()


def run(model: GPT, prompt: list[int], n: int, k: int, temperature: float = 0.0, seed: int = 0,
        predraft: bool = False):
    with torch.no_grad():
        return speculative_row(model, prompt, n, draft_len=k, temperature=temperature, top_k=None, top_p=None,
                               generator=torch.Generator().manual_seed(seed), predraft=predraft)


# --- the model's two streams -------------------------------------------------------------------------------

def test_text_stream_is_a_plain_ar_model_and_blocks_see_only_the_text_before_them(model):
    x = markov_text(16, 5)[None]
    ar, drafts = two_stream_logits(model, x)
    plain, _ = model(x, all_logits=True)
    assert torch.allclose(ar, plain, atol=1e-10)  # the masks never leak into the text
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % V  # change the text from position 8 on
    _, drafts2 = two_stream_logits(model, y)
    assert torch.allclose(drafts[:, :12], drafts2[:, :12], atol=1e-10)  # blocks 0-2 (k = 4) end their view at 8
    assert not torch.allclose(drafts[:, 12:], drafts2[:, 12:])  # block 3 sees positions 8..11


def test_masks_agree_between_training_and_a_decoding_pass(model):
    mask = tidar_train_mask(8, 4, torch.device("cpu"))
    assert mask[:8, :8].equal(torch.ones(8, 8, dtype=torch.bool).tril()) and not mask[:8, 8:].any()
    assert mask[12, :4].all() and not mask[12, 4:8].any() and mask[12, 12:16].all() and not mask[12, 8:12].any()
    pm = tidar_pass_mask(3, 2, 2, torch.device("cpu"))  # 3 cached, 2 text, 2 masks
    assert pm.tolist() == [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0], [1] * 7, [1] * 7]
    # the decoding pass's draft logits for a block starting at 8 equal training's block 2 (positions 8..11)
    x = markov_text(16, 6)[None]
    _, train_drafts = two_stream_logits(model, x)
    cache = model.new_kv_cache(1, torch.device("cpu"), torch.float64)
    with torch.no_grad():
        ar, dr = draft_pass(model, x[:, :8], 4, cache)
    assert torch.allclose(dr, train_drafts[:, 8:12], atol=1e-9)
    assert cache.pos == 0  # nothing kept until the caller verifies
    # predrafting: block b of a 3-block pass drafts what a one-block pass over the first c - 2 + b tokens drafts
    with torch.no_grad():
        ar3, dr3 = draft_pass(model, x[:, :6], 3, cache, blocks=3)  # 6 + 3 x 3 = 15 slots of 16
        for b in range(3):
            _, one = draft_pass(model, x[:, :4 + b], 3, cache)
            assert torch.allclose(dr3[:, b], one[:, 0], atol=1e-9)
        plain, _ = draft_pass(model, x[:, :6], 0, cache)
    assert torch.allclose(ar3, plain, atol=1e-9)


def test_tidar_loss_trains_both_streams():
    untrained, trained = tiny_tidar(iters=0).eval(), tiny_tidar(iters=150).eval()
    x = torch.stack([markov_text(17, s) for s in range(8)])  # (8, 17)
    losses = []
    with torch.no_grad():
        for m in (untrained, trained):
            ar, drafts = two_stream_logits(m, x[:, :-1])
            losses.append((F.cross_entropy(ar.reshape(-1, V), x[:, 1:].reshape(-1)),  # next token
                           F.cross_entropy(drafts[:, 4:].reshape(-1, V), x[:, 4:-1].reshape(-1))))  # blocks 1-3
    (ar0, dr0), (ar1, dr1) = losses
    assert ar1 < 0.8 * ar0 and dr1 < 0.9 * dr0


# --- exactness at temperature 0 ----------------------------------------------------------------------------

@pytest.mark.parametrize("k,predraft", [(1, False), (2, False), (4, False), (7, False), (2, True), (4, True)])
def test_greedy_equals_greedy_ar_across_the_block_size(model, k, predraft):
    accepted = 0
    for prompt in ([0], [2, 3, 0, 1], markov_text(15, 3).tolist(), markov_text(20, 4).tolist()):
        for n in (3, 12, 30):  # 30 new tokens run past block_size 16: the sliding window
            ref = generate_ar(model, torch.tensor([prompt]), n, temperature=0.0, generator=None)[0].tolist()
            out, stats = run(model, prompt, n, k, predraft=predraft)
            assert out == ref, (k, prompt, n)
            assert sum(stats["tokens_per_pass"]) == n and len(stats["tokens_per_pass"]) == stats["passes"]
            accepted += sum(stats["accepted_per_pass"])
    if k > 1:
        assert accepted > 0  # the drafts were used, not only rejected


def test_past_block_size_each_full_window_pass_is_counted_with_its_cost(model):
    prompt, n, bs = [0, 1, 2, 3], 30, model.config.block_size
    calls = []
    hook = model.transformer.h[0].register_forward_hook(lambda module, args, out: calls.append(args[0].size(1)))
    try:
        out, stats = run(model, prompt, n, k=4, temperature=1.0, seed=2)
    finally:
        hook.remove()
    window = [t for t, d in zip(stats["pass_tokens"], stats["drafts_per_pass"]) if t == bs and d == 0]
    past = len(prompt) + n - bs - 1  # tokens written once the text is longer than the window: one per pass
    assert stats["window_passes"] == past == len(window) and stats["passes"] == len(calls)
    assert stats["pass_tokens"] == calls  # each pass's reported cost is the tokens the model ran
    assert max(stats["drafts_per_pass"][:stats["passes"] - past]) >= 2  # within the window it drafted


def test_reported_passes_are_forward_calls(model):
    calls = []
    hook = model.transformer.h[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        canvas = torch.tensor([[1, 2] + [V] * 20, [3] + [V] * 21])
        tokens, info = sample_speculative(model, canvas, mask_token_id=V, temperature=1.0,
                                          generator=torch.Generator().manual_seed(0), draft_len=4)
    finally:
        hook.remove()
    assert info["forward_passes"] == len(calls) == sum(info["passes_per_sample"])
    assert (tokens != V).all() and tokens[0, :2].tolist() == [1, 2] and tokens[1, 0] == 3
    assert all(1.0 <= t <= 4.0 for t in info["tokens_per_pass"])
    assert sum(info["committed_per_step"]) == 41


def test_registry_ar_sampler_is_generate_ar(model):
    from nanodlm.sampling.samplers import SAMPLERS

    canvas = torch.tensor([[1, 2] + [V] * 10, [3] + [V] * 11])
    steps = []
    tokens, info = SAMPLERS["ar"](model, canvas, mask_token_id=V, temperature=1.0,
                                  generator=torch.Generator().manual_seed(4), on_step=lambda *a: steps.append(a[0]))
    g = torch.Generator().manual_seed(4)
    for b, P in ((0, 2), (1, 1)):
        ref = generate_ar(model, canvas[b:b + 1, :P], 12 - P, temperature=1.0, generator=g)
        assert tokens[b].tolist() == ref[0].tolist()
    assert info["forward_passes"] == sum(info["passes_per_sample"]) == 21 == len(steps)


def test_bad_canvases_are_refused(model):
    with pytest.raises(ValueError, match="prompt"):
        sample_speculative(model, torch.tensor([[V, 1, V]]), mask_token_id=V, generator=None)
    plain = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="objective=tidar"):
        sample_speculative(plain, torch.tensor([[1, V]]), mask_token_id=V, generator=None)


# --- exactness in distribution -----------------------------------------------------------------------------

def chi2_sf(stat: float, df: int) -> float:
    """P(chi-square with df degrees of freedom > stat)."""
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def exact_tokens(model: GPT, prompt: list[int], n: int, temperature: float, top_k: int | None,
                 top_p: float | None) -> dict[tuple[int, ...], float]:
    """P(the first n new tokens) under AR sampling with these settings (filter_logits: what sample_logits draws
    from), by enumeration."""
    out = {}
    with torch.no_grad():
        for seq in itertools.product(range(V), repeat=n):
            logits = model(torch.tensor([prompt + list(seq)]), all_logits=True)[0][0]  # (L, V)
            logp = F.log_softmax(filter_logits(logits, temperature, top_k, top_p).double(), -1)
            out[seq] = float(sum(logp[len(prompt) - 1 + i, s] for i, s in enumerate(seq)).exp())
    return out


# Each configuration verifies several drafts in a pass (n new tokens after a 2-token prompt, k = 3: the second pass
# checks 2 drafts), the predraft one drafts 3 blocks in a pass (n = 5 leaves room for them), and the filtered ones
# draw drafts from a q that temperature, top-k and top-p change.
CONFIGS = {
    "T=1": dict(n=4, k=3, temperature=1.0, top_k=None, top_p=None, predraft=False),
    "T=0.7 top-k top-p": dict(n=4, k=3, temperature=0.7, top_k=3, top_p=0.9, predraft=False),
    "T=0.7 top-k top-p predraft": dict(n=5, k=3, temperature=0.7, top_k=3, top_p=0.9, predraft=True),
}


def chi2_against_ar(model: GPT, n: int, k: int, temperature: float, top_k: int | None, top_p: float | None,
                    predraft: bool, samples: int = 1000) -> tuple[float, dict[str, list[int]]]:
    """(p-value of a chi-square test of the speculative sampler's first n tokens against exact AR sampling,
    every pass's stats pooled over the samples)."""
    prompt = [0, 1]
    probs = exact_tokens(model, prompt, n, temperature, top_k, top_p)
    counts = dict.fromkeys(probs, 0)
    pooled: dict[str, list[int]] = {"drafts_per_pass": [], "accepted_per_pass": [], "blocks_per_pass": []}
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for _ in range(samples):
            out, stats = speculative.speculative_row(model, prompt, n, draft_len=k, temperature=temperature,
                                                     top_k=top_k, top_p=top_p, generator=gen, predraft=predraft)
            counts[tuple(out[len(prompt):])] += 1
            for key in pooled:
                pooled[key] += stats[key]
    big = [s for s in probs if probs[s] * samples >= 5]  # cells too rare for the test are pooled into one
    rest_p = 1.0 - sum(probs[s] for s in big)
    cells = [(counts[s], probs[s] * samples) for s in big] + [(samples - sum(counts[s] for s in big),
                                                               rest_p * samples)]
    stat = sum((o - e) ** 2 / e for o, e in cells if e > 0)
    return chi2_sf(stat, len(cells) - 1), pooled


@pytest.mark.parametrize("config", list(CONFIGS))
def test_speculative_sampling_is_ar_sampling(model, config):
    c = CONFIGS[config]
    p, stats = chi2_against_ar(model, **c)
    assert p > 1e-3
    # the test has the power it claims: passes that verified several drafts, both rejected and accepted ones
    several = [a for d, a in zip(stats["drafts_per_pass"], stats["accepted_per_pass"]) if d >= 2]
    assert len(several) >= 500 and {0, 1, 2} <= set(several)
    if c["predraft"]:
        assert max(stats["blocks_per_pass"]) >= 3  # one block of masks per outcome, several outcomes


# Mutants of the rule, each applied to the source in place (so a change of the code that removes the mutated line
# fails here instead of passing vacuously): the test above must fail for each.
MUTANTS = {
    "resample at the last rejection": ("verify", "a = int(rejected[0])", "a = int(rejected[-1])"),
    "accept every draft": ("verify", "rejected = (u * q_d >= p_d).nonzero()",
                           "rejected = (u * q_d >= p_d).nonzero()[:0]"),
    "verify against the unfiltered q": (
        "speculative_row", "drafts = draw(q, generator).tolist()",
        "drafts = draw(q, generator).tolist()\n                q = distribution(dr[0, block, 1:], 1.0, None, None)"),
}


def apply_mutant(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    function, old, new = MUTANTS[name]
    source = inspect.getsource(getattr(speculative, function))
    assert source.count(old) == 1, f"the mutant {name!r} no longer applies to {function}"
    namespace = dict(vars(speculative))
    exec(source.replace(old, new), namespace)  # noqa: S102 - a mutant of our own source, in a test
    monkeypatch.setattr(speculative, function, namespace[function])  # speculative_row finds verify in the module


@pytest.mark.slow  # each mutant samples its configurations again
@pytest.mark.parametrize("mutant, config", [("resample at the last rejection", "T=1"),
                                            ("resample at the last rejection", "T=0.7 top-k top-p predraft"),
                                            ("accept every draft", "T=1"),
                                            ("verify against the unfiltered q", "T=0.7 top-k top-p"),
                                            ("verify against the unfiltered q", "T=0.7 top-k top-p predraft")])
def test_each_broken_rule_is_caught(model, monkeypatch, mutant, config):
    apply_mutant(monkeypatch, mutant)
    p, _ = chi2_against_ar(model, **CONFIGS[config])
    assert p < 1e-6


def test_verify_writes_p_whatever_q():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    q = torch.tensor([[0.1, 0.1, 0.8]])  # a poor drafter
    counts = torch.zeros(3)
    N = 4000
    for _ in range(N):
        d = torch.multinomial(q[0], 1, generator=g)
        a, nxt = verify(p, q, d, g)
        counts[int(d) if a == 1 else nxt] += 1  # the token written at the first position
    stat = float(((counts - N * p[0]) ** 2 / (N * p[0])).sum())
    assert chi2_sf(stat, 2) > 1e-3
    assert verify(p, p[:1], torch.tensor([2]), g)[0] == 1  # q = p: every draft is accepted


def test_objective_tidar_config():
    from nanodlm.core.errors import UserError
    from nanodlm.training.config import TrainConfig

    assert TrainConfig(objective="tidar").draft_len == 8 and TrainConfig(objective="tidar", draft_len=3).draft_len == 3
    with pytest.raises(UserError, match="model_type=gpt2"):
        TrainConfig(objective="tidar", model_type="diffusion")
    with pytest.raises(UserError, match="objective=tidar"):
        TrainConfig(draft_len=4)
    with pytest.raises(UserError, match="tidar_alpha"):
        TrainConfig(objective="tidar", tidar_alpha=-1.0)


# --- the generation library ---------------------------------------------------------------------------------

def test_generate_knows_the_speculative_and_ar_samplers(model):
    from nanodlm.core.errors import UserError
    from nanodlm.data.tokenizers import CharTokenizer
    from nanodlm.sampling.generate import Prompt, SamplerOptions, generate, ignored_settings

    tok = CharTokenizer(list("abcd"))  # V = 4 ids, as the model's vocabulary
    prompt = Prompt(start="ab", max_new_tokens=20)
    ar = generate(model, tok, SamplerOptions(sampler="ar", temperature=0.0), prompt, seed=0)
    spec = generate(model, tok, SamplerOptions(sampler="speculative", temperature=0.0, draft_len=3), prompt,
                    num_samples=2, seed=0)
    assert spec.texts == ar.texts * 2 and spec.prompt_len == ar.prompt_len == 2
    info = spec.info
    assert info["sampler"] == "speculative" and info["draft_len"] == 3
    assert info["forward_passes"] == sum(info["passes_per_sample"]) and len(info["tokens_per_pass"]) == 2
    assert ignored_settings("gpt2", SamplerOptions(sampler="speculative", draft_len=3), prompt) == []
    ignored = ignored_settings("gpt2", SamplerOptions(sampler="speculative", steps=9), prompt)
    assert len(ignored) == 1 and ignored[0].startswith("--steps=9: not used")
    plain = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(UserError, match="objective=tidar"):
        generate(plain, tok, SamplerOptions(sampler="speculative"), prompt, seed=0)
    diffusion = GPT(GPTConfig(vocab_size=V + 1, block_size=16, n_layer=1, n_head=2, n_embd=16, model_type="diffusion"))
    with pytest.raises(UserError, match="for AR models"):
        generate(diffusion, tok, SamplerOptions(sampler="ar"), Prompt(start="ab"), seed=0)


# --- a trained run: train, eval, serve ----------------------------------------------------------------------

def test_eval_reports_ar_and_draft_loss(tidar_run):
    from nanodlm.evaluation.evaluate import EvalConfig, evaluate_checkpoint

    r = evaluate_checkpoint(EvalConfig(out_dir=tidar_run, ckpt="last", num_batches=1, device="cpu"))
    assert r["model_type"] == "gpt2" and r["objective"] == "tidar" and r["draft_len"] == 4
    assert 0 < r["loss"] < 10 and 0 < r["draft_loss"] < 10 and r["draft_loss"] != r["loss"]


def test_serve_races_a_tidar_model_against_ar(tidar_run, tiny_runs):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from webtools import LiveServer, events, info, post

    from nanodlm.web.serve import ServeConfig, load_server

    server = LiveServer(load_server(ServeConfig(out_dir=tidar_run, ar_out_dir=tiny_runs["gpt2"], device="cpu")))
    try:
        described = info(server.url)
        assert described["samplers"] == ["ar", "speculative"] and described["defaults"]["sampler"] == "speculative"
        assert described["models"]["main"]["draft_len"] == 4
        status, body = post(server.url, {"start": "ab", "length": 14, "race": True, "seed": 1, "temperature": 0,
                                         "num_samples": 1})
        assert status == 200, body
        evs = events(body)
        done = {data["model"]: data for name, data in evs if name == "done"}
        assert set(done) == {"main", "ar"} and len(done["main"]["texts"][0]) == 14
        steps = [data for name, data in evs if name == "step" and data["model"] == "main"]
        assert done["main"]["forward_passes"] == steps[-1]["forward_passes"] <= 12  # 12 new tokens
        status, body = post(server.url, {"start": "ab", "race": True, "num_samples": 1})  # no length: block_size
        assert status == 200, body
        assert [data["length"] for name, data in events(body) if name == "start"] == [16, 16]
    finally:
        server.close()


def test_init_from_an_ar_model_keeps_its_text_stream(tiny_runs):
    """objective=tidar from a trained AR run: the same AR logits before any step, plus a [MASK] row to draft with."""
    from nanodlm.runs.checkpoint import build_model, load_model
    from nanodlm.training.adapt import adapt_state, load_source
    from nanodlm.training.config import TrainConfig

    ar, _, _ = load_model(tiny_runs["gpt2"], "last", torch.device("cpu"))
    src_args, state, _ = load_source(tiny_runs["gpt2"])
    cfg = TrainConfig(objective="tidar", draft_len=4, block_size=16, dataset="tiny", init_from=tiny_runs["gpt2"])
    args, new_state = adapt_state(src_args, state, cfg, int(src_args["vocab_size"]))
    model = build_model(args, new_state, "adapted").eval()
    assert model.config.draft_len == 4 and model.config.mask_token_id == ar.config.vocab_size
    x = torch.randint(0, ar.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text, drafts = two_stream_logits(model, x)
        assert torch.allclose(text, ar(x, all_logits=True)[0], atol=1e-5) and torch.isfinite(drafts).all()
