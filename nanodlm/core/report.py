"""Results out, one way for every command: strict JSON files and rich tables."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from .fileio import check_output_path


def finite_or_none(obj: Any) -> Any:
    """Replace nan/inf by None (recursively) so the JSON is strict and readable by any parser."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(path: str | Path | None, obj: dict[str, Any]) -> None:
    """Strict JSON (nan/inf as null) to ``path``, announced on stdout; ``-`` writes it to stdout; None: nothing."""
    if path is None:
        return
    text = json.dumps(finite_or_none(obj), indent=2, allow_nan=False, default=str) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    check_output_path(path, "--json", make_folder=True)  # never over a checkpoint or a file of another kind
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


def fmt(v: Any) -> str:
    """A table cell: None and non-finite floats as "-", 3 significant digits, thousands separators; str as is."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], stderr: bool = False,
                left: Collection[int] = (0,)) -> None:
    """A rich table, cells through ``fmt`` (pre-format a cell as a str to choose its digits); the ``left``
    columns left-justified, the others right. On stderr when stdout carries JSON."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i in left else "right")
    for row in rows:
        table.add_row(*[fmt(v) for v in row])
    # a pipe or log file gets 160 columns, not rich's default of 80, so rows stay whole
    stream = sys.stderr if stderr else sys.stdout
    Console(file=stream, width=None if stream.isatty() else 160).print(table)


def save_figure(fig: Any, png_path: str | Path) -> bool:
    """Write a matplotlib figure to ``png_path`` (folders made) and close it; True, for the plotters' return."""
    import matplotlib.pyplot as plt

    check_output_path(png_path, "--png", (".png",), binary_ok=("a PNG image",), make_folder=True)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return True
