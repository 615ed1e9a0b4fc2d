"""The sampling half of the fair ruler: judged samples over seeds, a knob swept into a (PPL, entropy) curve on
dev and on test, and the operating point chosen on dev and reported on test (see ``protocol.py``).

A "row" is one set of ``num_samples`` texts scored by the judge (``judge.score_texts``) plus the generation's
speed. A curve point averages the rows of several sampling seeds (``protocol.seed_mean``): the selection seeds
give the dev curve, the report seeds the test curve; no seed is in both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..evaluation.judge import score_texts
from ..evaluation.protocol import choose_on, frontier_at, passages, seed_mean
from ..sampling.generate import Prompt, SamplerOptions, generate

# what a curve point averages over seeds (each with a standard error)
STATS = ("judge_ppl", "entropy_bits", "distinct_4", "chars_per_s")


@dataclasses.dataclass
class Judge:
    """The AR judge and its tokenizer."""

    model: torch.nn.Module
    tok: Any


def _mean(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    keep = {k: rows[0][k] for k in ("steps_used", "forward_passes") if k in rows[0]}
    return {**extra, **seed_mean(rows, STATS), **keep, "seeds": len(rows), "example": rows[0]["example"][:300],
            "per_seed": [{k: r[k] for k in ("seed", *STATS)} for r in rows]}


def judged_samples(model: torch.nn.Module, tok: Any, options: SamplerOptions, prompt: Prompt, judge: Judge,
                   num_samples: int, seed: int) -> dict[str, Any]:
    """One row: ``num_samples`` generated texts (the completions, without the prompt) scored by the judge."""
    out = generate(model, tok, options, prompt, num_samples=num_samples, seed=seed)
    return {**score_texts(judge.model, judge.tok, out.completions), "seed": seed,
            "chars_per_s": out.info["chars_per_s"], "steps_used": out.info.get("steps_used"),
            "forward_passes": out.info.get("forward_passes"), "example": out.completions[0]}


def point(model: torch.nn.Module, tok: Any, options: SamplerOptions, prompt: Prompt, judge: Judge,
          num_samples: int, seeds: Sequence[int], **extra: Any) -> dict[str, Any]:
    """One curve point: ``judged_samples`` at each seed, averaged (``STATS`` with standard errors)."""
    return _mean([judged_samples(model, tok, options, prompt, judge, num_samples, s) for s in seeds], **extra)


def real_text(splits: dict[str, np.ndarray], decode, judge: Judge, seeds: dict[str, Sequence[int]],
              num_samples: int, length: int) -> dict[str, dict[str, Any]]:
    """{"dev": ..., "test": ...}: real passages of ``length`` tokens from each split (one set per seed of that
    split's seed list), scored like samples."""
    out = {}
    for split, split_seeds in seeds.items():
        rows = []
        for seed in split_seeds:
            texts = passages(splits[split], decode, num_samples, length, seed)
            rows.append({**score_texts(judge.model, judge.tok, texts), "seed": seed, "chars_per_s": float("nan"),
                         "example": texts[0]})
        out[split] = _mean(rows, split=split)
    return out


def sweep(model: torch.nn.Module, tok: Any, options: SamplerOptions, prompt: Prompt, judge: Judge, knob: str,
          values: Sequence[float], seeds: dict[str, Sequence[int]], num_samples: int) -> dict[str, list[dict]]:
    """The curve of ``knob`` (a SamplerOptions field) over ``values``: {"dev": [point per value],
    "test": [...]}, each point the seed mean of that split's seeds (every other option as in ``options``)."""
    curves: dict[str, list[dict]] = {split: [] for split in seeds}
    for value in values:
        opts = dataclasses.replace(options, **{knob: value})
        for split, split_seeds in seeds.items():
            curves[split].append(point(model, tok, opts, prompt, judge, num_samples, split_seeds, value=value,
                                       split=split))
        shown = [f"{split} PPL {c[-1]['judge_ppl']:.3f} entropy {c[-1]['entropy_bits']:.3f}"
                 for split, c in curves.items()]
        print(f"  {knob}={value:g}: " + " | ".join(shown))
    return curves


def operating_point(curves: dict[str, list[dict]], real: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Choose on dev, report on test: the knob value whose dev entropy is nearest real dev text's, its test
    point, and the test curve's PPL at real test text's entropy (``protocol.frontier_at``)."""
    target = real["dev"]
    i = choose_on(curves["dev"], lambda p: abs(p["entropy_bits"] - target["entropy_bits"]), uses=[target])
    report = curves["test"][i]
    return {"chosen": report["value"], "point": report, **frontier_at(curves["test"], real["test"]["entropy_bits"])}
