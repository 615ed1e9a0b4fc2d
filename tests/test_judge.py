"""nanodlm judge: hand-computed perplexities and statistics, sample files, reference text, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nanodlm.cli import main as cli_main
from nanodlm.core.errors import UserError
from nanodlm.data.dataset import load_meta, open_split
from nanodlm.data.tokenizers import CharTokenizer, load_tokenizer
from nanodlm.evaluation.judge import load_samples, reference_texts, score_texts

# a bigram judge over {a, b}: after "a" P(a) = 0.75, P(b) = 0.25; after "b" both 0.5
P_NEXT = torch.tensor([[0.75, 0.25], [0.5, 0.5]])


class BigramJudge(torch.nn.Module):
    def __init__(self, block_size: int = 4) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(block_size=block_size, model_type="gpt2")

    def forward(self, idx, targets=None, *, all_logits=False, kv_cache=None):
        return P_NEXT.log()[idx], None  # (B, T, 2)


TOK = CharTokenizer(["a", "b"])


def test_judge_perplexity_hand_computed() -> None:
    # "aab": a->a 0.75, a->b 0.25; "ba": b->a 0.5; "abaabb" (longer than the 4-token window, so it slides)
    texts = ["aab", "ba", "abaabb"]
    nll = -(math.log(0.75) + math.log(0.25) + math.log(0.5)
            + math.log(0.25) + math.log(0.5) + math.log(0.75) + math.log(0.25) + math.log(0.5))
    out = score_texts(BigramJudge(), TOK, texts)
    assert out["tokens"] == 8
    assert out["judge_nll"] == pytest.approx(nll / 8, rel=1e-6)  # token-weighted, not a mean of text means
    assert out["judge_ppl"] == pytest.approx(math.exp(nll / 8), rel=1e-6)


def test_surface_statistics_hand_checked() -> None:
    out = score_texts(BigramJudge(), TOK, ["aaaa", "abab"])
    # concatenation "aaaaabab": 6 a, 2 b
    assert out["entropy_bits"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert out["distinct_2"] == pytest.approx((1 / 3 + 2 / 3) / 2)  # {aa} of 3; {ab, ba} of 3
    assert out["distinct_4"] == pytest.approx(1.0)  # each text has one 4-gram
    assert out["longest_repeat"] == pytest.approx((3 + 2) / 2)  # "aaa" (overlapping), "ab"
    assert out["num_texts"] == 2 and out["chars"] == 8


def test_unknown_characters_are_named() -> None:
    with pytest.raises(UserError, match=r"'z'.*'█'|'█'.*'z'") as e:
        score_texts(BigramJudge(), TOK, ["ab", "abz", "a█"])
    assert "[MASK]" in str(e.value)


def test_load_samples_both_formats(tmp_path: Path) -> None:
    texts = ["first\nsample", "second", "with \"quotes\" and ---"]
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    assert load_samples(jsonl) == texts
    plain = tmp_path / "s.txt"
    plain.write_text("".join(f"{t}\n---------------\n" for t in texts), encoding="utf-8")  # nanoGPT's print()s
    assert load_samples(plain) == texts
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"text": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2"):
        load_samples(bad)
    with pytest.raises(UserError, match="not found"):
        load_samples(tmp_path / "missing.txt")


def test_reference_texts_deterministic_and_real(data_dir: str) -> None:
    tok = load_tokenizer(load_meta(data_dir, "tiny"))
    val = tok.decode(open_split(data_dir, "tiny", "val"))
    first = reference_texts(data_dir, "tiny", tok, num=5, length_chars=40, seed=3)
    assert first == reference_texts(data_dir, "tiny", tok, num=5, length_chars=40, seed=3)
    assert first != reference_texts(data_dir, "tiny", tok, num=5, length_chars=40, seed=4)
    assert len(first) == 5 and all(len(t) == 40 and t in val for t in first)
    with pytest.raises(UserError, match="too few"):
        reference_texts(data_dir, "tiny", tok, num=1, length_chars=10**7, seed=0)


# --- end to end --------------------------------------------------------------------------------------


def check_rows(path: Path, num: int) -> dict:
    data = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    for row in ("real", "samples"):
        for key in ("judge_ppl", "judge_nll", "entropy_bits", "distinct_2", "distinct_4", "longest_repeat"):
            assert isinstance(data[row][key], float), (row, key)
        assert data[row]["num_texts"] == num
        assert data[row]["judge_ppl"] == pytest.approx(math.exp(data[row]["judge_nll"]))
    return data


def test_cli_judge_samples_file(tiny_runs: dict[str, str], data_dir: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    tok = load_tokenizer(load_meta(data_dir, "tiny"))
    texts = reference_texts(data_dir, "tiny", tok, num=3, length_chars=50, seed=0, split="train")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "judge.json"
    argv = ["judge", f"--judge={tiny_runs['gpt2']}", f"--samples={samples}", "--device=cpu", f"--json={out}"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "judge PPL" in printed and "entropy" in printed
    data = check_rows(out, 3)
    assert data["real"]["chars"] == data["samples"]["chars"] == 150  # reference row matches the samples' size


def test_cli_judge_generates_from_diffusion(tiny_runs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "judge.json"
    argv = ["judge", f"--judge={tiny_runs['gpt2']}", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu",
            "--num_samples=2", "--length=16", "--steps=4", "--sampler=seed", f"--json={out}"]
    assert cli_main(argv) == 0
    data = check_rows(out, 2)
    assert data["samples"]["chars"] == 32  # 16 char tokens each, nothing left masked
    gen = data["generation"]
    assert gen["model_type"] == "diffusion" and gen["sampler"] == "seed" and gen["chars_per_s"] > 0


def test_cli_judge_errors(tiny_runs: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["judge", f"--judge={tiny_runs['gpt2']}", "--device=cpu"]) == 1  # neither source
    assert "exactly one of" in capsys.readouterr().err
    argv = ["judge", f"--judge={tiny_runs['diffusion']}", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu"]
    assert cli_main(argv) == 1
    assert "autoregressive" in capsys.readouterr().err
    assert cli_main(["judge", "--judge=no-such-dir", "--samples=x.txt", "--device=cpu"]) == 1
    assert "--judge" in capsys.readouterr().err


def test_generate_texts_gpt2_drops_prompt(tiny_runs: dict[str, str]) -> None:
    from nanodlm.evaluation.judge import generate_texts
    from nanodlm.sampling.generate import SamplerOptions

    kwargs = dict(options=SamplerOptions(steps=1), num_samples=2, length=20, seed=5, device="cpu")
    texts, info = generate_texts(tiny_runs["gpt2"], **kwargs)
    assert [len(t) for t in texts] == [20, 20]  # length new characters, the "\n" prompt not included
    assert info["sampler"] == "ar" and info["steps"] == 20 and info["model_type"] == "gpt2"
    assert generate_texts(tiny_runs["gpt2"], **kwargs)[0] == texts  # seeded
