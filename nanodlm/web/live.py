"""Watch a diffusion sampler work: the canvas redrawn in the terminal after every step.

``LiveView`` is an ``on_step`` callback for the samplers in ``nanodlm.sampling.samplers``. Masks are drawn dim,
a prime model's partly known characters cyan (the character once one candidate is left, else a shaded cell),
tokens revealed in the latest step highlighted, tokens re-masked in the latest step shown red and struck
through (their old text). When the console is not a terminal (piped stdout, CI logs) it draws nothing,
and the caller prints only the result. rich is imported lazily, on first use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.text import Text

STYLE_MASK = "dim"
STYLE_REVEALED = "bold black on green"
STYLE_REMASKED = "bold red strike"
STYLE_PARTIAL = "italic cyan"  # a prime model's partly known character (some of its digits revealed)
PARTIAL_GLYPH = "\u2592"  # medium shade: between the mask's light shade and a character


class LiveView:
    """A rich ``Live`` display of the canvas, driven by the sampler's ``on_step(step, tokens, revealed, remasked)``.

    Use as a context manager (or call ``start``/``stop``)::

        with LiveView(enc.decode_one, mask_token_id=m) as view:
            tokens, info = sampler(model, canvas, ..., on_step=view)

    decode_one(id) -> str turns one token into its text. Rows ``0 .. rows-1`` of the batch are shown.
    ``enabled`` defaults to whether the console writes to a terminal. ``transient`` (default True) clears the
    animation when it stops, so the caller's printed result is not shown twice.
    """

    def __init__(self, decode_one: Callable[[int], str], *, mask_token_id: int, console: Console | None = None,
                 enabled: bool | None = None, rows: int = 1, total_steps: int | None = None,
                 mask_glyph: str = "\u2591", transient: bool = True,
                 partial: Callable[[int], list[str]] | None = None) -> None:
        self.decode_one = decode_one
        self.partial = partial  # a partial id -> the texts it may still become (trajectory.partial_texts)
        self.mask_token_id = mask_token_id
        self.console = console
        if enabled is None:
            enabled = console.is_terminal if console is not None else sys.stdout.isatty()
        self.enabled = enabled
        self.rows = rows
        self.total_steps = total_steps
        self.mask_glyph = mask_glyph
        self.transient = transient
        self._live: Any = None
        self._prev: list[list[int]] | None = None  # last canvas drawn, to show the text of re-masked tokens

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.enabled or self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live

        if self.console is None:
            self.console = Console()
        # no refresh thread: every step redraws explicitly, so each step is seen even when steps are fast
        self._live = Live(console=self.console, auto_refresh=False, transient=self.transient)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- drawing ----------------------------------------------------------------------------------------
    def __call__(self, step: int, tokens: torch.Tensor, revealed: torch.Tensor, remasked: torch.Tensor) -> None:
        """The ``on_step`` callback: tokens, revealed, remasked are (B, L)."""
        if not self.enabled:
            return
        self.start()
        self._live.update(self.render(step, tokens, revealed, remasked), refresh=True)

    def render(self, step: int, tokens: torch.Tensor, revealed: torch.Tensor, remasked: torch.Tensor
               ) -> RenderableType:
        """The renderable for one step (also usable without a Live display)."""
        from rich.console import Group

        rows = tokens[: self.rows].tolist()
        rev, rem = revealed[: self.rows].tolist(), remasked[: self.rows].tolist()
        n_masked = int((tokens[: self.rows] == self.mask_token_id).sum())
        n_partial = int((tokens[: self.rows] > self.mask_token_id).sum())
        total = f"/{self.total_steps}" if self.total_steps else ""
        partly = f"partly known {n_partial}  " if n_partial else ""
        parts: list[RenderableType] = [self._caption(f"step {step}{total}  masked {n_masked}  {partly}"
                                                     f"revealed {sum(map(sum, rev))}  remasked {sum(map(sum, rem))}")]
        for b, row in enumerate(rows):
            prev = self._prev[b] if self._prev is not None and b < len(self._prev) else None
            parts.append(self._row(row, rev[b], rem[b], prev))
        self._prev = rows
        return Group(*parts)

    def _caption(self, s: str) -> Text:
        from rich.text import Text

        return Text(s, style="bold")

    def _row(self, row: list[int], revealed: list[bool], remasked: list[bool], prev: list[int] | None) -> Text:
        from rich.text import Text

        text = Text()
        for i, tok in enumerate(row):
            if remasked[i]:
                old = prev[i] if prev is not None and len(prev) == len(row) else None
                text.append(self.decode_one(old) if old is not None else self.mask_glyph, style=STYLE_REMASKED)
            elif tok == self.mask_token_id:
                text.append(self.mask_glyph, style=STYLE_MASK)
            elif tok > self.mask_token_id:  # partly known (prime): one candidate left shows as itself
                left = self.partial(tok) if self.partial else []
                text.append(left[0] if len(left) == 1 else PARTIAL_GLYPH, style=STYLE_PARTIAL)
            elif revealed[i]:
                text.append(self.decode_one(tok), style=STYLE_REVEALED)
            else:
                text.append(self.decode_one(tok))
        return text
