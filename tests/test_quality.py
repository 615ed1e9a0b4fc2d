"""`bench quality`, the fair ruler: runs keyed by hash, choices on dev, reports on test, every JSON key."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import _corpus

from nanodlm import bench
from nanodlm.bench import quality
from nanodlm.bench.runs import (
    NOT_HASHED,
    PROTECTED,
    candidates,
    config_hash,
    ensure_dataset,
    route_overrides,
    train_or_reuse,
)
from nanodlm.core.errors import UserError
from nanodlm.data.dataset import prepare
from nanodlm.training.config import TrainConfig, build_config, config_to_dict, read_config_file


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- runs -------------------------------------------------------------------------------------------------------

def _hash(values: dict) -> str:
    return config_hash(build_config(TrainConfig, {**values, "dataset": "shakespeare_char", "out_dir": "-"}))


def test_cpu_preset_searches_dropout_for_ar_and_screens_the_rest() -> None:
    """The budgeted protocol: 6 AR screens (positions x learning rates) whose winner trains with 3 dropouts, 3
    diffusion screens, a judge with dropout at the contestants' budget; the old 5,000-iteration runs keep their hash
    arithmetic (a run is found again while its config is unchanged)."""
    p = quality.PRESETS["cpu"]
    m = p["model"]
    assert m["max_iters"] == m["lr_decay_iters"] == 2000 and p["screen_iters"] < m["max_iters"]
    s = p["search"]
    assert len(candidates(s["ar"]["screen"])) == 6 and len(candidates(s["ar"]["final"])) == 3
    assert {c["dropout"] for c in candidates(s["ar"]["final"])} >= {0.0, 0.1}
    assert len(candidates(s["diffusion"]["screen"])) == 3 and candidates(s["judge"]["screen"]) == [{}]
    file, extra = p["judge"]
    judge = {**{k: v for k, v in read_config_file(file).items() if k not in PROTECTED}, **extra}
    assert judge["dropout"] > 0 and judge["max_iters"] == m["max_iters"]
    assert _hash({**m, "model_type": "gpt2", "max_iters": 5000, "lr_decay_iters": 5000}) == "5db8f2be"
    assert set(quality.FIXED_A_PRIORI) >= {"judge", "copy_weight", "block_clipping", "knob_grids"}
    assert candidates({}) == [{}]


def test_run_hash_ignores_location_and_display_but_not_the_model() -> None:
    cfg = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "progress": True})
    assert config_hash(cfg) == config_hash(build_config(TrainConfig, {"n_layer": 2, "out_dir": "b", "progress": False}))
    assert config_hash(cfg) != config_hash(build_config(TrainConfig, {"n_layer": 3, "out_dir": "a"}))


def test_attn_dropout_changes_the_run_hash_only_when_it_changes_training() -> None:
    def run_hash(**kw) -> str:
        return config_hash(build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", **kw}))

    assert run_hash(dropout=0.0, attn_dropout=0.0) == run_hash(dropout=0.0)  # no dropout either way: reused
    assert run_hash(dropout=0.1, attn_dropout=0.1) == run_hash(dropout=0.1)
    assert run_hash(dropout=0.1, attn_dropout=0.0) != run_hash(dropout=0.1)


def test_run_hash_of_older_runs_survives_new_keys() -> None:
    """Runs hashed before diffusion_block and mdlm_t_max existed keep their folder (and are reused) while
    those keys sit at their defaults."""
    cfg = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "model_type": "diffusion"})
    late = ("diffusion_block", "mdlm_t_max", "shift", "attn_anneal_iters", "draft_len", "tidar_alpha", "attn_dropout",
            "fim_rate", "fim_spm_rate", "input_mask_rate", "prime_bits", "prime_base", "prime_shuffle",
            "prime_embed")
    values = {k: v for k, v in config_to_dict(cfg).items() if k not in NOT_HASHED and k not in late}
    old = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
    assert config_hash(cfg) == old
    block = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "model_type": "diffusion", "diffusion_block": 8})
    clipped = build_config(TrainConfig, {"n_layer": 2, "out_dir": "a", "model_type": "diffusion", "mdlm_t_max": 0.9})
    assert config_hash(block) != old and config_hash(clipped) != old
    ar = {"n_layer": 2, "out_dir": "a", "model_type": "gpt2"}
    assert config_hash(build_config(TrainConfig, ar)) == config_hash(
        build_config(TrainConfig, {**ar, "objective": "seed", "copy_weight": 0.0}))  # keys a gpt2 run never reads


def test_a_run_trained_with_pos_emb_auto_is_reused_as_learned(tmp_path: Path) -> None:
    values = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "max_iters": 3, "model_type": "gpt2"}
    old = tmp_path / "runs" / f"ar-{_hash_at(values, tmp_path)}"  # trained before the search named positions
    old.mkdir(parents=True)
    (old / "ckpt.pt").write_bytes(b"")
    (old / "ckpt.json").write_text(json.dumps({"iter_num": 3}))
    run = train_or_reuse("ar", {**values, "pos_emb": "learned"}, tmp_path, tmp_path / "data", "tiny", "cpu", False)
    assert run["reused"] and run["out_dir"] == str(old)


def _hash_at(values: dict, work: Path) -> str:
    return config_hash(build_config(TrainConfig, {**values, "dataset": "tiny", "data_dir": str(work / "data"),
                                                  "out_dir": "-"}))


def test_unprepared_dataset_names_the_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nanodlm prepare text --input=FILE --name=novel --data_dir="):
        ensure_dataset(tmp_path / "data", "novel")
    with pytest.raises(UserError, match=r"nanodlm prepare shakespeare --data_dir="):
        ensure_dataset(tmp_path / "data", "shakespeare")


def test_overrides_route_to_the_right_model() -> None:
    routed = route_overrides({"n_layer": "2", "ar.n_embd": "64", "judge.max_iters": "10"}, ["preset"])
    assert routed == {"diffusion": {"n_layer": "2"}, "ar": {"n_embd": "64"}, "judge": {"max_iters": "10"}}
    with pytest.raises(UserError, match="num_sample"):
        route_overrides({"num_sample": "3"}, ["num_samples"])
    with pytest.raises(UserError, match="fixed by the protocol"):
        route_overrides({"ar.out_dir": "x"}, [])


# --- the protocol end to end --------------------------------------------------------------------------------------

@pytest.mark.slow  # trains and judges several models
def test_smoke_on_any_prepared_text_writes_every_key_chooses_on_dev_reports_on_test(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "work"
    src = tmp_path / "novel.txt"
    src.write_text(_corpus()[:30_000], encoding="utf-8")
    prepare("text", input_path=str(src), data_dir=str(work / "data"), out_name="novel")

    # every window the protocol evaluates on, and which half of val it came from
    seen: list[np.ndarray] = []
    real_windows = quality.eval_windows

    def spy(data, block_size, n):
        seen.append(data)
        return real_windows(data, block_size, n)

    # a fake AR loss that prefers one position encoding, so the choice is known in advance
    real_ce = quality.ar_cross_entropy
    prefer = {"pos": "rope"}

    def fake_ce(model, windows, batch_size):
        out = real_ce(model, windows, batch_size)
        return {**out, "loss": 1.0 if model.config.pos_emb == prefer["pos"] else 2.0}

    parts: dict[str, np.ndarray] = {}
    real_split = quality.dev_test

    def split_spy(val):
        parts.update(real_split(val))
        return parts

    monkeypatch.setattr(quality, "dev_test", split_spy)
    monkeypatch.setattr(quality, "eval_windows", spy)
    monkeypatch.setattr(quality, "ar_cross_entropy", fake_ce)
    out = tmp_path / "q.json"
    argv = ["quality", "--preset=smoke", "--dataset=novel", f"--json={out}", f"--work_dir={work}", "--device=cpu",
            "--progress=false"]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())
    assert "plumbing check" in capsys.readouterr().out  # smoke numbers are not results, and it says so

    p = r["protocol"]
    assert p["selection_split"].startswith("dev") and p["report_split"].startswith("test")
    assert set(p["seeds"]["selection"]).isdisjoint(p["seeds"]["report"]) and len(p["seeds"]["report"]) >= 3
    assert p["threads"] == {"training": 1, "sampling": 1}  # one lane: sampling takes that lane's one core
    assert _finite(r["real"]["judge_ppl"]) and _finite(r["real"]["entropy_bits"])
    for side, main_key in (("ar", "val_loss"), ("diffusion", "nelbo")):
        s = r[side]
        for key in (main_key, "judge_ppl", "judge_ppl_se", "entropy_bits", "entropy_bits_se", "steps", "chars_per_s"):
            assert _finite(s[key]), (side, key, s.get(key))
        assert "ppl_at_real_entropy" in s  # a number, or null when real entropy is outside the swept range
        assert s["ppl_at_real_entropy"] is None or _finite(s["ppl_at_real_entropy"])
        assert {"train", "sampling"} <= set(s["config"]) and s["config"]["train"]["learning_rate"] > 0
        assert len(s["frontier"]["dev"]) == len(s["frontier"]["test"]) >= 3
    assert r["diffusion"]["config"]["sampling"]["steps"] == r["diffusion"]["steps"] == quality.PRESETS["smoke"]["steps"]

    # the choice follows the dev number; reports use the other half
    assert r["ar"]["selection"]["chosen"] == {"pos_emb": "rope"} and r["ar"]["config"]["train"]["pos_emb"] == "rope"
    dev_losses = [c["dev_loss"] for c in r["diffusion"]["selection"]["candidates"]]
    chosen_lr = r["diffusion"]["config"]["train"]["learning_rate"]
    assert chosen_lr == r["diffusion"]["selection"]["candidates"][int(np.argmin(dev_losses))]["learning_rate"]
    val = np.memmap(work / "data" / "novel" / "val.bin", dtype=np.uint16, mode="r")
    half = len(val) // 2
    assert p["split_tokens"] == {"dev": [0, half], "test": [half, len(val)]}
    assert len(parts["dev"]) == half and np.array_equal(parts["test"], val[half:])
    dev = [a for a in seen if np.shares_memory(a, parts["dev"])]
    test = [a for a in seen if np.shares_memory(a, parts["test"])]
    assert dev and test and len(dev) + len(test) == len(seen)  # every evaluation on exactly one half
    assert not any(np.shares_memory(a, parts["test"]) for a in dev)

    # the other preference flips the choice; every model is reused
    prefer["pos"] = "learned"
    assert bench.main(argv) == 0
    r2 = json.loads(out.read_text())
    assert r2["ar"]["selection"]["chosen"] == {"pos_emb": "learned"}
    assert all(p2["reused"] for p2 in (r2["protocol"][m] for m in ("ar", "diffusion", "judge")))
    assert Path(out.with_suffix(".png")).read_bytes()[:4] == b"\x89PNG"


def test_the_run_choice_reads_the_split_each_loss_was_measured_on(capsys: pytest.CaptureFixture) -> None:
    runs = {"ar": [{"search": {"lr": 1}, "out_dir": "a"}, {"search": {"lr": 2}, "out_dir": "b"}]}
    losses = {"a": 2.0, "b": 1.0}
    chosen = quality.choose_runs(runs, lambda run: {"loss": losses[run["out_dir"]], "stderr": 0.0, "split": "dev"})
    assert chosen["ar"]["out_dir"] == "b"
    with pytest.raises(UserError, match="chooses on dev only"):  # a dev_loss that measured on test
        quality.choose_runs(runs, lambda run: {"loss": losses[run["out_dir"]], "stderr": 0.0, "split": "test"})


@pytest.mark.parametrize("flags, message", [
    (["--selection_seeds=1,2", "--report_seeds=2,3,4"], "cannot both choose and report"),
    (["--report_seeds=5,6"], "at least 3 seeds"),
    (["--sampler=ancestral"], "does not take --prior_weight"),
    (["--knob=top_k"], "--knob must be one of"),
    (["--sampling_threads=-1"], "must be >= 0"),
    (["--diffusion_learning_rate=fast"], "comma-separated list of float"),
])
def test_bad_protocol_settings_fail_before_any_training(tmp_path: Path, flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        quality.bench_quality(["--preset=smoke", f"--work_dir={tmp_path}", "--device=cpu", *flags])
    assert not (tmp_path / "runs").exists()


def test_an_external_diffusion_run_is_read_from_its_checkpoint(tiny_runs: dict[str, str], tmp_path: Path) -> None:
    run = quality.external_run(tiny_runs["diffusion"])
    assert run["cfg"].model_type == "diffusion" and run["cfg"].objective == "mdlm" and run["reused"]
    with pytest.raises(UserError, match="is a gpt2 run"):
        quality.external_run(tiny_runs["gpt2"])
    with pytest.raises(UserError, match="no finished run there"):
        quality.external_run(str(tmp_path))


@pytest.mark.slow  # trains the smoke runs
def test_train_only_trains_every_side_and_samples_nothing(tmp_path: Path) -> None:
    chosen = quality.bench_quality(["--preset=smoke", f"--work_dir={tmp_path}", "--device=cpu", "--progress=false",
                                    "--train_only=true", "--screen_iters=5", "--lanes=1"])
    assert set(chosen) == {"ar", "diffusion", "judge"}
    assert all((Path(d) / "ckpt.pt").is_file() for d in chosen.values())
    assert not list(tmp_path.glob("*.json"))  # no protocol result
