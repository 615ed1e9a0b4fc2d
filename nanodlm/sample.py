"""``nanodlm sample``: generate text from a checkpoint (``generate.generate`` does the work).

Keys: this command's own (``SampleConfig``), every sampler option (``SamplerOptions``) and the prompt
(``Prompt``), all as ``--key=value`` flags.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .core.errors import UserError, check_finite
from .core.fileio import atomic_write, check_output_path
from .runs.checkpoint import load_model
from .sampling.generate import (
    NUM_SAMPLES,
    SEED,
    Generation,
    Prompt,
    SamplerOptions,
    check_settings,
    generate,
    sampling_configs,
)
from .sampling.settings import notes
from .sampling.trajectory import Recorder, partial_texts
from .training.config import PRESET_DIR, parse_overrides, read_config_file
from .training.distributed import resolve_device
from .web.animate import check_trajectory_path, write_trajectory
from .web.live import LiveView

OUTPUT_SUFFIXES = (".jsonl", ".json", ".txt", "")  # --output: one JSON string per line


@dataclass
class SampleConfig:
    out_dir: str = "out"  # the training run to sample from
    ckpt: str = "best"  # best | last
    num_samples: int = NUM_SAMPLES  # samples, generated as one batch
    seed: int = SEED  # the same seed gives the same samples
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    show: bool = False  # live view of the canvas (needs a terminal)
    verbose: bool = False  # per-step commit counts and steps used, on stderr
    output: str | None = None  # also write the samples here, one JSON string per line
    trajectory: str | None = None  # write the steps as an animation: FILE.html (self-contained) or FILE.gif (Pillow)
    threads: int = 1  # torch CPU threads (1: quick on a busy machine, see README; 0 = torch's default, one per core)

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf floats, seeds outside torch's range
        if self.trajectory is not None:
            check_trajectory_path(self.trajectory)
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0 (0 = torch's default); got {self.threads}")
        if self.num_samples < 1:
            raise UserError(f"--num_samples must be >= 1; got {self.num_samples}")
        if self.output is not None:
            check_output_path(self.output, "--output", OUTPUT_SUFFIXES)


SAMPLE_PRESETS = PRESET_DIR / "sample"  # sampling presets: `nanodlm sample NAME --out_dir=...`


def list_sample_presets() -> list[str]:
    return sorted(p.stem for p in SAMPLE_PRESETS.glob("*.py"))


def load_sample_args(argv: list[str]) -> tuple[SampleConfig, SamplerOptions, Prompt]:
    """``[PRESET | CONFIG_FILE] --key=value ...`` -> the three configs; a key none of them has is an error.
    PRESET names a file in configs/sample/ (``fast``); flags override it."""
    cfg, options, prompt = sampling_configs(sample_values(argv), SampleConfig)
    return cfg, options, prompt


def sample_values(argv: list[str]) -> dict[str, Any]:
    """The keys ``argv`` sets, the preset's or config file's first, then the flags (what the user gave)."""
    config_file, overrides = parse_overrides(argv)
    if config_file and not Path(config_file).exists():
        if not (SAMPLE_PRESETS / f"{config_file}.py").is_file():
            raise UserError(f"config file {config_file!r} not found, nor a sampling preset of that name; sampling "
                            f"presets: {', '.join(list_sample_presets()) or 'none'}")
        config_file = str(SAMPLE_PRESETS / f"{config_file}.py")
    values: dict[str, Any] = read_config_file(config_file) if config_file else {}
    values.update(overrides)
    return values


def sample(cfg: SampleConfig, options: SamplerOptions | None = None, prompt: Prompt | None = None,
           given: Collection[str] | None = None) -> list[str]:
    """Generate, print each sample followed by nanoGPT's separator line, return the texts. ``given``: the keys the
    user set (``sample_values``), for the warnings about settings this model will not read (settings.py)."""
    options, prompt = options or SamplerOptions(), prompt or Prompt()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, _, tok = load_model(cfg.out_dir, cfg.ckpt, device)
    model_type = model.config.model_type
    ignored = check_settings(model.config, options, prompt, given)  # refuses what cannot run
    if cfg.show and model_type == "gpt2":
        ignored.append("--show: a gpt2 model writes left to right, there is no canvas to show")
    elif cfg.show and not sys.stdout.isatty():
        ignored.append("--show: the output is not a terminal (piped or redirected), so there is no canvas to draw on")
    for line in ignored:
        print(f"warning: ignored {line}", file=sys.stderr)
    for line in notes(model.config, options, prompt):
        print(f"warning: {line}", file=sys.stderr)
    view = None
    if cfg.show and sys.stdout.isatty() and model.config.model_type != "gpt2":
        view = LiveView(lambda i: tok.decode([i]), mask_token_id=model.config.mask_token_id,
                        partial=partial_texts(model, lambda i: tok.decode([i])))
    recorder = None
    if cfg.trajectory:
        recorder = Recorder(lambda i: tok.decode([i]), mask_token_id=model.config.mask_token_id, model=model)
    steps = [fn for fn in (view, recorder) if fn is not None]
    on_step = (lambda *a: [fn(*a) for fn in steps]) if len(steps) > 1 else (steps or [None])[0]
    kwargs = dict(num_samples=cfg.num_samples, seed=cfg.seed, on_step=on_step)
    if view is not None:
        with view:
            out: Generation = generate(model, tok, options, prompt, **kwargs)
    else:
        out = generate(model, tok, options, prompt, **kwargs)
    info = out.info
    if recorder is not None:
        write_trajectory(cfg.trajectory, recorder, f"nanodlm sample --out_dir={cfg.out_dir} --sampler="
                         f"{info['sampler']} --seed={cfg.seed}")
        print(f"wrote {cfg.trajectory} ({len(recorder.frames)} frames)", file=sys.stderr)
    if cfg.verbose and info["sampler"] == "speculative":
        print(f"forward passes per sample: {info['passes_per_sample']}, tokens per pass: "
              f"{[round(t, 2) for t in info['tokens_per_pass']]}, drafts accepted per pass: "
              f"{[round(a, 2) for a in info['accepted_per_pass']]} (draft_len {info['draft_len']}); tokens through "
              f"the model: {info['pass_tokens']}, of them full-window passes past block_size: "
              f"{info['window_passes']}, passes over a rolled cache (--rolling_cache, approximate): "
              f"{info['rolled_passes']}", file=sys.stderr)
    elif cfg.verbose and info["model_type"] == "gpt2" and options.rolling_cache:
        print(f"forward passes: {info['forward_passes']}, of them over a rolled cache (approximate): "
              f"{info.get('rolled_passes', 0)}", file=sys.stderr)
    elif cfg.verbose and info["model_type"] != "gpt2":
        print(f"steps used: {info['steps_used']}, forward passes per sample: {info.get('passes_per_sample')} "
              f"({info['forward_passes']} batched calls), committed per step (all {cfg.num_samples} samples "
              f"together): {info['committed_per_step']}", file=sys.stderr)
    for text in out.texts:
        print(text)
        print("---------------")
    if cfg.output:
        check_output_path(cfg.output, "--output", OUTPUT_SUFFIXES)  # again: the file may have appeared meanwhile
        try:
            atomic_write(Path(cfg.output), "".join(json.dumps(t) + "\n" for t in out.texts).encode("utf-8"))
        except OSError as e:  # checked before sampling, so only a full disk or a folder removed meanwhile
            raise UserError(f"could not write --output {cfg.output} ({e.strerror or type(e).__name__})") from None
    return out.texts
