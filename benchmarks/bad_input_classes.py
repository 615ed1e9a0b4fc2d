"""The classes of bad input that issue 19's outside matrix found, as cases for ``bad_inputs.py`` (which imports
this): corrupted datasets, tampered checkpoints, config files that are not text, absurd sizes, NaN and inf,
contradictory schedules, resume past the end, outputs aimed at run files, ignored settings, the serve port.
Each class has several members, so a fix of one case does not pass the class."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanodlm.core.fileio import read_json
from nanodlm.runs.rundir import sync_sidecars


def build(root: Path, w: dict[str, str]) -> dict[str, str]:
    """More of the scratch world: damaged copies of the tiny dataset and runs, odd config files."""
    data = Path(w["data"])
    damage: dict[str, Any] = {
        "bad_dtype32": {"dtype": "uint32"}, "bad_float32": {"dtype": "float32"}, "bad_dtype_x": {"dtype": "int3"},
        "bad_vocab_str": {"vocab_size": "40"}, "bad_vocab_0": {"vocab_size": 0}, "bad_vocab_small": {"vocab_size": 3},
        "bad_vocab_null": {"vocab_size": None}, "bad_tokenizer": {"tokenizer": 7},
    }
    for name, changes in damage.items():
        shutil.copytree(data / "tiny", data / name)
        meta = read_json(data / name / "meta.json", "dataset meta")
        meta.update(changes)
        (data / name / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(data / "tiny", data / "bad_ids")  # one id above the vocabulary in train.bin
    ids = np.fromfile(data / "bad_ids" / "train.bin", dtype=np.uint16)
    ids[len(ids) // 3] = 50000
    ids.tofile(data / "bad_ids" / "train.bin")

    def tampered(name: str, edit) -> str:
        out = root / name
        shutil.copytree(w["ar"], out)
        (out / "best.pt").unlink(missing_ok=True)
        ckpt = torch.load(out / "ckpt.pt", weights_only=True)
        edit(ckpt)
        torch.save(ckpt, out / "ckpt.pt")
        with contextlib.suppress(Exception):  # (older code crashed here on some of these files)
            sync_sidecars(out)  # ckpt.json as a real save would leave it, so that only the tampering is under test
        return str(out)

    runs = {
        "no_iter": tampered("no_iter", lambda c: c["meta"].pop("iter_num")),
        "model_list": tampered("model_list", lambda c: c.update(model=[1, 2])),
        "meta_str": tampered("meta_str", lambda c: c.update(meta="meta")),
        "iter_str": tampered("iter_str", lambda c: c["meta"].update(iter_num="3")),
        "huge_args": tampered("huge_args", lambda c: c["meta"]["model_args"].update(n_embd=1 << 20)),
        "opt_int": tampered("opt_int", lambda c: c.update(optimizer=3)),
    }
    shutil.copy(Path(w["ar"]) / "ckpt.pt", root / "looks_like.html")  # a checkpoint under a page's name
    (root / "notes.md").write_text("# notes\n")
    (root / "latin.py").write_bytes("n_layer = 2  # caf\xe9\n".encode("latin-1"))
    (root / "cfgdir").mkdir()
    (root / "nan.json").write_text('{"min_lr": NaN}')
    (root / "inf.json").write_text('{"temperature": Infinity, "noise": 1}')
    (root / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    hf = root / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": "32", "n_layer": 1, "n_head": 2,
                                                "n_positions": 16, "vocab_size": 65}))
    return {**runs, "hf": str(hf)}


def cases(w: dict[str, str], T: list[str], Case: type) -> list[Any]:
    c, root, data = Case, w["root"], w["data"]
    new = f"--out_dir={root}/new19"
    S = ["--device=cpu", "--num_samples=1"]
    ar, dm = [f"--out_dir={w['ar']}", *S, "--max_new_tokens=4"], [f"--out_dir={w['dm']}", *S, "--steps=2",
                                                                   "--length=8"]
    resume = ["train", "--init_from=resume", "--max_iters=4"]
    out = [
        # --- datasets checked on open
        *[c(f"train dataset {name}", ["train", *T, new, f"--dataset={name}"], must_say=say)
          for name, say in (("bad_dtype32", "dtype"), ("bad_float32", "dtype"), ("bad_dtype_x", "dtype"),
                            ("bad_vocab_str", "vocab_size"), ("bad_vocab_0", "vocab_size"),
                            ("bad_vocab_small", "vocabulary"), ("bad_vocab_null", "vocab_size"),
                            ("bad_tokenizer", "tokenizer"), ("bad_ids", "vocabulary"))],
        c("eval dataset with ids above vocab", ["eval", f"--out_dir={w['ar']}", "--device=cpu", f"--data_dir={data}",
                                               "--dataset=bad_ids", "--split=train"], must_say="vocabulary"),
        # --- config files, sizes, NaN and inf
        c("train config not UTF-8", ["train", f"{root}/latin.py", *T, new], must_say="UTF-8"),
        c("train config is a folder", ["train", f"{root}/cfgdir", *T, new], must_say="folder"),
        c("train config nested too deep", ["train", f"{root}/deep.json", *T, new], must_say="JSON"),
        c("train NaN in a JSON config", ["train", f"{root}/nan.json", *T, new], must_say="min_lr"),
        c("train n_embd=1048576", ["train", *T, new, "--n_embd=1048576"], must_say="n_embd"),
        c("train n_layer=100000", ["train", *T, new, "--n_layer=100000"], must_say="n_layer"),
        c("train batch_size=10**9", ["train", *T, new, "--batch_size=1000000000"], must_say="batch_size"),
        c("sample num_samples=10**9", ["sample", *dm[:-3], "--num_samples=1000000000"], must_say="num_samples"),
        c("train learning_rate=1e999", ["train", *T, new, "--learning_rate=1e999"], must_say="learning_rate"),
        c("train HF config.json wrong types", ["train", *T, new, f"--init_from={w['hf']}"], must_say="n_embd"),
        c("train prime_bits too few for the vocabulary", ["train", *T, new, "--model_type=diffusion",
                                                          "--objective=prime", "--prime_bits=2", "--prime_base=2"],
          must_say="raise prime_bits"),
        c("train prime_bits on a gpt2 model", ["train", *T, new, "--prime_bits=7"], must_say="prime_bits"),
        c("sample temperature=1e999", ["sample", *dm, "--temperature=1e999"], must_say="temperature"),
        c("sample noise=-1e999", ["sample", *dm, "--noise=-1e999"], must_say="noise"),
        c("sample inf in a JSON config", ["sample", f"{root}/inf.json", *dm], must_say="temperature"),
        c("sample seed above 2**64", ["sample", *ar, f"--seed={2**64 + 1}"], must_say="seed"),
        c("train seed below 0", ["train", *T, new, "--seed=-3"], must_say="seed"),
        c("sample steps as a huge literal", ["sample", *dm, "--steps=" + "[" * 400], must_say="steps"),
        # --- schedules, out_dir, resume past the end
        c("train warmup > decay", ["train", *T, new, "--warmup_iters=500"], must_say="warmup_iters"),
        c("train min_lr > learning_rate", ["train", *T, new, "--min_lr=0.1"], must_say="min_lr"),
        c("train lr_decay_iters=0", ["train", *T, new, "--lr_decay_iters=0"], must_say="lr_decay_iters"),
        c("train out_dir empty", ["train", *T, "--out_dir="], must_say="out_dir"),
        c("sample out_dir empty", ["sample", "--out_dir=", *S], must_say="out_dir"),
        c("resume max_iters below the run", ["train", "--init_from=resume", f"--out_dir={w['ar']}", "--max_iters=1"],
          must_say="max_iters"),
        c("sample steps and max_steps", ["sample", *dm, "--steps=3", "--max_steps=5"], must_say="max_steps"),
        # --- checkpoints against a schema
        c("resume without iter_num", [*resume, f"--out_dir={w['no_iter']}"], must_say="iter_num"),
        c("sample model not a dict", ["sample", f"--out_dir={w['model_list']}", *S], must_say="model"),
        c("sample meta not a dict", ["sample", f"--out_dir={w['meta_str']}", *S], must_say="meta"),
        c("resume iter_num a string", [*resume, f"--out_dir={w['iter_str']}"], must_say="iter_num"),
        c("sample absurd model_args", ["sample", f"--out_dir={w['huge_args']}", *S], must_say="n_embd"),
        c("resume optimizer not a dict", [*resume, f"--out_dir={w['opt_int']}"], must_say="optimizer"),
        # --- outputs never over a checkpoint or a file of another kind
        c("sample output over ckpt.pt", ["sample", *ar, f"--output={w['ar']}/ckpt.pt"], must_say="--output"),
        c("sample output over ckpt.json", ["sample", *ar, f"--output={w['ar']}/ckpt.json"], must_say="--output"),
        c("sample output over notes.md", ["sample", *ar, f"--output={root}/notes.md"], must_say="--output"),
        c("sample trajectory over a checkpoint", ["sample", *dm, f"--trajectory={root}/looks_like.html"],
          must_say="--trajectory"),
        c("eval json over best.pt", ["eval", f"--out_dir={w['ar']}", "--device=cpu", f"--json={w['ar']}/best.pt"],
          must_say="--json"),
        c("judge json over metrics.jsonl", ["judge", f"--judge={w['ar']}", f"--samples={w['samples']}",
                                            f"--json={w['ar']}/metrics.jsonl"], must_say="--json"),
        # --- the rest of the CLI
        c("serve port=99999", ["serve", f"--out_dir={w['dm']}", "--port=99999"], must_say="port"),
        c("prepare over a training run", ["prepare", "text", f"--input={root}/corpus.txt", "--name=gpt2",
                                          f"--data_dir={root}"], must_say="not a dataset"),
        c("prepare input /dev/null", ["prepare", "text", "--input=/dev/null", "--name=x", f"--data_dir={data}"],
          must_say="regular file"),
        c("sample unknown preset", ["sample", "turbo", *ar], must_say="fast"),
        c("sample prompt FILE:/dev/null", ["sample", *ar, "--start=FILE:/dev/null"], must_say="regular file"),
        c("judge samples not UTF-8", ["judge", f"--judge={w['ar']}", f"--samples={w['latin1']}"], must_say="UTF-8"),
        c("sample out_dir name too long", ["sample", "--out_dir=" + "a" * 5000, *S], must_say="too long"),
        # --- ignored settings, warned about once
        c("sample approx_cache without semi_ar_block", ["sample", *dm, "--approx_cache=dual"], expect="warn",
          must_say="--approx_cache"),
        c("sample semi_ar_block > length", ["sample", *dm, "--semi_ar_block=32"], expect="warn",
          must_say="--semi_ar_block"),
        c("sample length with infill", ["sample", f"--out_dir={w['dm']}", *S, "--steps=2", "--infill=ab__",
                                        "--length=12"], expect="warn", must_say="--length"),
    ]
    return out
