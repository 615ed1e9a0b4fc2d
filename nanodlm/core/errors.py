"""The one exception type the CLI turns into a one-line message (no traceback), and the finiteness check every
typed config runs on construction."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

LONG_WORD = re.compile(r"\S{300,}")  # a value echoed whole could make a message of any length


def _cut(m: re.Match[str]) -> str:
    word = m.group(0)
    return f"{word[:60]}...({len(word)} characters)...{word[-20:]}"


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix. A run of 300 or more characters
    without a space in it (a value echoed back: "9" * 5000) is cut to its ends, so the message stays short."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (LONG_WORD.sub(_cut, args[0]),)
        super().__init__(*args)


SEED_RANGE = 2**63  # torch.Generator.manual_seed takes a signed 64-bit integer


def check_finite(cfg: Any, what: str = "config key") -> None:
    """UserError naming the first float field of dataclass ``cfg`` that is nan or inf (such values slip past
    every range check written as ``x < 0``: nan compares false), or a ``seed`` outside [0, 2**63) (torch's
    generators overflow); each typed config runs it first."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{what} '{f.name}' must be a finite number; got {value!r}")
        if f.name == "seed" and isinstance(value, int) and not 0 <= value < SEED_RANGE:
            raise UserError(f"{what} 'seed' must be in [0, 2**63); got {value}")
