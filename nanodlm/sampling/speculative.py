"""Draft with the mask stream, verify with the AR stream, in one forward pass per step (TiDAR; tidar.py).

Speculative sampling (Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318) with the
drafter and the verifier in one model and one pass (Liu et al. 2025, TiDAR, arXiv:2511.08923). A pass runs

    [the text not yet in the KV cache (the newest token; the prompt at first)] [drafts d_1..d_n] [k x MASK]

- The AR logits at the newest token and the drafts give p_1..p_{n+1}. Draft d_i is accepted with probability
  min(1, p_i(d_i) / q_i(d_i)), q_i the distribution it was drawn from; at the first rejection the next token is
  drawn from norm(max(0, p_i - q_i)) and the later drafts are dropped; if all n are accepted a bonus token is
  drawn from p_{n+1}. Whatever q is, every token written is distributed as the AR model samples it (``verify``).
  p and q get the same temperature / top-k / top-p; temperature 0 makes both one-hot: greedy AR decoding.
- The k masks sit at the positions after the drafts and see the whole text and drafts (tidar.py's training):
  they draft for the case that every draft is accepted. Their first position is the bonus token's (drawn from
  p instead), so masks 2..k become the next pass's n = k - 1 drafts; after a rejection they were drafted for
  a text that did not happen, and the next pass drafts afresh (n = 0). A pass writes 1..k tokens.
  ``predraft`` (TiDAR's own scheme): n + 1 blocks of masks, block b seeing the text and the first b drafts, so
  whatever the verification accepts, the block drafted for that outcome gives the next k - 1 drafts (a pass of
  1 + n + (n + 1) k tokens).
- Only verified tokens enter the cache (``cache.advance``): the cache is exact, as a plain AR model's.
- Past ``block_size`` the text slides as ``generate_ar``'s does: one token per pass over the last block_size
  tokens, no drafts, so the text still equals AR sampling of the same model (each token's context is the
  block_size tokens before it, which no cache of earlier passes holds). Such a pass costs a full window: the
  stats count them (``window_passes``) and every pass's tokens through the model (``pass_tokens``), and
  ``settings.notes`` warns once before such a generation starts.
- ``rolling_cache`` (opt-in, rope models only; ``settings.refuse`` turns learned positions away): in a generation
  that runs past block_size, a pass whose full draft would not fit evicts the oldest cached keys instead
  (``KVCache.evict``), so it keeps drafting over a window of block_size positions. This is an approximation,
  not AR sampling of the model: the kept keys of layers above the first were computed while the evicted tokens
  were visible (a longer context than a fresh pass over the window would give them), and a token's context is
  the block_size - (drafts + masks) tokens before it, not block_size (StreamingLLM's window attention, Xiao et
  al. 2023, arXiv:2309.17453, without its sink tokens; Mistral's rolling buffer). Evictions start once the text
  and a full draft no longer fit, a few tokens before block_size. Keys keep the absolute positions they were
  rotated at (``offset``; rotary tables past block_size computed at those positions): rope scores depend only on
  the distance between positions, which stays below block_size as in training, so no re-rotation is needed
  (StreamingLLM re-bases positions for its sinks, whose distance would otherwise grow). A generation within
  block_size is unchanged, bit for bit; the stats count the passes over a rolled cache (``rolled_passes``) and
  the keys evicted before each pass (``evicted``), and ``pass_tokens`` stays each pass's tokens through the model
  (an eviction also copies the kept keys and values to the front of the cache: memory traffic, not model tokens).
Every model call is one forward pass in ``forward_passes``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..diffusion.tidar import check_tidar, draft_pass
from .ar_sampling import Model, cache_dtype, check_sampling_args, filter_logits, generate_ar, inference_mode
from .reveal import OnStep


def distribution(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """logits (..., V) -> probabilities (..., V) fp32 after temperature / top-k / top-p; one-hot argmax at 0."""
    filtered = filter_logits(logits, temperature, top_k, top_p)
    if temperature == 0:
        return F.one_hot(filtered.argmax(-1), filtered.size(-1)).float()
    return F.softmax(filtered, dim=-1)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of probs (..., V) -> (...) long; an exact one-hot draws no random number."""
    flat = probs.reshape(-1, probs.size(-1))
    if bool((flat.max(-1).values == 1.0).all()):
        return flat.argmax(-1).view(probs.shape[:-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def verify(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, generator: torch.Generator | None
           ) -> tuple[int, int]:
    """Speculative sampling's rule. p (n + 1, V): the target's distributions at the n draft positions and the one
    after; q (n, V): the distributions drafts (n,) were drawn from. Returns (accepted drafts a, the token after
    them): at the first rejection (a < n) a draw from norm(max(0, p_a - q_a)), else a bonus draw from p_n."""
    n = drafts.numel()
    if n:
        idx = torch.arange(n, device=p.device)
        p_d, q_d = p[idx, drafts], q[idx, drafts]  # (n,), (n,); q_d > 0: each draft was drawn from q
        u = torch.rand(n, generator=generator, device=p.device)
        rejected = (u * q_d >= p_d).nonzero()
        if rejected.numel():
            a = int(rejected[0])
            residual = (p[a] - q[a]).clamp_min(0)
            total = residual.sum()
            residual = residual / total if total > 0 else p[a]  # total 0 only by rounding (p_a == q_a)
            return a, int(draw(residual, generator))
    return n, int(draw(p[n], generator))


def speculative_row(model: Model, ids: list[int], n_new: int, *, draft_len: int, temperature: float,
                    top_k: int | None, top_p: float | None, generator: torch.Generator | None,
                    predraft: bool = False, on_pass: Any = None, rolling_cache: bool = False
                    ) -> tuple[list[int], dict[str, Any]]:
    """Append n_new tokens to ids (one sample, batch 1) -> (ids + new, stats): ``passes``, ``tokens_per_pass``
    (tokens written by each pass), ``drafts_per_pass`` / ``accepted_per_pass`` (drafts verified / accepted),
    ``blocks_per_pass`` (blocks of masks drafted: 0, 1, or with ``predraft`` one per outcome), ``pass_tokens``
    (tokens through the model in each pass: its cost), ``window_passes`` (passes past block_size, see above).
    ``predraft``: every pass drafts for each number of drafts that may be accepted (n + 1 blocks of k masks,
    TiDAR's), so the pass after a rejection verifies drafts too. ``rolling_cache`` (a rope model; see the module
    docstring): when the generation runs past block_size, a pass that would not fit its full draft evicts the
    oldest cached keys instead of shrinking the draft or sliding; stats ``evicted`` (positions evicted before
    each pass) and ``rolled_passes`` (passes after the first eviction: the approximate ones). on_pass(text,
    n_accepted, rejected: bool) is called after every pass with the text so far."""
    k, bs = draft_len, model.config.block_size
    device = next(model.parameters()).device
    cache = model.new_kv_cache(1, device, cache_dtype(model, device))
    text, target = list(ids), len(ids) + n_new
    drafts: list[int] = []
    q = torch.empty(0)
    stats: dict[str, Any] = {"passes": 0, "tokens_per_pass": [], "drafts_per_pass": [], "accepted_per_pass": [],
                             "blocks_per_pass": [], "pass_tokens": [], "window_passes": 0, "evicted": [],
                             "rolled_passes": 0}
    rolling = rolling_cache and target > bs  # within block_size the cache never rolls: the option changes nothing

    def probs(logits: torch.Tensor) -> torch.Tensor:
        return distribution(logits, temperature, top_k, top_p)

    while len(text) < target:
        before = len(text)
        if rolling:  # make room for the pass's full draft by evicting the oldest keys (keys keep their positions)
            evict = _to_evict(before - cache.offset, len(drafts), k, predraft, bs)
            cache.evict(evict)
            stats["evicted"].append(evict)
            stats["rolled_passes"] += cache.offset > 0
        if before > bs and not rolling:  # the text no longer fits: slide as generate_ar does (re-prefill the window)
            cache.reset()
            logits = model.decode(torch.tensor([text[-bs:]], device=device), cache)  # (1, 1, V)
            n_acc, nxt, drafts, rejected = 0, int(draw(probs(logits[0, -1]), generator)), [], False
            stats["drafts_per_pass"].append(0)
            stats["blocks_per_pass"].append(0)
            stats["pass_tokens"].append(bs)  # a full window, for one token
            stats["window_passes"] += 1
        else:
            slot = before - cache.offset  # the slot after the text (= before unless the cache rolled)
            drafts = drafts[:min(bs - slot, target - before - 1)]  # the clean part must fit; no draft past target
            q = q[:len(drafts)]
            pos, nd = cache.pos, len(drafts)
            clean = text[cache.offset + pos:] + drafts  # the text not yet cached (the newest token), the drafts
            room = bs - pos - len(clean)  # cache slots left for masks
            blocks = nd + 1 if predraft and room // (nd + 1) >= 2 else 1  # predraft: one block per outcome
            m = min(k, room // blocks)  # block b's masks sit at positions before + b ..; the first is the token's
            if m < 2 or before + nd + 1 >= target:
                m, blocks = 0, 1  # they would draft nothing the text still needs
            ar, dr = draft_pass(model, torch.tensor([clean], device=device), m, cache, blocks)  # dr (1, blocks, m, V)
            p = probs(ar[0, len(clean) - nd - 1:])  # (nd + 1, V): positions before .. before + nd
            n_acc, nxt = verify(p, q, torch.tensor(drafts, dtype=torch.long, device=device), generator)
            rejected = n_acc < nd
            text += drafts[:n_acc]
            cache.advance(slot - pos + n_acc)  # the pending tokens and the accepted drafts (exact unless rolled)
            stats["drafts_per_pass"].append(nd)
            stats["blocks_per_pass"].append(blocks if m else 0)  # mask blocks drafted (predraft: one per outcome)
            stats["pass_tokens"].append(len(clean) + blocks * m)
            drafts = []
            block = n_acc if blocks > 1 else 0 if not rejected else None  # the block drafted for this outcome
            if block is not None and m >= 2:
                q = probs(dr[0, block, 1:])  # (m - 1, V): positions after the token just written
                drafts = draw(q, generator).tolist()
        text.append(nxt)
        stats["passes"] += 1
        stats["tokens_per_pass"].append(len(text) - before)
        stats["accepted_per_pass"].append(n_acc)
        if on_pass is not None:
            on_pass(text[:target], n_acc, rejected)
    return text[:target], stats


def _to_evict(slot: int, n_drafts: int, k: int, predraft: bool, bs: int) -> int:
    """Positions a rolling cache evicts before a pass so that its full draft fits: the text fills slots
    0..slot - 1, the pass appends n_drafts drafts and k masks (``predraft``: one block of k per outcome, when
    drafts and masks then take at most half the window), and slot + n_drafts + masks <= bs, keeping at least
    the newest token. 0 when it already fits."""
    masks = (n_drafts + 1) * k if predraft else k
    if n_drafts + masks > bs // 2:
        masks = k
    masks = min(masks, bs - 1 - n_drafts)
    return max(0, slot + n_drafts + masks - bs)


def _prompt_lengths(canvas: torch.Tensor, mask_token_id: int, fixed: torch.Tensor | None) -> torch.Tensor:
    """(B,) leading given tokens of each row; ValueError unless a row is a prompt, then only [MASK]."""
    masked = canvas == mask_token_id
    if fixed is not None and bool((fixed & masked).any()):
        raise ValueError("a fixed position must hold a token")
    n_prompt = (~masked).long().cumprod(1).sum(1)
    if bool((masked.sum(1) + n_prompt != canvas.size(1)).any()) or bool((n_prompt == 0).any()):
        raise ValueError("AR and speculative sampling continue a prompt: the canvas must be prompt tokens, then only "
                         "[MASK] (a suffix or infill needs a diffusion model)")
    return n_prompt


def sample_ar(model: Model, canvas: torch.Tensor, *, mask_token_id: int, temperature: float = 1.0,
              top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None,
              fixed: torch.Tensor | None = None, on_step: OnStep | None = None, use_kv_cache: bool = True,
              rolling_cache: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """The ``ar`` sampler: ``generate_ar`` (one token per pass, KV cache) on each row's prompt, as a canvas sampler
    (the same text as ``nanodlm sample`` of a gpt2 model); a TiDAR model's reference. on_step after every token.
    ``rolling_cache``: see ``generate_ar``; info ``rolled_passes`` (per row: passes with evicted keys)."""
    n_prompt = _prompt_lengths(canvas, mask_token_id, fixed)
    tokens, info = canvas.clone(), {"committed_per_step": [], "remasked_per_step": [], "steps_used": 0,
                                    "forward_passes": 0, "passes_per_sample": [], "rolled_passes": []}
    for b in range(tokens.size(0)):
        P, n = int(n_prompt[b]), tokens.size(1) - int(n_prompt[b])

        def on_token(i: int, idx: torch.Tensor, b: int = b, P: int = P) -> None:
            tokens[b, :P + i] = idx[0]
            revealed = torch.zeros_like(tokens, dtype=torch.bool)
            revealed[b, P + i - 1] = True
            info["steps_used"] += 1
            info["committed_per_step"].append(1)
            info["remasked_per_step"].append(0)
            if on_step is not None:
                on_step(info["steps_used"], tokens, revealed, torch.zeros_like(revealed))

        stats = {"passes": 0}
        generate_ar(model, tokens[b:b + 1, :P], n, temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator, use_cache=use_kv_cache, on_token=on_token, stats=stats,
                    rolling_cache=rolling_cache)
        info["forward_passes"] += stats["passes"]
        info["passes_per_sample"].append(stats["passes"])
        info["rolled_passes"].append(stats.get("rolled", 0))
    return tokens, info


def sample_speculative(model: Model, canvas: torch.Tensor, *, mask_token_id: int, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None,
                       fixed: torch.Tensor | None = None, on_step: OnStep | None = None,
                       draft_len: int | None = None, predraft: bool = False, rolling_cache: bool = False
                       ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The ``speculative`` sampler: canvas (B, L) = a prompt, then [MASK] to the end -> tokens (B, L).

    Each row is written on its own (batch 1: rows accept different numbers of drafts, and the cache stays exact).
    ``draft_len`` k: masks per block (None = the model's); ``predraft``: see the module docstring. info:
    ``forward_passes`` (model calls, all rows), ``passes_per_sample``, ``tokens_per_pass`` (mean per row),
    ``accepted_per_pass`` (accepted drafts, mean per row), ``acceptance`` (accepted / drafted, per row),
    ``draft_len``, ``window_passes`` and ``pass_tokens`` (per row: passes past block_size, tokens through the
    model), ``rolled_passes`` (per row: passes with evicted keys, ``rolling_cache`` only: approximate ones).
    on_step(pass, tokens (B, L), revealed (the tokens this pass wrote), remasked (the position of a rejected
    draft, now the corrected token)).
    """
    check_sampling_args(temperature, top_k, top_p)
    k = draft_len or check_tidar(model)
    check_tidar(model)
    if k < 1:
        raise ValueError(f"draft_len must be >= 1, got {k}")
    n_prompt = _prompt_lengths(canvas, mask_token_id, fixed)
    tokens = canvas.clone()
    masked = tokens == mask_token_id
    info: dict[str, Any] = {"committed_per_step": [], "remasked_per_step": [], "steps_used": 0, "forward_passes": 0,
                            "passes_per_sample": [], "tokens_per_pass": [], "accepted_per_pass": [],
                            "acceptance": [], "draft_len": k, "window_passes": [], "pass_tokens": [],
                            "rolled_passes": []}
    with inference_mode(model):
        for b in range(tokens.size(0)):
            P = int(n_prompt[b])
            seen = [P]  # the row's length after the last pass

            def on_pass(text: list[int], n_acc: int, rejected: bool, b: int = b, seen: list[int] = seen) -> None:
                written = len(text) - seen[0]  # tokens this pass wrote
                seen[0] = len(text)
                info["steps_used"] += 1
                info["committed_per_step"].append(written)
                info["remasked_per_step"].append(int(rejected))
                if on_step is None:  # nothing to show: the canvas is written once, after the row
                    return
                tokens[b, :len(text)] = torch.tensor(text, device=tokens.device)
                revealed = torch.zeros_like(masked)
                revealed[b, len(text) - written:len(text)] = True
                remasked = torch.zeros_like(masked)
                if rejected:
                    remasked[b, len(text) - written + n_acc] = True
                on_step(info["steps_used"], tokens, revealed, remasked)

            out, stats = speculative_row(model, tokens[b, :P].tolist(), tokens.size(1) - P, draft_len=k,
                                       temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                                       predraft=predraft, on_pass=on_pass, rolling_cache=rolling_cache)
            tokens[b] = torch.tensor(out, device=tokens.device)
            n = max(1, stats["passes"])
            info["forward_passes"] += stats["passes"]
            info["passes_per_sample"].append(stats["passes"])
            info["tokens_per_pass"].append(sum(stats["tokens_per_pass"]) / n)
            info["accepted_per_pass"].append(sum(stats["accepted_per_pass"]) / n)
            info["acceptance"].append(sum(stats["accepted_per_pass"]) / max(1, sum(stats["drafts_per_pass"])))
            info["window_passes"].append(stats["window_passes"])  # per row: full-window passes past block_size
            info["pass_tokens"].append(sum(stats["pass_tokens"]))  # per row: tokens through the model, all passes
            info["rolled_passes"].append(stats["rolled_passes"])  # per row: passes over a rolled (evicted) cache
    return tokens, info
