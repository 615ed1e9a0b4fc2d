"""The one exception type the CLI turns into a one-line message (no traceback), and the finiteness check every
typed config runs on construction."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


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
