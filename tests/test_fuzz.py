"""Property-based fuzzing (Hypothesis) of the config parser, SamplerOptions and Prompt: any input ends in a built
config or a one-line UserError, never another exception (issue 19). The serve API is fuzzed in
test_serve_guard.py. Example counts stay small: the CPU is shared."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanodlm.core.errors import UserError
from nanodlm.sample import SampleConfig
from nanodlm.sampling.generate import Prompt, SamplerOptions, build_canvas, sampling_configs
from nanodlm.training.config import TrainConfig, build_config, load_config, parse_overrides, read_config_file

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = [f.name for cls in (SampleConfig, SamplerOptions, Prompt) for f in dataclasses.fields(cls)] + [
    "max_steps", "nope"]
TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig) if f.init] + ["nope"]
# what a value typed on a command line may look like: numbers of every shape, literals, words, junk
VALUE_TEXT = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"\A[-+]?[0-9]{0,6}(\.[0-9]{0,4})?([eE][-+]?[0-9]{1,4})?\Z"),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-1e999", "None", "none", "True", "false", "[1]", "{}", "()",
                     "1_000", "0x10", "1j", "[" * 300, "(" * 200 + "1", "9" * 5000, "-" * 3000 + "1"]),
)
JSON_LIKE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=2), max_leaves=5)


def one_line(e: UserError) -> None:
    text = str(e)
    assert text and "\n" not in text and len(text) < 2000


@FAST
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUE_TEXT), max_size=5))
def test_sampling_flags_give_configs_or_one_line(pairs):
    argv = [f"--{k}={v}" for k, v in pairs]
    try:
        _, values = parse_overrides(argv)
        cfg, options, prompt = sampling_configs(values, SampleConfig)
    except UserError as e:
        one_line(e)
        return
    for obj in (cfg, options, prompt):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            assert not (isinstance(value, float) and not math.isfinite(value)), (f.name, value)


@FAST
@given(st.dictionaries(st.sampled_from(TRAIN_KEYS), VALUE_TEXT | JSON_LIKE, max_size=4))
def test_train_values_give_a_config_or_one_line(values):
    try:
        cfg = build_config(TrainConfig, values)
    except UserError as e:
        one_line(e)
        return
    assert cfg.out_dir.strip() and math.isfinite(cfg.learning_rate)
    if cfg.decay_lr:
        assert cfg.warmup_iters <= cfg.lr_decay_iters and cfg.min_lr <= cfg.learning_rate


@FAST
@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(SamplerOptions)]),
                       st.integers(-5, 5) | st.floats(allow_nan=True, allow_infinity=True) | st.none()
                       | st.sampled_from(["remask", "cosine", "dual", "sampled", "x"]), max_size=4))
def test_sampler_options_built_directly(kwargs):
    try:
        SamplerOptions(**kwargs)
    except UserError as e:
        one_line(e)
    except TypeError:  # a wrong Python type passed straight to the dataclass (no parser in between)
        pass


class CharTok:
    """A character tokenizer for build_canvas: a-z and space, id 27 is [MASK]."""

    def encode(self, text: str) -> list[int]:
        bad = set(text) - set("abcdefghijklmnopqrstuvwxyz ")
        if bad:
            raise UserError(f"characters outside the vocabulary: {sorted(bad)[:3]}")
        return [" abcdefghijklmnopqrstuvwxyz".index(c) for c in text]


@FAST
@given(start=st.none() | st.text("ab _", max_size=8), suffix=st.none() | st.text("ab ", max_size=8),
       infill=st.none() | st.text("ab_", max_size=20), placeholder=st.text("_ab", min_size=0, max_size=2),
       length=st.none() | st.integers(-2, 40))
def test_prompt_and_canvas_give_a_canvas_or_one_line(start, suffix, infill, placeholder, length):
    try:
        prompt = Prompt(start=start, suffix=suffix, infill=infill, placeholder=placeholder, length=length)
        prefix, end, total = build_canvas(CharTok(), prompt, block_size=16, mask_id=27)
    except UserError as e:
        one_line(e)
        return
    assert total >= len(prefix) + len(end)
    if infill is None:
        assert total > len(prefix) + len(end) and (not end or total <= 16)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_config_files_of_any_bytes(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("cfg")
    for name in ("c.py", "c.json"):
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            values = read_config_file(str(path))
            load_config(TrainConfig, [str(path)])
        except UserError as e:
            one_line(e)
            continue
        assert isinstance(values, dict)
