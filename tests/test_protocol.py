"""The fair ruler's arithmetic (nanodlm/evaluation/protocol.py): splits, choices, seed means, the frontier."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nanodlm.core.errors import UserError
from nanodlm.evaluation.protocol import (
    argmin,
    choose_on,
    dev_test,
    frontier_at,
    passages,
    plot_frontier,
    ppl_at_entropy,
    seed_mean,
)


@pytest.mark.parametrize("n", [4, 5, 1001])
def test_dev_and_test_are_disjoint_halves_covering_val(n: int) -> None:
    val = np.arange(n, dtype=np.uint16)
    parts = dev_test(val)
    dev, test = parts["dev"], parts["test"]
    assert len(dev) + len(test) == n and abs(len(dev) - len(test)) <= 1
    assert not set(dev.tolist()) & set(test.tolist())
    assert dev[-1] + 1 == test[0]  # contiguous: dev ends where test starts
    with pytest.raises(UserError, match="too few"):
        dev_test(val[:3])


def test_passages_stay_inside_their_text_and_follow_the_seed() -> None:
    data = np.arange(100, 200, dtype=np.int64)
    decode = lambda ids: "".join(chr(65 + int(i) % 26) for i in ids)  # noqa: E731
    a = passages(data, decode, 5, 10, seed=3)
    assert a == passages(data, decode, 5, 10, seed=3) and a != passages(data, decode, 5, 10, seed=4)
    assert all(len(p) == 10 for p in a)
    with pytest.raises(UserError, match="too few"):
        passages(data[:5], decode, 1, 10, seed=0)


def test_argmin_skips_non_finite_and_takes_the_first_tie() -> None:
    assert argmin([2.0, float("nan"), 1.0, 1.0]) == 2
    assert argmin([None, 3.0]) == 1
    with pytest.raises(UserError, match="finite"):
        argmin([float("nan"), float("inf")])


def test_choose_on_reads_only_dev_measurements() -> None:
    dev = [{"loss": 3.0, "split": "dev"}, {"loss": 1.0, "split": "dev"}, {"loss": 1.0, "split": "dev"}]
    assert choose_on(dev, lambda r: r["loss"]) == 1  # the first of a tie
    target = {"entropy_bits": 4.8, "split": "dev"}
    curve = [{"entropy_bits": e, "split": "dev"} for e in (4.1, 4.7, 4.95)]
    assert choose_on(curve, lambda p: abs(p["entropy_bits"] - target["entropy_bits"]), uses=[target]) == 1
    for rows, uses in (([*dev[:2], {"loss": 0.5, "split": "test"}], []),  # one row measured on test
                       ([{"loss": 0.5}], []),  # a row that does not say where it was measured
                       (curve, [{"entropy_bits": 4.8, "split": "test"}])):  # the target measured on test
        with pytest.raises(UserError, match="chooses on dev only"):
            choose_on(rows, lambda r: r.get("loss", 0.0), uses=uses)


def test_seed_mean_gives_mean_and_standard_error() -> None:
    rows = [{"x": 1.0, "y": 5}, {"x": 2.0, "y": 5}, {"x": 3.0, "y": 5}]
    out = seed_mean(rows, ["x", "y"])
    assert out["x"] == pytest.approx(2.0) and out["x_se"] == pytest.approx(1.0 / math.sqrt(3))
    assert out["y_se"] == 0.0
    assert math.isnan(seed_mean(rows[:1], ["x"])["x_se"])


def test_ppl_at_entropy_interpolates_in_log_space_and_refuses_to_extrapolate() -> None:
    # log PPL linear in entropy: the midpoint in entropy gives the geometric mean of the PPLs
    assert ppl_at_entropy([4.0, 5.0], [4.0, 16.0], 4.5) == pytest.approx(8.0)
    assert ppl_at_entropy([5.0, 4.0, 4.6], [16.0, 4.0, 10.0], 4.6) == pytest.approx(10.0)  # order of points is free
    assert ppl_at_entropy([4.0, 5.0], [4.0, 16.0], 4.0) == pytest.approx(4.0)
    assert ppl_at_entropy([4.0, 5.0], [4.0, 16.0], 5.2) is None
    assert ppl_at_entropy([4.0, 5.0], [4.0, 16.0], 3.9) is None
    assert ppl_at_entropy([4.0, float("nan")], [4.0, 9.0], 4.0) == pytest.approx(4.0)


def _curve(points: list[tuple[float, float]], seeds: int) -> list[dict]:
    rows = []
    for e, p in points:
        per_seed = [{"entropy_bits": e + 0.01 * s, "judge_ppl": p * (1 + 0.05 * s)} for s in range(seeds)]
        rows.append({"entropy_bits": e, "judge_ppl": p, "per_seed": per_seed})
    return rows


def test_frontier_at_reports_value_range_and_seed_error() -> None:
    out = frontier_at(_curve([(4.0, 4.0), (5.0, 16.0)], seeds=3), 4.5)
    assert out["ppl_at_real_entropy"] == pytest.approx(8.0)
    assert out["ppl_at_real_entropy_se"] > 0 and out["real_entropy_in_range"]
    assert out["swept_entropy_bits"] == [4.0, 5.0]
    outside = frontier_at(_curve([(4.0, 4.0), (4.2, 5.0)], seeds=3), 4.5)
    assert outside["ppl_at_real_entropy"] is None and not outside["real_entropy_in_range"]
    assert math.isnan(outside["ppl_at_real_entropy_se"])


def test_plot_frontier_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [{"value": v, "entropy_bits": e, "entropy_bits_se": 0.01, "judge_ppl": p, "judge_ppl_se": 0.2}
            for v, e, p in ((0.8, 4.2, 4.0), (1.0, 4.8, 5.0), (1.2, 5.1, 9.0))]
    png = tmp_path / "f.png"
    assert plot_frontier({"AR": {"knob": "temperature", "rows": rows}}, {"entropy_bits": 4.8, "judge_ppl": 4.6}, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
