"""GPT-2 BPE end to end on a slice of Shakespeare: prepare -> train (AR judge, diffusion, adapted) -> sample
(prefix, BPE infill) -> eval -> judge. Needs tiktoken's gpt2 files (TIKTOKEN_CACHE_DIR offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, _corpus

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.data.dataset import prepare
from nanodlm.data.tokenizers import GPT2Tokenizer
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.train import train


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    try:
        GPT2Tokenizer()
    except UserError as e:
        pytest.skip(f"GPT-2 BPE files unavailable offline: {e}")
    root = tmp_path_factory.mktemp("bpe")
    src = root / "slice.txt"
    src.write_text(_corpus()[:20_000], encoding="utf-8")
    meta = prepare("text", input_path=str(src), data_dir=str(root), out_name="bpe", tokenizer="gpt2")
    assert meta["vocab_size"] == 50257 and meta["dtype"] == "uint16"
    return str(root)


def values(data_dir: str, out: Path, **kw) -> dict:
    return {**TINY, "dataset": "bpe", "data_dir": data_dir, "out_dir": str(out), "block_size": 32, "max_iters": 3,
            "eval_interval": 3, **kw}


def test_bpe_diffusion_end_to_end(tmp_path: Path, bpe_data: str, capsys) -> None:
    judge, dm, adapted = tmp_path / "judge", tmp_path / "diffusion", tmp_path / "adapted"
    train(build_config(TrainConfig, values(bpe_data, judge, model_type="gpt2", pos_emb="learned")))
    train(build_config(TrainConfig, values(bpe_data, dm, model_type="diffusion", objective="repair")))
    train(build_config(TrainConfig, values(bpe_data, adapted, model_type="diffusion", init_from=str(judge),
                                           attn_anneal_iters=2, objective="mdlm")))
    for out in (dm, adapted):
        args = json.loads((out / "ckpt.json").read_text())["model_args"]
        assert args["vocab_size"] == 50258 and args["mask_token_id"] == 50257
        capsys.readouterr()
        assert main(["sample", f"--out_dir={out}", "--ckpt=last", "--device=cpu", "--num_samples=2", "--length=20",
                     "--steps=4", "--start=ROMEO:"]) == 0
        samples = capsys.readouterr().out.split("---------------\n")[:2]
        assert all(s.startswith("ROMEO:") for s in samples)
        # infill: each run of N placeholders is N BPE tokens; the given text stays
        assert main(["sample", f"--out_dir={out}", "--ckpt=last", "--device=cpu", "--num_samples=1", "--steps=4",
                     "--infill=To be, or ___ to be: that is the ____"]) == 0
        text = capsys.readouterr().out.split("---------------\n")[0]
        assert text.startswith("To be, or ") and " to be: that is the" in text and "█" not in text
        assert main(["eval", f"--out_dir={out}", "--ckpt=last", "--device=cpu", "--num_batches=1"]) == 0
        assert "nelbo" in capsys.readouterr().out
        report = tmp_path / f"judge-{out.name}.json"
        assert main(["judge", f"--judge={judge}", f"--out_dir={out}", "--ckpt=last", "--device=cpu",
                     "--num_samples=2", "--length=16", f"--json={report}"]) == 0
        assert json.loads(report.read_text())
