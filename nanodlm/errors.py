"""The one exception type the CLI turns into a one-line message (no traceback), and the finiteness check every
typed config runs on construction."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


def check_finite(cfg: Any, what: str = "config key") -> None:
    """UserError naming the first float field of dataclass ``cfg`` that is nan or inf: such values slip past
    every range check written as ``x < 0`` (nan compares false), so each config rejects them first."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{what} '{f.name}' must be a finite number; got {value!r}")
