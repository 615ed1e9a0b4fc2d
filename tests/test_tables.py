"""benchmarks/tables.py: tables and the fast preset from the committed JSON, the preset chosen on dev only."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from nanodlm.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def load_tables():
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pair(tmp_path: Path, name: str, speed: float, draft_len: int | None) -> list[str]:
    """A dev and a test bench parallel JSON of one speculative curve (the fields ``fast`` reads)."""
    point = {"tau": 0.0, "judge_ppl": 5.0, "entropy_bits": 4.5, "passes_per_256": 170.0, "speedup_b1": speed,
             "speedup_bN": 0.2}
    curve = {"name": f"{name}, speculative k={draft_len or 8}", "run": name, "sampler": "speculative", "steps": 256,
             "schedule": "cosine", "semi_ar_block": 0, "approx_cache": "none", "draft_len": draft_len,
             "points": [point]}
    base = {"ar": {"judge_ppl": 5.0, "entropy_bits": 4.5}, "real": {"entropy_bits": 4.5},
            "options": {"prior_weight": 0.7}, "curves": [curve]}
    pick = {"run": name, "sampler": "speculative", "steps": 256, "schedule": "cosine", "semi_ar_block": 0,
            "approx_cache": "none", "draft_len": draft_len, "tau": 0.0, "meets_bar": True}
    paths = []
    for split, seeds in (("dev", "1"), ("test", "5,6,7")):
        path = tmp_path / f"{name}-{split}.json"
        path.write_text(json.dumps({**base, "args": {"split": split, "seeds": seeds, "num_samples": 16},
                                    "chosen_on_dev": [pick] if split == "test" else None}))
        paths.append(str(path))
    return paths


def test_fast_keeps_the_chosen_draft_length_of_a_tidar_curve(tmp_path: Path) -> None:
    tables = load_tables()
    lines = tables.fast([*_pair(tmp_path, "slow", 0.9, 8), *_pair(tmp_path, "quick", 1.1, 4)])
    assert "sampler = 'speculative'" in lines and "draft_len = 4" in lines  # the faster curve, its own k
    assert any("measured on quick" in line for line in lines)
    # the model's own k (None) is no key: the preset then reads the model's
    assert not any(line.startswith("draft_len") for line in tables.fast(_pair(tmp_path, "own", 1.1, None)))


def test_fast_refuses_a_test_file_in_the_dev_place(tmp_path: Path) -> None:
    dev, test = _pair(tmp_path, "quick", 1.1, 4)
    with pytest.raises(UserError, match="chooses on dev only"):
        load_tables().fast([test, test])
