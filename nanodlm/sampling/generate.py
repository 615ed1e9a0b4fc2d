"""The generation library: a loaded model + its tokenizer + ``SamplerOptions`` + a ``Prompt`` -> text.

``generate`` picks the generator from ``model.config.model_type``: gpt2 appends tokens left to right (with the
KV cache); a diffusion model fills a canvas of [MASK] with the sampler the options name, block by block for
block diffusion (``blockwise.generate_blocks``) and window by window for text longer than ``block_size``
(``blockwise.generate_long``). ``nanodlm sample``, ``judge``, ``bench`` and the web demo are thin callers.

    from nanodlm.sampling.generate import Prompt, SamplerOptions, generate
    out = generate(model, tok, SamplerOptions(steps=32), Prompt(start="ROMEO:"), num_samples=2, seed=0)
    out.texts, out.tokens, out.info["forward_passes"]

Command lines build both from ``--key=value`` flags with ``sampling_configs``: every command that samples
exposes the same keys, declared once in the two dataclasses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..core.errors import UserError
from ..core.fileio import read_text_file
from ..model.subtokens import model_code
from ..runs.checkpoint import check_generation_size
from ..training.config import build_configs, print_keys
from .ar_sampling import generate_ar
from .blockwise import generate_blocks, generate_long
from .fim import generate_fim
from .prime_sampling import PRIME_SAMPLERS
from .samplers import OnStep, SamplerOptions, get_sampler
from .settings import check_settings, ignored_settings, refuse

__all__ = ["Generation", "Prompt", "SamplerOptions", "build_canvas", "check_settings", "fim_gap", "generate",
           "ignored_settings", "print_sampling_keys", "read_text", "sampling_configs"]

T = TypeVar("T")
NUM_SAMPLES, SEED = 3, 1337  # the defaults of `nanodlm sample` and of a web demo request
ALIASES = {"max_steps": "steps"}  # the specification calls the number of denoising steps max_steps


@dataclass
class Prompt:
    """What to condition on, and how much to write."""

    start: str | None = None  # text the sample begins with, or FILE:path (gpt2 default "\n"; diffusion: none)
    suffix: str | None = None  # diffusion or a FIM gpt2 model (objective=fim): fixed end of the text (FILE:path too)
    infill: str | None = None  # gaps = `placeholder` runs; FIM gpt2: one gap, exact size (<EOM> barred until then)
    placeholder: str = "_"  # one character; in --infill a run of N is N positions (N tokens for BPE)
    length: int | None = None  # with prefix+suffix (diffusion: None=block_size; FIM gpt2 --suffix: None=until <EOM>)
    max_new_tokens: int = 500  # gpt2: tokens appended to the prompt

    def __post_init__(self) -> None:
        if len(self.placeholder) != 1:
            raise UserError(f"prompt key 'placeholder' must be a single character; got {self.placeholder!r}")
        if self.length is not None and self.length < 1:
            raise UserError(f"prompt key 'length' must be >= 1 (or None for block_size); got {self.length}")
        if self.max_new_tokens < 1:
            raise UserError(f"prompt key 'max_new_tokens' must be >= 1; got {self.max_new_tokens}")
        if self.infill is not None and (self.start is not None or self.suffix is not None):
            raise UserError("give either --infill or --start/--suffix: the infill template holds the whole text")


@dataclass
class Generation:
    """tokens (B, L) long: the whole text, prompt included; texts: tokens decoded; completions: the text
    after the prompt's ``prompt_len`` leading tokens; info: what the generator reports (see ``generate``)."""

    tokens: torch.Tensor
    texts: list[str]
    completions: list[str]
    prompt_len: int
    info: dict[str, Any] = field(default_factory=dict)


def read_text(value: str) -> str:
    """A prompt value: the text itself, or the contents of ``path`` for ``FILE:path``."""
    if value.startswith("FILE:"):
        return read_text_file(Path(value[5:]), "prompt file")
    return value


def build_canvas(tok: Any, prompt: Prompt, block_size: int, mask_id: int) -> tuple[list[int], list[int], int]:
    """(prefix ids, suffix ids, total length) or, for an infill template, (the whole canvas, [], its length)."""
    if prompt.infill is not None:
        ids: list[int] = []
        for i, part in enumerate(read_text(prompt.infill).split(prompt.placeholder)):
            if i:
                ids.append(mask_id)  # a placeholder run of N characters is N positions (N tokens for BPE)
            if part:
                ids.extend(tok.encode(part))
        if len(ids) > block_size:
            raise UserError(f"--infill template is {len(ids)} tokens; it must fit in block_size {block_size}")
        if mask_id not in ids:
            raise UserError(f"--infill template has no {prompt.placeholder!r} to fill: mark the gaps with it "
                            "(or change --placeholder)")
        return ids, [], len(ids)
    prefix = tok.encode(read_text(prompt.start)) if prompt.start else []
    suffix = tok.encode(read_text(prompt.suffix)) if prompt.suffix else []
    length = block_size if prompt.length is None else prompt.length
    if length < len(prefix) + len(suffix) + 1:
        raise UserError(f"--length {length} leaves no room after {len(prefix)} prefix and {len(suffix)} suffix "
                        f"tokens: raise --length")
    if length > block_size and suffix:
        raise UserError(f"--length {length} with --suffix does not fit in block_size {block_size}: "
                        f"lower --length to {block_size} or drop --suffix")
    return prefix, suffix, length


def sampling_configs(values: dict[str, Any], command: type[T], prompt: bool = True, text: bool = True
                     ) -> tuple[T, SamplerOptions, Prompt | None]:
    """{key: value} flags -> (the command's config, SamplerOptions, Prompt or None). A key of the command's own
    shadows an option of the same name; ``max_steps`` is ``steps``; a key none of them has is an error.
    ``text=False``: the values are JSON (a request), typed: "16" is a string, not a length."""
    for alias, key in ALIASES.items():
        if alias in values and key in values and str(values[alias]) != str(values[key]):
            raise UserError(f"--{key}={values[key]} and --{alias}={values[alias]} are the same setting; give one")
    values = {ALIASES.get(k, k): v for k, v in values.items()}
    if prompt:
        cfg, options, prompt_cfg = build_configs(values, command, SamplerOptions, Prompt, text=text)
        return cfg, options, prompt_cfg
    cfg, options = build_configs(values, command, SamplerOptions, text=text)
    return cfg, options, None


def print_sampling_keys(command: type, prompt: bool = True) -> None:
    """The ``--help`` key list of a command that samples: its own keys, then the sampler options (and prompt)."""
    print_keys(command, "keys (defaults):")
    print_keys(SamplerOptions, "sampler options (every command that samples takes these; max_steps = steps):",
               skip={f.name for f in fields(command)})
    if prompt:
        print_keys(Prompt, "prompt:")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # a fresh random seed
    else:
        gen.manual_seed(seed)
    return gen


def _newline(tok: Any) -> list[int]:
    """The default gpt2 prompt (nanoGPT's "\\n"); token 0 for a vocabulary without a newline."""
    try:
        return tok.encode("\n") or [0]
    except UserError:
        return [0]


def _ar(model: torch.nn.Module, tok: Any, options: SamplerOptions, prompt: Prompt, B: int, gen: torch.Generator,
        on_step: OnStep | None) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
    if prompt.suffix is not None or prompt.infill is not None:
        return _fim(model, tok, options, prompt, B, gen, on_step)
    if prompt.start is not None:
        ids = tok.encode(read_text(prompt.start)) or [0]
    else:
        ids = _newline(tok)
    idx = torch.tensor([ids] * B, dtype=torch.long, device=_device(model))  # (B, P)
    on_token = None
    if on_step is not None:
        def on_token(i: int, text: torch.Tensor) -> None:  # text (B, P + i): one more token at the end
            revealed = torch.zeros_like(text, dtype=torch.bool)
            revealed[:, -1] = True
            on_step(i, text, revealed, torch.zeros_like(revealed))
    n = prompt.max_new_tokens
    fixed = torch.zeros(B, len(ids) + n, dtype=torch.bool, device=idx.device)
    fixed[:, :len(ids)] = True
    if options.sampler == "speculative":  # a TiDAR model drafts and verifies (speculative.py)
        mask = model.config.mask_token_id
        canvas = torch.cat((idx, torch.full((B, n), -1 if mask is None else mask, dtype=torch.long,
                                            device=idx.device)), dim=1)
        out, info = get_sampler("speculative")(model, canvas, mask_token_id=mask, generator=gen, on_step=on_step,
                                               **options.sampler_kwargs())
        return out, info, fixed
    stats = {"passes": 0}  # the model calls, counted by generate_ar (batched: each is one call at batch 1 too)
    out = generate_ar(model, idx, prompt.max_new_tokens, temperature=options.temperature, top_k=options.top_k,
                      top_p=options.top_p, generator=gen, use_cache=options.use_kv_cache, on_token=on_token,
                      stats=stats, vocab_size=model.config.text_vocab_size, rolling_cache=options.rolling_cache)
    info = {"sampler": "ar", "steps_used": n, "forward_passes": stats["passes"],
            "rolled_passes": stats.get("rolled", 0),  # passes over a rolled cache (--rolling_cache, approximate)
            "passes_per_sample": [stats["passes"]] * B, "committed_per_step": [B] * n, "remasked_per_step": [0] * n}
    return out, info, fixed


def fim_gap(tok: Any, prompt: Prompt) -> tuple[list[int], list[int], int | None]:
    """(prefix ids, suffix ids, the gap's length or None) for a FIM model: an --infill template's one gap (its
    placeholder count), or --start/--suffix with the gap --length minus both (None without --length)."""
    if prompt.infill is not None:
        text = read_text(prompt.infill)
        gaps = re.findall(f"{re.escape(prompt.placeholder)}+", text)
        if len(gaps) != 1:
            raise UserError(f"a FIM model fills one gap; the --infill template has {len(gaps)}: use a diffusion "
                            f"model for several (or none), or mark one gap with {prompt.placeholder!r}")
        before, _, after = text.partition(gaps[0])
        if not before and not after:
            raise UserError("the --infill template is all gap: give text on at least one side of it")
        return tok.encode(before) if before else [], tok.encode(after) if after else [], len(gaps[0])
    prefix = tok.encode(read_text(prompt.start)) if prompt.start else []
    suffix = tok.encode(read_text(prompt.suffix))
    if prompt.length is None:
        return prefix, suffix, None
    if prompt.length <= len(prefix) + len(suffix):
        raise UserError(f"--length {prompt.length} leaves no gap between {len(prefix)} prefix and {len(suffix)} "
                        "suffix tokens: raise --length")
    return prefix, suffix, prompt.length - len(prefix) - len(suffix)


def _fim(model: torch.nn.Module, tok: Any, options: SamplerOptions, prompt: Prompt, B: int, gen: torch.Generator,
         on_step: OnStep | None = None) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
    """A gap filled by a FIM-trained gpt2 model (sampling/fim.py): exactly the gap's length when it is known,
    else until <EOM> or --max_new_tokens. Rows that end early are padded with -1 (never decoded); on_step sees
    prefix + the middle so far + (a known gap's unwritten positions as -1) + suffix after every token."""
    if not getattr(model.config, "fim_sentinels", 0):
        raise UserError("--suffix and --infill need a diffusion model or a gpt2 model trained with objective=fim; "
                        "this gpt2 model continues --start only")
    if options.sampler == "speculative":  # any other sampler name is a diffusion one: ignored (and warned) as in _ar
        raise UserError("--sampler=speculative drafts with a TiDAR model; a FIM model fills a gap with --sampler=ar")
    prefix, suffix, length = fim_gap(tok, prompt)
    device = _device(model)

    def canvas(middles: list[list[int]]) -> torch.Tensor:  # (B, width): -1 where nothing is written (yet)
        rows = [prefix + m + [-1] * ((length or len(m)) - len(m)) + suffix for m in middles]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long, device=device)

    on_token = None
    if on_step is not None:
        def on_token(i: int, middles: list[list[int]]) -> None:
            tokens = canvas(middles)
            revealed = torch.zeros_like(tokens, dtype=torch.bool)
            for b, m in enumerate(middles):
                if len(m) == i:  # this row wrote its i-th token now (a row past <EOM> writes nothing)
                    revealed[b, len(prefix) + i - 1] = True
            on_step(i, tokens, revealed, torch.zeros_like(revealed))
    middles, info = generate_fim(model, prefix, suffix, B, length=length, max_new=prompt.max_new_tokens,
                                 temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
                                 generator=gen, use_cache=options.use_kv_cache, on_token=on_token)
    rows = [prefix + m + suffix for m in middles]
    tokens = canvas(middles)
    fixed = torch.zeros_like(tokens, dtype=torch.bool)
    for b, m in enumerate(middles):
        fixed[b, :len(prefix)] = True
        fixed[b, len(prefix) + len(m):len(rows[b])] = True
    n = max(len(m) for m in middles)
    info = {"sampler": "ar", "steps_used": n, "committed_per_step": [B] * n, "remasked_per_step": [0] * n,
            "passes_per_sample": [info["forward_passes"]] * B, **info}
    return tokens, info, fixed


def _diffusion(model: torch.nn.Module, tok: Any, options: SamplerOptions, prompt: Prompt, B: int,
               gen: torch.Generator, on_step: OnStep | None) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
    config = model.config
    mask_id = config.mask_token_id
    sampler: Callable[..., tuple[torch.Tensor, dict[str, Any]]] = get_sampler(options.sampler)
    if model_code(model) is not None:  # a prime model: ancestral and confidence reveal sub-tokens
        sampler = PRIME_SAMPLERS.get(options.sampler, sampler)
    kwargs = options.sampler_kwargs()  # exactly the options this sampler takes (steps, temperature, ...)
    if config.diffusion_block and options.semi_ar_block not in (0, config.diffusion_block):
        raise UserError(f"semi_ar_block is for bidirectional models; this block diffusion model decodes in blocks "
                        f"of {config.diffusion_block}: drop --semi_ar_block")
    block = config.diffusion_block or options.semi_ar_block
    if block:  # block diffusion, or semi-autoregressive decoding: each window is denoised block by block
        inner = sampler

        def sampler(model: Any, canvas: torch.Tensor, **kw: Any) -> tuple[torch.Tensor, dict[str, Any]]:
            return generate_blocks(model, canvas, block=block, sampler=inner, use_cache=options.use_kv_cache,
                                   approx_cache=options.approx_cache, **kw)
    prefix, suffix, length = build_canvas(tok, prompt, config.block_size, mask_id)
    device = _device(model)
    if length > config.block_size:
        prefix_t = torch.tensor([prefix] * B, dtype=torch.long, device=device).view(B, len(prefix))
        out, info = generate_long(model, prefix_t, length, config.block_size, sampler, mask_token_id=mask_id,
                                  generator=gen, new_block=options.new_block, on_step=on_step, **kwargs)
        fixed = torch.zeros_like(out, dtype=torch.bool)
        fixed[:, :len(prefix)] = True
        return out, info, fixed
    row = prefix + [mask_id] * (length - len(prefix) - len(suffix)) + suffix
    canvas = torch.tensor([row] * B, dtype=torch.long, device=device)
    out, info = sampler(model, canvas, mask_token_id=mask_id, generator=gen, on_step=on_step, **kwargs)
    return out, info, canvas != mask_id


def generate(model: torch.nn.Module, tokenizer: Any, options: SamplerOptions | None = None,
             prompt: Prompt | None = None, *, num_samples: int = 1, seed: int | torch.Generator | None = None,
             on_step: OnStep | None = None) -> Generation:
    """Generate ``num_samples`` texts from ``model`` (gpt2 or diffusion, read from ``model.config``).

    seed: an int, a ``torch.Generator`` on the model's device, or None (random). on_step(step, tokens (B, L),
    revealed (B, L) bool, remasked (B, L) bool) sees the canvas after every update: each denoising step for
    diffusion, each new token for gpt2 (tokens is then the text so far, revealed its last column).
    info: ``model_type``, ``sampler`` ("ar" for gpt2), ``steps_used``, ``forward_passes``, ``committed_per_step``,
    ``remasked_per_step``, ``fixed`` ((B, L) bool: the positions the prompt gave), ``elapsed_s`` (wall clock of
    the generation, synchronised on CUDA), ``chars_per_s`` (characters of the completions per second), and
    whatever the sampler adds (``blocks``, ``final_pass``, ...).
    """
    options = options or SamplerOptions()
    prompt = prompt or Prompt()
    refuse(model.config, options)  # a sampler this model cannot use, a draft_len that does not fit (settings.py)
    if num_samples < 1:
        raise UserError(f"num_samples must be >= 1; got {num_samples}")
    check_generation_size(model.config, num_samples, prompt.length or (model.config.block_size
                                                                        if model.config.model_type != "gpt2" else
                                                                        prompt.max_new_tokens))
    device = _device(model)
    gen = _generator(seed, device)
    run = _ar if model.config.model_type == "gpt2" else _diffusion

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    t0 = time.perf_counter()
    try:
        tokens, info, fixed = run(model, tokenizer, options, prompt, num_samples, gen, on_step)
    except ValueError as e:  # settings only the generator can check (new_block > block_size, ...)
        raise UserError(str(e)) from None
    sync()
    elapsed = time.perf_counter() - t0
    prompt_len = int(fixed[0].long().cumprod(0).sum())  # leading given tokens: the prompt (gpt2) or the prefix
    rows = [[t for t in row if t >= 0] for row in tokens.tolist()]  # -1 pads rows a FIM gap ended early
    texts = [tokenizer.decode(row) for row in rows]
    completions = [tokenizer.decode(row[prompt_len:]) for row in rows]
    chars = sum(len(t) for t in completions)
    info = {"model_type": model.config.model_type, "sampler": options.sampler, **info, "fixed": fixed,
            "elapsed_s": elapsed, "chars_per_s": chars / elapsed if elapsed > 0 else float("inf")}
    return Generation(tokens=tokens, texts=texts, completions=completions, prompt_len=prompt_len, info=info)
