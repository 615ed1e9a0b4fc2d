"""``bench epochs --judge=true``: the samples of each side's best checkpoint, judged the ruler's way.

For each subset, each side's best recipe (chosen on dev, ``epochs_report``) is loaded at its best-dev checkpoint
and its sampling knob swept (AR: temperature; diffusion: prior_weight, remask, the ruler's steps), each point
judged at the selection seeds against real dev text and at the report seeds against real test text; the
headline is the judge PPL interpolated at real test text's entropy (``frontier.operating_point``). The judge is
the ruler's (``bench quality``'s preset judge: configs/judge.py trained on the **whole** train split, so it knows
more text than either contestant), trained once in work_dir and reused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..data.dataset import load_meta, open_split
from ..data.tokenizers import load_tokenizer
from ..evaluation.protocol import dev_test
from ..runs.checkpoint import load_model
from ..sampling.generate import Prompt, SamplerOptions, generate
from ..training.config import read_config_file
from .curves import BEST
from .frontier import Judge, operating_point, real_text, sweep
from .presets import PRESETS
from .runs import CKPT, PROTECTED, ensure_dataset, plan_run
from .search import Job, Lanes


def judge_model(work_dir: Path, dataset: str, preset: str, device: str, launcher: list[str]) -> Judge:
    """The ruler's judge for ``preset``, trained on the whole train split of ``dataset`` (or reused)."""
    values = PRESETS[preset]["judge"]
    if isinstance(values, tuple):  # (a config file, overrides)
        file, extra = values
        values = {**{k: v for k, v in read_config_file(file).items() if k not in PROTECTED}, **extra}
    ensure_dataset(work_dir / "data", dataset)
    lanes = Lanes(1, launcher, work_dir / "jobs")  # through the launcher: the judge is a long training
    lanes.submit(Job("judge", "final", {}, plan_run("judge", {**values, "model_type": "gpt2"}, work_dir,
                                                     work_dir / "data", dataset, device, False)))
    run = next(lanes.completed()).run
    lanes.close()
    model, _, tok = load_model(run["out_dir"], CKPT, device)
    return Judge(model, tok)


def side_sampling(model: torch.nn.Module, side: str, preset: str, knob_values: list[float] | None = None
                  ) -> tuple[str, list[float], Prompt, SamplerOptions]:
    """How the judge samples one side: (the knob swept, its grid, the prompt, the options besides the knob). AR
    sweeps temperature; diffusion the ruler's prior_weight (``knob_values``, default the preset's grid) with remask
    at the preset's steps (block diffusion: one step per character, the ruler's 256)."""
    p = PRESETS[preset]
    length = p["length"]
    if side == "ar":
        return "temperature", p["temperature"], Prompt(max_new_tokens=length), SamplerOptions(sampler="ar")
    steps = length if model.config.diffusion_block else p["steps"]
    return "prior_weight", knob_values or p["knob"]["prior_weight"], Prompt(length=length), SamplerOptions(steps=steps)


def judge_sides(result: dict[str, Any], work_dir: Path, judge_dir: Path, dataset: str, preset: str, device: str,
                launcher: list[str], knob_values: list[float] | None = None) -> None:
    """Adds ``judge`` (per side: the frontier and PPL at real test entropy) to each subset of ``result`` whose two
    sides have a best-dev checkpoint, and the diffusion / AR ratio."""
    p = PRESETS[preset]
    judge = judge_model(judge_dir, dataset, preset, device, launcher)
    seeds = {"dev": p["selection_seeds"], "test": p["report_seeds"]}
    num, length = p["num_samples"], p["length"]
    splits = dev_test(open_split(str(work_dir / "data"), dataset, "val"))
    decode = load_tokenizer(load_meta(str(work_dir / "data"), dataset)).decode
    real = real_text(splits, decode, judge, seeds, num, length)
    for sub in result["subsets"]:
        if set(sub["sides"]) != {"ar", "diffusion"}:
            continue
        out: dict[str, Any] = {"real_test_entropy_bits": real["test"]["entropy_bits"],
                               "real_test_judge_ppl": real["test"]["judge_ppl"]}
        for side, chosen in sub["sides"].items():
            run = next(r for r in sub["runs"] if r["recipe"] == chosen["recipe"] and r["seed"] == result["protocol"][
                "seed"])
            model, _, tok = load_model(run["out_dir"], BEST, device)
            knob, values, prompt, options = side_sampling(model, side, preset, knob_values)
            generate(model, tok, dataclasses.replace(options, steps=1), prompt, num_samples=num, seed=0)  # warm-up
            print(f"judging {side} {chosen['recipe']} ({run['out_dir']}/{BEST}): sweeping {knob}")
            curves = sweep(model, tok, options, prompt, judge, knob, values, seeds, num)
            op = operating_point(curves, real)
            out[side] = {"recipe": chosen["recipe"], "checkpoint": f"{run['out_dir']}/{BEST}", "knob": knob,
                         "values": values, "chosen": op["chosen"], "ppl_at_real_entropy": op["ppl_at_real_entropy"],
                         "ppl_at_real_entropy_se": op["ppl_at_real_entropy_se"],
                         "real_entropy_in_range": op["real_entropy_in_range"], "frontier": curves}
        a, d = out["ar"]["ppl_at_real_entropy"], out["diffusion"]["ppl_at_real_entropy"]
        out["diffusion_over_ar"] = d / a if a and d else None
        sub["judge"] = out
    result["protocol"]["judge"] = {"checkpoint": CKPT, "trained_on": f"the whole train split of {dataset}",
                                   "work_dir": str(judge_dir),
                                   "seeds": seeds, "num_samples": num, "length": length}
