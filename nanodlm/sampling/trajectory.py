"""Record how a canvas fills in: one frame per canvas update, for the web demo and the HTML / GIF exports.

A ``Recorder`` is an ``on_step(step, tokens (B, L), revealed (B, L) bool, remasked (B, L) bool)`` callback
(the samplers' contract, see ``nanodlm.sampling.samplers``). Before the first update it adds a step-0 frame: the
canvas as given (the first update's revealed positions still masked). Each frame turns into a JSON-able
event (``frame_event``), the format of the ``/api/generate`` stream (README, "Web demo"):

    {"step": 3, "forward_passes": 3, "elapsed": 0.012,
     "samples": [{"text": "To be[MASK][MASK]...", "tokens": ["T", "o", " ", "b", "e", null, ...],
                  "masked": [5, 6, ...], "revealed": [2, 4], "remasked": [9]}]}

``tokens`` has one entry per position (the token's text, null where masked); a prime model's partly known
positions (subtokens.py) are null there too and listed in ``partial`` as [position, [the texts it may still become]]
(the key only where there are some); rows shorter than ``length``
(an autoregressive model writing left to right) are padded with masked positions. ``forward_passes`` counts
the model's real forward calls in this thread (``count_forward_passes``: full and KV-cached
passes alike), null for models that are not ``torch.nn.Module`` s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..model.subtokens import consistent, model_code, state_digits

MASK_TEXT = "[MASK]"  # a masked position in an event's ``text``
_PASSES = threading.local()  # forward calls of hooked models, per thread: concurrent generations do not mix
_HOOK_LOCK = threading.Lock()


class Aborted(Exception):
    """Raised from ``on_step`` when ``should_stop()`` says the consumer is gone (a client disconnected)."""


def _count_pass(module: torch.nn.Module, args: Any, output: Any) -> None:
    _PASSES.n = getattr(_PASSES, "n", 0) + 1


def count_forward_passes(model: Any) -> Callable[[], int] | None:
    """A function giving the forward calls of ``model`` made in this thread since this call (None if not a Module).

    A pass is a call of the token embedding (``model.transformer.wte``, a prime model's ``wse``, else the model
    itself), so full passes (``forward``) and cached ones (``decode``) both count. One hook per model, installed
    once: it bumps a thread-local counter, so generations running in other threads are not counted, and no hook is
    added or removed while another thread runs the model.
    """
    if not isinstance(model, torch.nn.Module):
        return None
    transformer = getattr(model, "transformer", None)
    wte = getattr(transformer, "wse", None) or getattr(transformer, "wte", None)  # a prime model embeds with wse
    target = wte if isinstance(wte, torch.nn.Module) else model
    with _HOOK_LOCK:
        if not getattr(target, "_nanodlm_pass_hook", False):
            target.register_forward_hook(_count_pass)
            target._nanodlm_pass_hook = True
    start = getattr(_PASSES, "n", 0)
    return lambda: getattr(_PASSES, "n", 0) - start


def partial_texts(model: Any, decode_one: Callable[[int], str]) -> Callable[[int], list[str]] | None:
    """For a prime model (None for any other): a partly known position's id -> the texts of the tokens it may still
    become (those consistent with its known digits), cached per id. What ``--show`` and the page draw."""
    code = model_code(model)
    if code is None:
        return None
    cache: dict[int, list[str]] = {}

    def texts(token: int) -> list[str]:
        if token not in cache:
            digits = state_digits(torch.tensor([token], device=code.table.device), code)  # (1, bits)
            cache[token] = [decode_one(i) for i in consistent(digits, code)[0].nonzero().flatten().tolist()]
        return cache[token]

    return texts


@dataclass
class Frame:
    """The canvas after one update: tokens (B rows of ids, -1 = padding), positions revealed / re-masked."""

    step: int
    tokens: list[list[int]]
    revealed: list[list[int]]
    remasked: list[list[int]]
    forward_passes: int | None
    elapsed: float  # seconds since the recorder started


class Recorder:
    """The ``on_step`` callback that turns a sampler's updates into frames.

    decode_one(id) -> str is one token's text. ``length``: rows are padded to it with masked positions
    (autoregressive text grows one token per step). ``on_frame(frame)`` is called for every frame (the server
    streams it); ``keep`` stores them in ``frames`` (the exports). ``should_stop()`` is checked at every
    update: when true, ``Aborted`` is raised inside the sampler, which ends the generation.
    """

    def __init__(self, decode_one: Callable[[int], str], *, mask_token_id: int | None, length: int | None = None,
                 model: Any = None, on_frame: Callable[[Frame], None] | None = None, keep: bool = True,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.decode_one, self.mask_token_id, self.length = decode_one, mask_token_id, length
        self.partial = partial_texts(model, decode_one)  # a prime model's partly known positions, else None
        self.on_frame, self.keep, self.should_stop = on_frame, keep, should_stop
        self.model = model
        self.frames: list[Frame] = []
        self.last: Frame | None = None  # the latest frame, kept or not
        self._texts: dict[int, str] = {}
        self._t0: float | None = None
        self._passes: Callable[[], int] | None = None
        self._started = False

    def start(self) -> None:
        """Start the clock and the forward-pass count (call in the thread that will generate)."""
        self._t0 = time.perf_counter()
        self._passes = count_forward_passes(self.model)

    def passes(self) -> int | None:
        """Forward passes so far (None when they cannot be counted)."""
        return self._passes() if self._passes else None

    def elapsed(self) -> float:
        return time.perf_counter() - (self._t0 or time.perf_counter())

    def _emit(self, step: int, tokens: torch.Tensor, revealed: torch.Tensor, remasked: torch.Tensor,
              at_start: bool = False) -> None:
        rows = tokens.tolist()
        if self.length is not None:
            rows = [row + [-1] * (self.length - len(row)) for row in rows]
        where = [[i for i, r in enumerate(row) if r] for row in revealed.tolist()]
        gone = [[i for i, r in enumerate(row) if r] for row in remasked.tolist()]
        passes = self.passes()
        if at_start:  # the canvas as it was before any pass
            frame = Frame(step, rows, where, gone, None if passes is None else 0, 0.0)
        else:
            frame = Frame(step, rows, where, gone, passes, self.elapsed())
        self.last = frame
        if self.keep:
            self.frames.append(frame)
        if self.on_frame is not None:
            self.on_frame(frame)

    def __call__(self, step: int, tokens: torch.Tensor, revealed: torch.Tensor, remasked: torch.Tensor) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Aborted
        if self._t0 is None:
            self.start()
        if not self._started:
            self._started = True
            before = tokens.clone()  # step 0: the canvas before the first update
            if self.mask_token_id is not None and before.shape == revealed.shape:
                before[revealed] = self.mask_token_id
            else:  # a growing (autoregressive) row: the first update appended its last token
                before = before[:, :-1]
            none = torch.zeros_like(before, dtype=torch.bool)
            self._emit(0, before, none, none, at_start=True)
        self._emit(step, tokens, revealed, remasked)

    def text_of(self, token: int) -> str | None:
        """A position's text (None where masked or padding), cached per id."""
        if token < 0 or (self.mask_token_id is not None and token >= self.mask_token_id):  # masked or partial
            return None
        if token not in self._texts:
            self._texts[token] = self.decode_one(token)
        return self._texts[token]

    def event(self, frame: Frame) -> dict[str, Any]:
        """The JSON-able form of a frame (the stream's ``step`` event; see the module docstring)."""
        samples = []
        for b, row in enumerate(frame.tokens):
            texts = [self.text_of(t) for t in row]
            samples.append({"text": "".join(MASK_TEXT if t is None else t for t in texts), "tokens": texts,
                            "masked": [i for i, t in enumerate(texts) if t is None],
                            "revealed": frame.revealed[b], "remasked": frame.remasked[b]})
            partial = [[i, self.partial(t)] for i, t in enumerate(row) if self.partial and t > self.mask_token_id]
            if partial:
                samples[-1]["partial"] = partial
        return {"step": frame.step, "forward_passes": frame.forward_passes, "elapsed": round(frame.elapsed, 4),
                "samples": samples}

    def events(self) -> list[dict[str, Any]]:
        return [self.event(f) for f in self.frames]
