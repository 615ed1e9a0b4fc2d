"""The generation library: generate() for every model type and prompt, canvas building, SamplerOptions, the
sampler registry, and the sampling keys every command exposes."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path

import pytest
import torch

from nanodlm.core.errors import UserError
from nanodlm.data.tokenizers import CharTokenizer
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.sample import SampleConfig
from nanodlm.sampling import samplers
from nanodlm.sampling.ar_sampling import generate_ar
from nanodlm.sampling.blockwise import generate_blocks
from nanodlm.sampling.generate import Prompt, SamplerOptions, build_canvas, generate, sampling_configs
from nanodlm.sampling.samplers import DIFFUSION_SAMPLERS, SAMPLERS, get_sampler, sampler_keys

TOK = CharTokenizer(list("abcdefgh _"))  # 10 characters; a diffusion model's [MASK] is id 10
MASK = TOK.mask_id


def tiny(model_type: str = "diffusion", block_size: int = 16, diffusion_block: int = 0) -> GPT:
    torch.manual_seed(0)
    diffusion = model_type == "diffusion"
    return GPT(GPTConfig(block_size=block_size, vocab_size=TOK.vocab_size + int(diffusion), n_layer=1, n_head=2,
                         n_embd=16, model_type=model_type, mask_token_id=MASK if diffusion else None,
                         pos_emb="rope" if diffusion else "learned", diffusion_block=diffusion_block)).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- generate(): every model type --------------------------------------------------------------------------

def test_ar_matches_generate_ar_and_streams_token_by_token() -> None:
    model = tiny("gpt2")
    seen: list[tuple[int, int, list[bool]]] = []
    out = generate(model, TOK, SamplerOptions(temperature=0.8, top_k=5), Prompt(start="ab", max_new_tokens=6),
                   num_samples=2, seed=3, on_step=lambda i, t, rev, rem: seen.append((i, t.size(1), rev[0].tolist())))
    idx = torch.tensor([TOK.encode("ab")] * 2)
    expected = generate_ar(model, idx, 6, temperature=0.8, top_k=5, generator=gen(3))
    assert torch.equal(out.tokens, expected)
    assert [(i, width) for i, width, _ in seen] == [(i, 2 + i) for i in range(1, 7)]  # one call per new token
    assert all(rev == [False] * (width - 1) + [True] for _, width, rev in seen)
    assert out.prompt_len == 2 and all(t.startswith("ab") and len(t) == 8 for t in out.texts)
    assert [len(c) for c in out.completions] == [6, 6] and out.texts[0][2:] == out.completions[0]
    info = out.info
    assert info["sampler"] == "ar" and info["forward_passes"] == info["steps_used"] == 6
    assert info["fixed"][:, :2].all() and not info["fixed"][:, 2:].any()
    assert info["elapsed_s"] > 0 and info["chars_per_s"] > 0


def test_ar_default_prompt_is_a_newline_and_rejects_diffusion_prompts() -> None:
    newline = CharTokenizer(list("ab\n"))
    out = generate(tiny("gpt2"), newline, prompt=Prompt(max_new_tokens=3), seed=0)
    assert out.tokens.shape == (1, 4) and out.texts[0].startswith("\n") and out.prompt_len == 1
    out = generate(tiny("gpt2"), TOK, prompt=Prompt(max_new_tokens=3), seed=0)  # no newline: token 0
    assert out.tokens[0, 0] == 0 and out.prompt_len == 1
    with pytest.raises(UserError, match="need a diffusion model"):
        generate(tiny("gpt2"), TOK, prompt=Prompt(suffix="ab"), seed=0)


@pytest.mark.parametrize("name", DIFFUSION_SAMPLERS)
def test_diffusion_is_the_named_sampler_with_its_options(name: str) -> None:
    model = tiny()
    options = SamplerOptions(sampler=name, steps=5, temperature=0.9, order="entropy", prior_weight=0.0)
    seen: list[int] = []
    out = generate(model, TOK, options, Prompt(start="ab", suffix="h", length=12), num_samples=2, seed=7,
                   on_step=lambda s, t, rev, rem: seen.append(s))
    canvas = torch.tensor([TOK.encode("ab") + [MASK] * 9 + TOK.encode("h")] * 2)
    expected, info = get_sampler(name)(model, canvas, mask_token_id=MASK, generator=gen(7),
                                       **options.sampler_kwargs())
    assert torch.equal(out.tokens, expected) and (out.tokens != MASK).all()
    assert out.info["forward_passes"] == info["forward_passes"] and len(seen) == len(info["committed_per_step"])
    assert torch.equal(out.info["fixed"], canvas != MASK) and out.prompt_len == 2
    assert all(t.startswith("ab") and t.endswith("h") and len(t) == 12 for t in out.texts)


def test_block_diffusion_goes_block_by_block() -> None:
    model = tiny(diffusion_block=4)
    options = SamplerOptions(steps=6)
    out = generate(model, TOK, options, Prompt(start="ab", length=12), seed=1)
    canvas = torch.tensor([TOK.encode("ab") + [MASK] * 10])
    expected, info = generate_blocks(model, canvas, block=4, sampler=get_sampler(options.sampler),
                                     mask_token_id=MASK, generator=gen(1), **options.sampler_kwargs())
    assert torch.equal(out.tokens, expected) and out.info["blocks"] == info["blocks"] == 3
    uncached = generate(model, TOK, dataclasses.replace(options, use_kv_cache=False), Prompt(start="ab", length=12),
                        seed=1)
    # the cache keeps finished blocks inside the denoising passes: no pass of its own, the same tokens
    assert torch.equal(uncached.tokens, out.tokens) and uncached.info["forward_passes"] == out.info["forward_passes"]


@pytest.mark.parametrize("approx_cache", ["none", "dual"])
def test_semi_autoregressive_decoding_of_a_bidirectional_model(approx_cache: str) -> None:
    model = tiny()
    options = SamplerOptions(steps=6, semi_ar_block=4, approx_cache=approx_cache)
    out = generate(model, TOK, options, Prompt(start="ab", length=12), seed=2)
    canvas = torch.tensor([TOK.encode("ab") + [MASK] * 10])
    expected, _ = generate_blocks(model, canvas, block=4, sampler=get_sampler(options.sampler), mask_token_id=MASK,
                                  generator=gen(2), approx_cache=approx_cache, **options.sampler_kwargs())
    assert torch.equal(out.tokens, expected) and out.info["blocks"] == 3
    with pytest.raises(UserError, match="semi_ar_block is for bidirectional models"):
        generate(tiny(diffusion_block=4), TOK, SamplerOptions(semi_ar_block=2), Prompt(length=8), seed=0)


def test_text_longer_than_block_size() -> None:
    widths: list[int] = []
    out = generate(tiny(), TOK, SamplerOptions(steps=3, new_block=8), Prompt(start="abc", length=40), num_samples=2,
                   seed=0, on_step=lambda s, t, rev, rem: widths.append(t.size(1)))
    assert out.tokens.shape == (2, 40) and (out.tokens != MASK).all()
    assert out.texts[0].startswith("abc") and out.info["blocks"] == 4  # 16, then 8 new per window: 24, 32, 40
    assert widths == sorted(widths) and widths[-1] == 40
    assert out.info["fixed"][:, :3].all() and not out.info["fixed"][:, 3:].any()


def test_infill_keeps_the_template_and_fills_the_gaps() -> None:
    out = generate(tiny(), TOK, SamplerOptions(steps=4), Prompt(infill="ab__cd___h"), num_samples=3, seed=0)
    for text in out.texts:
        assert len(text) == 10 and text[:2] == "ab" and text[4:6] == "cd" and text[9] == "h"
    assert out.info["fixed"][0].tolist() == [c != "_" for c in "ab__cd___h"]


def test_seed_makes_generation_repeatable() -> None:
    model = tiny()
    run = lambda seed: generate(model, TOK, SamplerOptions(steps=4), Prompt(length=10), seed=seed).tokens  # noqa: E731
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))
    assert torch.equal(generate(model, TOK, SamplerOptions(steps=4), Prompt(length=10), seed=gen(5)).tokens, run(5))


# --- canvas building ---------------------------------------------------------------------------------------

def test_build_canvas_prefix_suffix_and_length() -> None:
    assert build_canvas(TOK, Prompt(start="ab", suffix="c", length=6), 16, MASK) == ([0, 1], [2], 6)
    assert build_canvas(TOK, Prompt(), 16, MASK) == ([], [], 16)  # length None = block_size
    assert build_canvas(TOK, Prompt(start="ab", length=40), 16, MASK) == ([0, 1], [], 40)  # longer: windows


def test_build_canvas_infill_template() -> None:
    ids, suffix, length = build_canvas(TOK, Prompt(infill="a__b___"), 16, MASK)
    assert ids == [0, MASK, MASK, 1, MASK, MASK, MASK] and suffix == [] and length == 7  # a run of N is N holes
    ids, _, _ = build_canvas(TOK, Prompt(infill="a**b", placeholder="*"), 16, MASK)
    assert ids == [0, MASK, MASK, 1]


def test_build_canvas_reads_file_prompts(tmp_path: Path) -> None:
    for name, text in (("start", "abc"), ("suffix", "hg"), ("infill", "a__b")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    prompt = Prompt(start=f"FILE:{tmp_path / 'start'}", suffix=f"FILE:{tmp_path / 'suffix'}", length=8)
    assert build_canvas(TOK, prompt, 16, MASK) == ([0, 1, 2], [7, 6], 8)
    assert build_canvas(TOK, Prompt(infill=f"FILE:{tmp_path / 'infill'}"), 16, MASK)[0] == [0, MASK, MASK, 1]
    with pytest.raises(UserError, match="not found"):
        build_canvas(TOK, Prompt(start=f"FILE:{tmp_path / 'nope'}"), 16, MASK)


@pytest.mark.parametrize("prompt,match", [
    (dict(start="abcd", suffix="ef", length=6), "leaves no room"),
    (dict(suffix="ab", length=20), "does not fit in block_size"),
    (dict(infill="a" * 17 + "_"), "must fit in block_size"),
    (dict(infill="abc"), "no '_' to fill"),
])
def test_build_canvas_errors(prompt: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_canvas(TOK, Prompt(**prompt), 16, MASK)


@pytest.mark.parametrize("values,match", [
    (dict(length=0), "'length' must be >= 1"),  # 0 is not block_size
    (dict(placeholder="__"), "single character"),
    (dict(max_new_tokens=0), "'max_new_tokens' must be >= 1"),
    (dict(infill="a_", start="b"), "either --infill or --start"),
])
def test_prompt_validation(values: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        Prompt(**values)


# --- SamplerOptions and the registry -----------------------------------------------------------------------

@pytest.mark.parametrize("values,match", [
    (dict(sampler="greedy"), "'sampler' must be one of seed, ancestral, confidence, remask"),
    (dict(schedule="cubic"), "'schedule' must be one of linear, cosine"),
    (dict(order="random"), "'order' must be one of sampled, entropy, margin"),
    (dict(steps=0), "'steps' must be >= 1"),
    (dict(temperature=-0.1), "'temperature' must be >= 0"),
    (dict(top_k=0), "'top_k' must be >= 1"),
    (dict(top_p=0.0), r"'top_p' must be in \(0, 1\]"),
    (dict(top_p=1.5), r"'top_p' must be in \(0, 1\]"),
    (dict(remask_frac=1.5), r"'remask_frac' must be in \[0, 1\]"),
    (dict(new_block=0), "'new_block' must be >= 1"),
    (dict(order="margin"), "needs order=sampled; with order=margin set prior_weight=0"),
    (dict(noise=-1.0), "'noise' must be >= 0"),
])
def test_sampler_options_validation(values: dict, match: str) -> None:
    with pytest.raises(UserError, match=match) as e:
        SamplerOptions(**values)
    assert "\n" not in str(e.value)


def test_options_that_a_sampler_ignores_are_not_checked_against_it() -> None:
    SamplerOptions(sampler="ancestral", order="margin")  # ancestral has no prior_weight: no conflict


def test_sampler_defaults_are_the_options_defaults() -> None:
    defaults = SamplerOptions()
    for name, fn in SAMPLERS.items():
        params = inspect.signature(fn).parameters
        for key in sampler_keys(name):
            assert params[key].default == getattr(defaults, key), (name, key)


def test_registry_records_each_samplers_options() -> None:
    assert sampler_keys("seed") == sampler_keys("ancestral") == ("steps", "temperature", "top_k", "top_p")
    assert set(sampler_keys("remask")) == set(sampler_keys("confidence")) | {"remask_frac", "threshold"}
    assert "use_kv_cache" not in sampler_keys("remask") and "sampler" not in sampler_keys("remask")


def test_each_sampler_receives_exactly_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict[str, dict] = {}

    def fake(model, canvas, *, mask_token_id, generator, fixed=None, on_step=None, steps=1, noise=0.0, threshold=0.0):
        received["fake"] = dict(steps=steps, noise=noise, threshold=threshold)
        return canvas.masked_fill(canvas == mask_token_id, 0), {"forward_passes": 0, "steps_used": 0,
                                                                 "committed_per_step": [], "remasked_per_step": []}

    monkeypatch.setitem(SAMPLERS, "fake", fake)
    assert sampler_keys("fake") == ("steps", "noise", "threshold")
    options = SamplerOptions(sampler="fake", steps=9, noise=0.25, threshold=0.75, temperature=0.5)
    generate(tiny(), TOK, options, Prompt(length=4), seed=0)
    assert received["fake"] == dict(steps=9, noise=0.25, threshold=0.75)  # temperature: not its option


def test_samplers_module_reexports_and_get_sampler() -> None:
    assert samplers.SamplerOptions is SamplerOptions
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("nope")


# --- flags ---------------------------------------------------------------------------------------------------

def test_flags_build_the_three_configs() -> None:
    cfg, options, prompt = sampling_configs({"out_dir": "x", "max_steps": "7", "noise": "0", "start": "ab",
                                             "length": "20", "top_k": "None"}, SampleConfig)
    assert (cfg.out_dir, options.steps, options.noise, prompt.start, prompt.length) == ("x", 7, 0.0, "ab", 20)
    with pytest.raises(UserError, match="unknown config key 'stepz'.*steps"):
        sampling_configs({"stepz": "3"}, SampleConfig)
    with pytest.raises(UserError, match="'temperature' must be >= 0"):
        sampling_configs({"temperature": "-1"}, SampleConfig)


@pytest.mark.parametrize("argv", [["sample"], ["judge"], ["bench", "sample"], ["bench", "steps"],
                                  ["bench", "quality"], ["bench", "parallel"]])
def test_every_sampling_command_exposes_every_sampler_option(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    from nanodlm.cli import main

    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(SamplerOptions):
        assert out.count(f"--{f.name}=") == 1, (argv, f.name)  # once: as an option, or as the command's own key
    assert "# " in out  # each key with its one-line description


def test_an_option_given_to_a_sampling_command_reaches_the_sampler(tiny_runs: dict[str, str], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from nanodlm.cli import main

    seen: list[dict] = []
    real = SAMPLERS["remask"]

    @functools.wraps(real)  # the registry reads a sampler's options from its signature (here: real's)
    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setitem(SAMPLERS, "remask", spy)
    flags = ["--schedule=linear", "--noise=0.25", "--threshold=0.3", "--max_steps=3", "--device=cpu", "--ckpt=last"]
    assert main(["sample", f"--out_dir={tiny_runs['diffusion']}", "--num_samples=1", "--length=8", *flags]) == 0
    assert main(["judge", f"--judge={tiny_runs['gpt2']}", "--judge_ckpt=last", f"--out_dir={tiny_runs['diffusion']}",
                 "--num_samples=1", "--length=8", *flags]) == 0
    assert len(seen) == 2 and all((k["schedule"], k["noise"], k["threshold"], k["steps"]) == ("linear", 0.25, 0.3, 3)
                                  for k in seen)
