"""Fill-in-the-middle for an AR model (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the
Middle", arXiv 2207.14255): the objective that lets a left-to-right model use the text on both sides of a gap.

With probability ``rate`` a training window is cut at two uniform points into prefix / middle / suffix and laid
out with four sentinel tokens, the ids right after the data vocabulary (never in the data):

    PSM: <PRE> prefix <SUF> suffix <MID> middle <EOM>
    SPM: <PRE> <SUF> suffix <MID> prefix middle <EOM>     (the paper's SPM variant: prefix + middle contiguous)

The layout is as long as the window: its text is the window's first T + 1 - 4 tokens. The model is then trained
as any AR model on the laid-out window (every next token, sentinels included). To infill, the model is prompted
with ``fim_prompt`` and writes the middle until <EOM>.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

N_SENTINELS = 4


class FimIds(NamedTuple):
    pre: int
    suf: int
    mid: int
    eom: int


def fim_ids(data_vocab: int) -> FimIds:
    """The sentinel ids of a model over ``data_vocab`` data ids: the next four."""
    return FimIds(data_vocab, data_vocab + 1, data_vocab + 2, data_vocab + 3)


def fim_layout(prefix: list[int], middle: list[int], suffix: list[int], ids: FimIds, spm: bool = False) -> list[int]:
    """One laid-out sequence (PSM or SPM), <EOM> last."""
    if spm:
        return [ids.pre, ids.suf, *suffix, ids.mid, *prefix, *middle, ids.eom]
    return [ids.pre, *prefix, ids.suf, *suffix, ids.mid, *middle, ids.eom]


def fim_prompt(prefix: list[int], suffix: list[int], ids: FimIds, spm: bool = False) -> list[int]:
    """What the model is given to write a middle: the layout up to and including <MID>."""
    if spm:
        return [ids.pre, ids.suf, *suffix, ids.mid, *prefix]
    return [ids.pre, *prefix, ids.suf, *suffix, ids.mid]


def fim_restore(seq: list[int], ids: FimIds) -> list[int]:
    """The text a laid-out sequence came from (prefix + middle + suffix); a sequence without <PRE> is returned
    as it is (a window left in plain order)."""
    if not seq or seq[0] != ids.pre:
        return list(seq)
    body = seq[:-1] if seq[-1] == ids.eom else seq
    if body[1:2] == [ids.suf]:  # SPM: <PRE> <SUF> suffix <MID> prefix+middle
        m = body.index(ids.mid)
        return body[m + 1:] + body[2:m]
    s, m = body.index(ids.suf), body.index(ids.mid)  # PSM
    return body[1:s] + body[m + 1:] + body[s + 1:m]


def fim_transform(windows: torch.Tensor, rate: float, spm_rate: float, ids: FimIds,
                  generator: torch.Generator) -> torch.Tensor:
    """windows (B, T+1) -> (B, T+1): each row laid out for FIM with probability ``rate`` (SPM with probability
    ``spm_rate`` among those), else left as it is. A laid-out row's text is the row's first T+1-4 tokens, cut at
    two uniform points (sorted: the middle may be empty, as in the paper). Draws on ``generator``'s device."""
    B, W = windows.shape
    n = W - N_SENTINELS
    if n < 0:
        raise ValueError(f"a FIM window needs at least {N_SENTINELS} tokens for the sentinels; got {W}")
    dev = generator.device
    use = torch.rand(B, generator=generator, device=dev) < rate  # (B,)
    spm = torch.rand(B, generator=generator, device=dev) < spm_rate  # (B,)
    cuts = torch.randint(0, n + 1, (B, 2), generator=generator, device=dev).sort(dim=1).values  # (B, 2)
    out = windows.clone()
    for b in torch.nonzero(use).flatten().tolist():
        text = windows[b, :n].tolist()
        i, j = cuts[b].tolist()
        row = fim_layout(text[:i], text[i:j], text[j:], ids, bool(spm[b]))
        out[b] = torch.tensor(row, dtype=windows.dtype, device=windows.device)
    return out
