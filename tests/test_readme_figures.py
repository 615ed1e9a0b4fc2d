"""The README's headline table ("Where diffusion stands") says no more than its JSON: every row names its JSON in
the last column, and every figure in the row (a value, a ratio of two values, or a percentage change) is found in
that JSON at the precision it is printed. A bench parallel row reports the test figures of the configuration chosen
on dev (the curve ``tables.py fast`` chooses), not the best on test."""

from __future__ import annotations

import bisect
import importlib.util
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from nanodlm.core.fileio import read_json

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?%?")


def headline_rows(readme: str) -> list[list[str]]:
    """The cells of each row of the first table under '## Where diffusion stands', header and rule dropped."""
    section = readme.split("## Where diffusion stands", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def json_of(cell: str) -> tuple[Path, str]:
    """The JSON a row's last cell names (its first word, with or without the date and .json) and the rest."""
    name = cell.split()[0]
    matches = sorted((ROOT / "benchmarks").glob(name if name.endswith(".json") else f"{name}*.json"))
    assert len(matches) == 1, f"the last cell names {name!r}: {len(matches)} JSON files match in benchmarks/"
    return matches[0], cell[len(name):]


def figures(text: str) -> list[tuple[float, float, bool]]:
    """(value, tolerance at its printed precision, is a percentage) of every number written in ``text``."""
    out = []
    for m in NUMBER.finditer(text.replace("\u2212", "-")):
        token = m.group().replace(",", "")
        pct = token.endswith("%")
        token = token.rstrip("%")
        if "e" in token:
            tol = abs(float(token)) * 1e-6
        else:
            tol = 0.5 * 10 ** -(len(token.split(".")[1]) if "." in token else 0)
        out.append((float(token), tol + 1e-9, pct))
    return out


def leaves(value: Any, key: str = "") -> list[tuple[str, float]]:
    """(its key, number) for every number in a JSON value, numbers written inside its strings included."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in leaves(v, k)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v, key)]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [(key, float(value))] if math.isfinite(value) else []
    return [(key, float(t.replace(",", ""))) for t in NUMBER.findall(str(value)) if not t.endswith("%")]


def found(f: float, tol: float, pct: bool, values: list[tuple[str, float]]) -> bool:
    """``f`` is one of ``values``, or the ratio a / b (a percentage: 100 (a / b - 1)) of two positive values of the
    same key (judge_ppl over judge_ppl, entropy_bits over entropy_bits): a ratio of unrelated numbers proves
    nothing, since a large JSON holds a pair for almost any ratio."""
    if not pct and any(abs(v - f) <= tol for _, v in values):
        return True
    target, t = (1 + f / 100, tol / 100) if pct else (f, tol)
    by_key: dict[str, list[float]] = {}
    for k, v in values:
        if v > 0:
            by_key.setdefault(k, []).append(v)
    for same in by_key.values():
        same.sort()
        for b in same:  # a / b within [target - t, target + t]: a in [b (target - t), b (target + t)]
            i = bisect.bisect_left(same, b * (target - t))
            if i < len(same) and same[i] <= b * (target + t):
                return True
    return False


def dev_choice_values(test_path: Path) -> list[float]:
    """A bench parallel test JSON's numbers, its curves narrowed to the one chosen on dev across curves (as
    ``tables.py fast`` chooses); the dev JSON is the test one's name with -dev- for -test-."""
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tables
    spec.loader.exec_module(tables)
    dev_path = test_path.with_name(test_path.name.replace("-test-", "-dev-"))
    header = tables.fast([str(dev_path), str(test_path)])[0]  # "... measured on <curve name>."
    test = read_json(test_path, "result")
    chosen = [c for c in test["curves"] if header.endswith(f"measured on {c['name']}.")]
    assert len(chosen) == 1, header
    return leaves({**test, "curves": chosen})


ROWS = headline_rows((ROOT / "README.md").read_text())


def test_the_headline_table_is_there() -> None:
    assert len(ROWS) >= 5 and all(len(r) == len(ROWS[0]) for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r[0][:40] for r in ROWS])
def test_every_figure_of_a_headline_row_is_in_its_json(row: list[str]) -> None:
    path, rest = json_of(row[-1])
    result = read_json(path, "result")
    values = dev_choice_values(path) if result.get("benchmark") == "parallel" else leaves(result)
    missing = [f for cell in [*row[:-1], rest] for f in figures(cell) if not found(*f, values)]
    assert not missing, f"{path.name}: {[m[0] for m in missing]} not found (a value, a ratio or a % change)"


def test_the_check_fails_on_a_figure_the_json_does_not_hold() -> None:
    values = [("judge_ppl", 5.87), ("judge_ppl", 12.2), ("entropy_bits", 4.818), ("entropy_bits", 4.808)]
    assert found(2.08, 0.005, False, values) and found(-0.2, 0.05, True, values)  # 12.2 / 5.87, 4.808 vs 4.818
    assert not found(2.11, 0.005, False, values) and not found(-3.0, 0.05, True, values)
    assert not found(1.0 / 4.818 * 12.2, 0.005, False, values)  # a ratio across keys is no evidence


def test_a_parallel_row_must_be_the_dev_choice() -> None:
    """Block 4's curves: the dev choice (cosine schedule) reads 0.60x AR at batch 1 on test; the curve best on test
    (threshold schedule) 0.62x, which the README once printed: it is not in the dev choice's figures."""
    values = dev_choice_values(ROOT / "benchmarks" / "parallel-test-block4-cpu-2026-12-03.json")
    assert found(0.60, 0.005, False, values) and not found(0.62, 0.005, False, values)
