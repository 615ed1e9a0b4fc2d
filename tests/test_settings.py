"""Which settings a generation reads (nanodlm/sampling/settings.py): refused when they cannot run, one warning each
when they are given and ignored; the CLI here, the web demo in test_serve.py."""

from __future__ import annotations

import pytest

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.model.model import GPTConfig
from nanodlm.sampling.generate import Prompt, SamplerOptions
from nanodlm.sampling.settings import check_settings, notes

GPT2 = GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16)
TIDAR = GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16, draft_len=4, mask_token_id=8)
DIFFUSION = GPTConfig(vocab_size=9, block_size=16, n_layer=1, n_head=2, n_embd=16, model_type="diffusion",
                      mask_token_id=8)


@pytest.mark.parametrize("config, options, says", [
    (GPT2, {"sampler": "speculative"}, "needs a TiDAR model"),
    (DIFFUSION, {"sampler": "ar"}, "is for AR models"),
    (DIFFUSION, {"sampler": "speculative"}, "is for AR models"),
    (TIDAR, {"sampler": "speculative", "draft_len": 1000}, "--draft_len=1000 does not fit"),
    (TIDAR, {"sampler": "speculative", "draft_len": 16}, "below 16"),
])
def test_what_cannot_run_is_refused(config: GPTConfig, options: dict, says: str) -> None:
    with pytest.raises(UserError, match=says):
        check_settings(config, SamplerOptions(**options), Prompt())


@pytest.mark.parametrize("config, options, prompt, given, says", [
    (GPT2, {"sampler": "remask"}, {}, {"sampler"}, "--sampler=remask"),  # remask is the default: given, not changed
    (GPT2, {"sampler": "confidence"}, {}, None, "--sampler=confidence"),
    (TIDAR, {"sampler": "speculative", "use_kv_cache": False}, {}, {"sampler", "use_kv_cache"}, "--use_kv_cache"),
    (TIDAR, {"sampler": "speculative", "steps": 8}, {}, {"steps"}, "--steps=8"),
    (DIFFUSION, {}, {"max_new_tokens": 30}, {"max_new_tokens"}, "--max_new_tokens=30"),
])
def test_a_given_setting_that_is_not_read_is_named(config: GPTConfig, options: dict, prompt: dict,
                                                  given: set | None, says: str) -> None:
    lines = check_settings(config, SamplerOptions(**options), Prompt(**prompt), given)
    assert len([line for line in lines if line.startswith(says)]) == 1, lines


def test_what_is_read_is_not_named() -> None:
    assert check_settings(TIDAR, SamplerOptions(sampler="speculative", draft_len=3, temperature=0.5),
                          Prompt(start="a", max_new_tokens=9), {"sampler", "draft_len", "temperature", "start",
                                                                "max_new_tokens"}) == []
    assert check_settings(GPT2, SamplerOptions(sampler="ar", use_kv_cache=False), Prompt(),
                          {"sampler", "use_kv_cache"}) == []


def test_the_cli_warns_or_refuses(tiny_runs: dict[str, str], tidar_run: str, capsys: pytest.CaptureFixture) -> None:
    ar = ["sample", f"--out_dir={tiny_runs['gpt2']}", "--device=cpu", "--num_samples=1", "--max_new_tokens=3"]
    tidar = ["sample", f"--out_dir={tidar_run}", "--ckpt=last", "--device=cpu", "--num_samples=1",
             "--max_new_tokens=3", "--sampler=speculative"]
    dm = ["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--num_samples=1", "--steps=2",
          "--length=8"]
    for argv, says in (([*ar, "--sampler=remask"], "--sampler=remask"),
                       ([*tidar, "--use_kv_cache=False"], "--use_kv_cache=False"),
                       ([*dm, "--show"], "--show: the output is not a terminal")):  # pytest captures stdout
        assert main(argv) == 0
        assert f"warning: ignored {says}" in capsys.readouterr().err
    assert main([*tidar, "--draft_len=1000"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --draft_len=1000 does not fit") and "\n" not in err


def test_speculative_past_block_size_is_said_once_before_it_starts(tidar_run: str, capsys: pytest.CaptureFixture
                                                                   ) -> None:
    options = SamplerOptions(sampler="speculative")
    assert notes(TIDAR, options, Prompt(max_new_tokens=15)) == []  # prompt + 15 fits in block_size 16
    assert len(notes(TIDAR, options, Prompt(max_new_tokens=16))) == 1
    assert notes(TIDAR, SamplerOptions(sampler="ar"), Prompt(max_new_tokens=40)) == []  # AR slides as nanoGPT
    assert main(["sample", f"--out_dir={tidar_run}", "--ckpt=last", "--device=cpu", "--num_samples=1",
                 "--sampler=speculative", "--max_new_tokens=20", "--verbose"]) == 0
    err = capsys.readouterr().err
    assert err.count("runs past block_size 16") == 1 and "full-window passes past block_size: [" in err
