"""The terminal live view of denoising (live.LiveView), rendered into a string console."""

from __future__ import annotations

import io

import torch
from fakes import MASK, V

from nanodlm.web.live import LiveView

# --- live view ----------------------------------------------------------------------------------------------

def test_live_view_renders_steps():
    from rich.console import Console

    words = {i: f"w{i} " for i in range(V)}
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    with LiveView(words.__getitem__, mask_token_id=MASK, console=console, total_steps=2, transient=False) as view:
        no = torch.zeros(1, 3, dtype=torch.bool)
        view(1, torch.tensor([[1, MASK, 2]]), torch.tensor([[True, False, True]]), no)
        first = torch.tensor([[True, False, False]])
        view(2, torch.tensor([[MASK, 4, 2]]), torch.tensor([[False, True, False]]), first)
    out = console.file.getvalue()
    assert "w1" in out and "w4" in out and "step 2/2" in out


def test_live_view_silent_off_terminal():
    from rich.console import Console

    console = Console(file=io.StringIO())  # not a terminal
    view = LiveView(str, mask_token_id=MASK, console=console)
    with view:
        view(1, torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool))
    assert not view.enabled and console.file.getvalue() == ""
