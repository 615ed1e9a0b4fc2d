"""The sampling half of the fair ruler (nanodlm/bench/frontier.py): the operating point chosen on dev only."""

from __future__ import annotations

import pytest

from nanodlm.bench.frontier import operating_point
from nanodlm.core.errors import UserError


def _curve(split: str, entropies: list[float], ppls: list[float]) -> list[dict]:
    return [{"value": v, "entropy_bits": e, "judge_ppl": p, "split": split,
             "per_seed": [{"entropy_bits": e, "judge_ppl": p}] * 2}
            for v, e, p in zip((0.6, 0.8, 1.0), entropies, ppls, strict=True)]


def test_the_knob_is_chosen_on_the_dev_curve_and_reported_on_test() -> None:
    curves = {"dev": _curve("dev", [4.0, 4.5, 5.0], [3.0, 4.0, 5.0]),
              "test": _curve("test", [4.1, 4.6, 5.1], [3.1, 4.1, 5.1])}
    real = {"dev": {"entropy_bits": 4.6, "split": "dev"}, "test": {"entropy_bits": 4.6, "split": "test"}}
    op = operating_point(curves, real)
    assert op["chosen"] == 0.8 and op["point"] is curves["test"][1]  # dev entropy 4.5 is nearest real dev's 4.6
    assert op["ppl_at_real_entropy"] == pytest.approx(4.1)  # the test curve at real test text's entropy


@pytest.mark.parametrize("mutant", ["test curve as dev", "test text as the target"])
def test_a_choice_read_off_test_is_refused(mutant: str) -> None:
    curves = {"dev": _curve("dev", [4.0, 4.5, 5.0], [3.0, 4.0, 5.0]),
              "test": _curve("test", [4.1, 4.6, 5.1], [3.1, 4.1, 5.1])}
    real = {"dev": {"entropy_bits": 4.6, "split": "dev"}, "test": {"entropy_bits": 4.6, "split": "test"}}
    if mutant == "test curve as dev":
        curves["dev"] = curves["test"]
    else:
        real["dev"] = real["test"]
    with pytest.raises(UserError, match="chooses on dev only"):
        operating_point(curves, real)
