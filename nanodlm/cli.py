"""The command line: a thin table of subcommand -> function. Tests call these functions directly."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from .core.errors import UserError

USAGE = """usage: nanodlm COMMAND [ARGS]

commands:
  prepare  KIND [--key=value] ...         tokenize a corpus: shakespeare_char, shakespeare, text, openwebtext, hf
  train    [CONFIG] [--key=value ...]     train a gpt2 (autoregressive) or diffusion model
  sample   [PRESET] --out_dir=DIR [...]   generate text from a checkpoint (presets: configs/sample/)
  eval     --out_dir=DIR [--key=value]    loss / NELBO bound and diagnostics on a split
  judge    --judge=DIR ...                score text with a separate AR model
  bench    SUBCOMMAND [--key=value]       throughput and quality benchmarks (train, sample, steps, quality, parallel)
  serve    --out_dir=DIR [--key=value]    a local web page that shows the model writing, step by step

`nanodlm COMMAND --help` describes a command's keys."""


PREPARE_KINDS = ("shakespeare_char", "shakespeare", "text", "openwebtext", "hf")


@dataclass
class PrepareConfig:
    input: str | None = None  # local text file (default for shakespeare*: download, or $NANODLM_DATA_MIRROR)
    name: str | None = None  # text: the dataset folder name; hf: the Hugging Face dataset (or json/parquet/csv)
    tokenizer: str = "char"  # prepare text: char | gpt2
    val_fraction: float | None = None  # share held out for val (default 0.1; hf and openwebtext 0.0005)
    data_dir: str = "data"  # the folder that holds prepared datasets
    split: str = "train"  # hf and openwebtext (needs pip install 'nanodlm[hf]'; GPT-2 BPE): the split to read
    text_field: str = "text"  # hf: the column holding the text
    config: str | None = None  # hf: the dataset's configuration name, if it has several
    data_files: str | None = None  # hf: local file(s) for a builder such as --name=json
    out_name: str | None = None  # hf: the dataset folder (default: from --name or the file)
    num_proc: int | None = None  # hf: tokenizer processes (default: half the cores)

    def __post_init__(self) -> None:
        if self.tokenizer not in ("char", "gpt2"):
            raise UserError(f"--tokenizer must be char or gpt2; got {self.tokenizer!r}")
        if self.num_proc is not None and self.num_proc < 1:
            raise UserError(f"--num_proc must be >= 1; got {self.num_proc}")


def cmd_prepare(argv: list[str]) -> int:
    from .training.config import build_config, parse_overrides, print_keys

    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: nanodlm prepare KIND [--key=value ...]   (KIND: {', '.join(PREPARE_KINDS)})")
        print("Tokenize a corpus for training into DATA_DIR/NAME: train.bin, val.bin, meta.json.")
        print_keys(PrepareConfig, "keys (defaults):")
        return 0
    kind, values = parse_overrides(argv)
    if kind not in PREPARE_KINDS:
        raise UserError(f"prepare needs a KIND first, one of {', '.join(PREPARE_KINDS)}; got {kind!r}")
    a = build_config(PrepareConfig, values)
    if kind in ("hf", "openwebtext"):
        from .data.hf import OPENWEBTEXT, prepare_hf

        if kind == "hf" and not a.name:
            raise UserError("prepare hf needs --name=DATASET (a hub name, or json/parquet/csv with --data_files)")
        spec = dict(OPENWEBTEXT) if kind == "openwebtext" else dict(name=a.name, split=a.split,
                                                                     text_field=a.text_field, val_fraction=0.0005)
        if a.val_fraction is not None:
            spec["val_fraction"] = a.val_fraction
        meta = prepare_hf(**spec, config=a.config, data_files=a.data_files, data_dir=a.data_dir,
                          out_name=a.out_name, num_proc=a.num_proc)
    else:
        from .data.dataset import prepare

        meta = prepare(kind, input_path=a.input, data_dir=a.data_dir, out_name=a.name, tokenizer=a.tokenizer,
                       val_fraction=0.1 if a.val_fraction is None else a.val_fraction)
    print(f"{a.data_dir}/{meta['dataset']}: vocab {meta['vocab_size']}, train {meta['train_tokens']:,} tokens, "
          f"val {meta['val_tokens']:,} tokens ({meta['tokenizer']})")
    return 0


def cmd_train(argv: list[str]) -> int:
    from .training.config import TrainConfig, list_presets, print_keys

    if argv and argv[0] in ("-h", "--help"):
        print("usage: nanodlm train [CONFIG_FILE|PRESET] [--key=value ...]")
        print(f"presets: {', '.join(list_presets())}")
        print_keys(TrainConfig, "keys (defaults):")
        return 0
    from .training.train import load_train_config, train

    summary = train(load_train_config(argv))
    if summary.get("interrupted"):
        return 143 if summary.get("signal") == "SIGTERM" else 130  # the shell's codes for these signals
    return 0


def cmd_sample(argv: list[str]) -> int:
    from .sample import SampleConfig, list_sample_presets, sample, sample_values
    from .sampling.generate import ALIASES, print_sampling_keys, sampling_configs

    if argv and argv[0] in ("-h", "--help"):
        print("usage: nanodlm sample [PRESET|CONFIG_FILE] --out_dir=DIR [--key=value ...]")
        print(f"sampling presets (configs/sample/): {', '.join(list_sample_presets())}")
        print_sampling_keys(SampleConfig)
        return 0
    values = sample_values(argv)
    sample(*sampling_configs(values, SampleConfig), given={ALIASES.get(k, k) for k in values})
    return 0


def cmd_eval(argv: list[str]) -> int:
    from .evaluation.evaluate import main as eval_main

    return eval_main(argv)


def cmd_judge(argv: list[str]) -> int:
    from .evaluation.judge import main as judge_main

    return judge_main(argv)


def cmd_bench(argv: list[str]) -> int:
    from .bench import main as bench_main

    return bench_main(argv)


def cmd_serve(argv: list[str]) -> int:
    from .training.config import print_keys
    from .web.serve import ServeConfig
    from .web.serve import main as serve_main

    if argv and argv[0] in ("-h", "--help"):
        print("usage: nanodlm serve --out_dir=DIR [--ar_out_dir=DIR] [--host=127.0.0.1] [--port=8000]")
        print_keys(ServeConfig, "keys (defaults):")
        return 0
    return serve_main(argv)


COMMANDS = {
    "prepare": cmd_prepare,
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "judge": cmd_judge,
    "bench": cmd_bench,
    "serve": cmd_serve,
}


def _import_quietly() -> None:
    """Import the heavy libraries with Ctrl-C meaning "exit now": a KeyboardInterrupt inside torch's or numpy's
    import leaves half-initialised modules that fail later with unrelated tracebacks, and nothing needs saving yet."""
    import signal

    def leave(signum, frame):
        print("interrupted", file=sys.stderr, flush=True)
        os._exit(130)

    try:
        previous = signal.signal(signal.SIGINT, leave)
    except ValueError:  # not the main thread: no handlers
        previous = None
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"error: unknown command '{argv[0]}' (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    _import_quietly()
    try:
        return command(argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the environment said no (a name too long, a full disk, no permission): one line
        where = f" ({str(e.filename)[:120]})" if e.filename else ""
        print(f"error: {e.strerror or type(e).__name__}{where}; check the path, its permissions and the free space",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
