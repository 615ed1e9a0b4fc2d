"""``nanodlm judge``: score generated text with a separate autoregressive model and surface statistics.

The judge is an AR checkpoint (``configs/judge.py`` trains one). Its perplexity on samples is the
"generative perplexity" used to evaluate diffusion LMs (MDLM, Sahoo et al. 2024, arXiv:2406.07524).
Perplexity alone rewards degenerate text (a repeated letter is very predictable), so the table always
shows the character entropy, distinct-n (Li et al. 2016) and the longest repeated substring beside it,
and scores real validation text of the same number and length with the same judge as the reference row.

Conventions: a text's first token has no context and is not scored (for samples and real text alike);
``entropy_bits`` is the character unigram entropy of all texts concatenated (per-text entropies of short
texts are biased low, and the concatenation is the distribution the sampler actually produces);
distinct-n and longest repeat are means over texts.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError, check_finite
from ..core.fileio import check_output_path, read_jsonl, read_text_file
from ..core.report import print_table, write_json
from ..data.dataset import load_meta, open_split
from ..data.tokenizers import load_tokenizer
from ..runs.checkpoint import load_model
from ..sampling.generate import Prompt, SamplerOptions, generate, print_sampling_keys, sampling_configs
from ..training.config import parse_overrides, read_config_file
from ..training.distributed import resolve_device
from .protocol import passages
from .textstats import distinct_n, judge_nll, longest_repeated_substring, unigram_entropy

SEPARATOR = "---------------"  # nanoGPT's sample.py prints this line after every sample
COLUMNS = (("judge_ppl", "judge PPL"), ("judge_nll", "judge NLL"), ("entropy_bits", "entropy (bits)"),
           ("distinct_2", "distinct-2"), ("distinct_4", "distinct-4"), ("longest_repeat", "longest repeat"))


@dataclass
class JudgeConfig:
    judge: str = "out-judge"  # out_dir of the AR judge (train it with `nanodlm train judge`)
    judge_ckpt: str = "last"  # last | best (best.pt was chosen on the val text the real-text row scores)
    samples: str | None = None  # a .jsonl (one JSON string per line) or nanoGPT-style text file
    out_dir: str | None = None  # or: sample from this checkpoint (with the sampler options below)
    ckpt: str = "best"  # best | last, of out_dir
    num_samples: int = 8  # texts to sample and score
    length: int = 256  # tokens per sample (gpt2: new tokens after the "\n" prompt)
    seed: int = 1337  # sampling and the choice of reference passages
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    data_dir: str | None = None  # reference text: default the judge's training data
    dataset: str | None = None  # reference text: default the judge's training dataset
    json: str | None = None  # also write both rows here
    threads: int = 1  # torch CPU threads (1: quick on a busy machine, see README; 0 = torch's default, one per core)

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf floats, seeds outside torch's range
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0 (0 = torch's default); got {self.threads}")
        if (self.samples is None) == (self.out_dir is None):
            raise UserError("give exactly one of --samples=FILE or --out_dir=MODEL_DIR")
        for key in ("num_samples", "length"):
            if getattr(self, key) < 1:
                raise UserError(f"--{key} must be >= 1; got {getattr(self, key)}")
        if self.json is not None:
            check_output_path(self.json, "--json", make_folder=True)


# --- scoring ----------------------------------------------------------------------------------------


def _encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
    stoi = getattr(tokenizer, "stoi", None)
    if stoi is not None:  # char tokenizer: name every unknown character at once, and where it first occurs
        unknown: dict[str, int] = {}
        for i, text in enumerate(texts):
            for ch in set(text) - stoi.keys():
                unknown.setdefault(ch, i)
        if unknown:
            shown = ", ".join(f"{ch!r} (text {i})" for ch, i in sorted(unknown.items())[:20])
            hint = " ([MASK] left in a diffusion sample)" if getattr(tokenizer, "mask_glyph", None) in unknown else ""
            raise UserError(f"the judge's vocabulary lacks these characters: {shown}{hint}; "
                            "use a judge trained on the same dataset as the samples")
    return [tokenizer.encode(text) for text in texts]


def score_texts(judge_model: torch.nn.Module, judge_tokenizer, texts: list[str],
                block_size: int | None = None) -> dict[str, float]:
    """Judge and surface statistics of a list of texts.

    ``judge_nll``: token-weighted mean CE (nats) over all texts, i.e. total nats / total scored tokens
    (``textstats.judge_nll`` per text, with a sliding window for texts longer than ``block_size``, default
    the judge's); texts of fewer than two tokens have nothing to score. ``judge_ppl`` = exp(judge_nll).
    ``entropy_bits``: character unigram entropy of the concatenation; ``distinct_2``/``distinct_4`` and
    ``longest_repeat`` (characters): means over texts. Also ``num_texts``, ``chars`` and ``tokens`` (scored).
    """
    if not texts:
        raise UserError("no texts to score")
    block_size = block_size or judge_model.config.block_size
    total, count = 0.0, 0
    for ids in _encode_all(judge_tokenizer, texts):
        if len(ids) < 2:
            continue
        nll, n = judge_nll(judge_model, torch.tensor(ids, dtype=torch.long), block_size)  # moved to the model's device
        total, count = total + nll * n, count + n
    mean_nll = total / count if count else float("nan")
    return {
        "judge_nll": mean_nll,
        "judge_ppl": math.exp(mean_nll) if count else float("nan"),
        "entropy_bits": unigram_entropy("".join(texts), bits=True),
        "distinct_2": sum(distinct_n(t, 2) for t in texts) / len(texts),
        "distinct_4": sum(distinct_n(t, 4) for t in texts) / len(texts),
        "longest_repeat": sum(longest_repeated_substring(t) for t in texts) / len(texts),
        "num_texts": len(texts),
        "chars": sum(len(t) for t in texts),
        "tokens": count,
    }


# --- the texts --------------------------------------------------------------------------------------


def reference_texts(data_dir: str, dataset: str, tokenizer, num: int, length_chars: int, seed: int,
                    split: str = "val") -> list[str]:
    """``num`` passages of real text from a split, each ``length_chars`` characters (fewer only if the
    decoded window is shorter), at offsets drawn from ``seed``: the same seed gives the same passages.

    A window of ``length_chars`` tokens (``protocol.passages``) is decoded and cut to ``length_chars``
    characters (a char token is one character, a BPE token usually several).
    """
    data = open_split(data_dir, dataset, split)
    return [text[:length_chars] for text in passages(data, tokenizer.decode, num, length_chars, seed)]


def load_samples(path: str | Path) -> list[str]:
    """Samples from a ``.jsonl`` file (one JSON string per line, as ``nanodlm sample --output`` writes) or
    from text where each sample is followed by a line of 15 dashes (nanoGPT's sample.py output)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        samples = read_jsonl(path, "samples file", str, "; write one JSON string per line")
    else:
        text = read_text_file(path, "samples file")
        samples, lines = [], []
        for line in text.split("\n"):
            if line == SEPARATOR:
                samples.append("\n".join(lines))  # print() added one newline after the sample: it is gone here
                lines = []
            else:
                lines.append(line)
        tail = "\n".join(lines)
        if tail.strip():  # text after the last separator (or a file with none) is one more sample
            samples.append(tail)
    if not samples:
        raise UserError(f"{path} holds no samples")
    return samples


def generate_texts(out_dir: str, options: SamplerOptions, *, num_samples: int, length: int, seed: int,
                   device: str, ckpt: str = "best") -> tuple[list[str], dict[str, Any]]:
    """Sample ``num_samples`` texts of ``length`` tokens from a checkpoint; return them (decoded, without the
    prompt) and info.

    gpt2: ``length`` new tokens after a "\\n" prompt (sampler "ar", one forward per token, so ``steps`` =
    length). diffusion: a canvas of ``length`` [MASK] tokens through ``options``. info: ``chars_per_s`` (wall
    clock of the generation alone, synchronised on CUDA), ``seconds``, ``steps``, ``steps_used``, ``sampler``,
    ``model_type``, ``forward_passes``.
    """
    model, _, tok = load_model(out_dir, ckpt, resolve_device(device))
    out = generate(model, tok, options, Prompt(length=length, max_new_tokens=length), num_samples=num_samples,
                   seed=seed)
    info = out.info
    ar = info["model_type"] == "gpt2"
    return out.completions, {"sampler": info["sampler"], "steps": length if ar else options.steps,
                             "steps_used": info["steps_used"], "forward_passes": info["forward_passes"],
                             "model_type": info["model_type"], "seconds": info["elapsed_s"],
                             "chars_per_s": info["chars_per_s"]}


def low_entropy_note(samples: dict[str, float], real: dict[str, float], tolerance: float = 0.02) -> str | None:
    """A warning when the samples beat real text's judge perplexity with a lower character entropy: repetitive
    or low-temperature text scores well without being better (compare at matched entropy, bench quality)."""
    ppl, real_ppl = samples.get("judge_ppl", math.nan), real.get("judge_ppl", math.nan)
    ent, real_ent = samples.get("entropy_bits", math.nan), real.get("entropy_bits", math.nan)
    if not (ppl < real_ppl and ent < real_ent * (1 - tolerance)):
        return None
    return (f"note: the samples' judge PPL ({ppl:.3f}) is below real text's ({real_ppl:.3f}) but their entropy is "
            f"{real_ent - ent:.3f} bits lower ({ent:.3f} vs {real_ent:.3f}): low-entropy (repetitive, greedy) text "
            "scores well without being better; compare at matched entropy (nanodlm bench quality)")


# --- CLI --------------------------------------------------------------------------------------------


def print_rows(rows: dict[str, dict[str, float]], title: str) -> None:
    def cell(v: float) -> str:
        return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"

    cells = [[name, *(cell(row[k]) for k, _ in COLUMNS), f"{row['num_texts']} × {row['chars'] / row['num_texts']:.0f}"]
             for name, row in rows.items()]
    print_table(title, ["text", *(header for _, header in COLUMNS), "texts × chars"], cells)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: nanodlm judge --judge=AR_OUT_DIR (--samples=FILE | --out_dir=MODEL_DIR) [--key=value ...]")
        print_sampling_keys(JudgeConfig, prompt=False)
        return 0
    config_file, values = parse_overrides(argv)
    cfg, options, _ = sampling_configs({**(read_config_file(config_file) if config_file else {}), **values},
                                       JudgeConfig, prompt=False)
    if not Path(cfg.judge).is_dir():
        raise UserError(f"judge {cfg.judge} does not exist: train one with `nanodlm train judge` or check --judge")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    judge, judge_meta, judge_tok = load_model(cfg.judge, cfg.judge_ckpt, device)
    if judge.config.model_type != "gpt2":
        raise UserError(f"the judge in {cfg.judge} is a {judge.config.model_type} model; a judge must be "
                        "autoregressive (gpt2): train one with `nanodlm train judge`")
    gen_info: dict[str, Any] | None = None
    if cfg.samples is not None:
        texts = load_samples(cfg.samples)
    else:
        texts, gen_info = generate_texts(cfg.out_dir, options, num_samples=cfg.num_samples, length=cfg.length,
                                         seed=cfg.seed, device=device, ckpt=cfg.ckpt)
    samples_row = score_texts(judge, judge_tok, texts)
    judge_cfg = judge_meta.get("config", {})
    # real text of the same number and (mean) length; by default the judge's own validation text
    data_dir = cfg.data_dir or judge_cfg.get("data_dir", "data")
    dataset = cfg.dataset or judge_cfg.get("dataset", "shakespeare_char")
    length_chars = max(2, round(samples_row["chars"] / len(texts)))
    data_tok = load_tokenizer(load_meta(data_dir, dataset))  # decodes that dataset's ids, whatever the judge's
    real = reference_texts(data_dir, dataset, data_tok, len(texts), length_chars, cfg.seed)
    rows = {"real": score_texts(judge, judge_tok, real), "samples": samples_row}
    source = cfg.samples or cfg.out_dir
    print_rows(rows, f"judge {cfg.judge} (iter {judge_meta.get('iter_num')}) · samples from {source}")
    if gen_info is not None:
        print(f"generation: {gen_info['model_type']}, sampler {gen_info['sampler']}, {gen_info['steps']} steps, "
              f"{gen_info['forward_passes']:,} forward passes, {gen_info['chars_per_s']:,.0f} chars/s")
    note = low_entropy_note(rows["samples"], rows["real"])
    if note:
        print(note)
    if cfg.json:
        write_json(cfg.json, {**rows, "judge": cfg.judge, "source": source, "generation": gen_info})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
