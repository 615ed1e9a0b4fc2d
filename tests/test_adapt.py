"""AR -> diffusion adaptation: the shifted head, attention annealing, weight surgery, train / resume / sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.evaluation.evaluate import diffusion_nelbo
from nanodlm.model.attention import annealed_attention
from nanodlm.model.model import GPT, GPTConfig
from nanodlm.runs.checkpoint import load_checkpoint, load_model
from nanodlm.sampling.blockwise import generate_blocks
from nanodlm.training.adapt import init_from_source
from nanodlm.training.config import TrainConfig, build_config
from nanodlm.training.step import anneal_ratio, annealed
from nanodlm.training.train import load_train_config, train

V = 20  # data vocabulary; [MASK] = V


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def diffusion_gpt(shift: bool, block: int = 0, seed: int = 0, pos_emb: str = "learned") -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=V + 1, n_layer=2, n_head=2, n_embd=16, model_type="diffusion",
                         pos_emb=pos_emb, diffusion_block=block, shift=shift, bias=True)).eval()


# --- the shifted parameterisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_shifted_logits_are_the_unshifted_ones_moved_by_one(pos_emb):
    plain, shifted = diffusion_gpt(False, pos_emb=pos_emb), diffusion_gpt(True, pos_emb=pos_emb)
    shifted.load_state_dict(plain.state_dict())
    x = torch.randint(0, V + 1, (3, 16), generator=gen(1))
    a, b = plain(x)[0], shifted(x)[0]
    torch.testing.assert_close(b[:, 1:], a[:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(b[:, 0], a[:, 0], rtol=0, atol=0)  # position 0 reads its own state


class MovedByOne(torch.nn.Module):
    """An unshifted model whose logits are the given model's logits moved by one position: the known answer."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx, *args, **kwargs):
        logits, _ = self.model(idx, *args, **kwargs)
        return torch.cat((logits[:, :1], logits[:, :-1]), dim=1), None


def test_shifted_nelbo_equals_the_unshifted_models():
    plain, shifted = diffusion_gpt(False, seed=4), diffusion_gpt(True)
    shifted.load_state_dict(plain.state_dict())
    windows = torch.randint(0, V, (6, 17), generator=gen(2))
    got = diffusion_nelbo(shifted, windows, 3, gen(5))
    want = diffusion_nelbo(MovedByOne(plain), windows, 3, gen(5))
    assert got["nelbo"] == pytest.approx(want["nelbo"], rel=1e-6)
    assert got["nelbo"] != pytest.approx(diffusion_nelbo(plain, windows, 3, gen(5))["nelbo"], rel=1e-3)


def test_shifted_block_model_reads_the_clean_state_at_block_starts():
    model = diffusion_gpt(True, block=4, seed=3)
    x = torch.randint(0, V, (2, 16), generator=gen(6))
    noisy = x.clone()
    noisy[:, 8:12] = V  # block 2 masked; blocks 0 and 1 clean: training (with clean) sees what sampling sees
    train_logits, _ = model(noisy, clean=x)
    sample_logits, _ = model(noisy[:, :12])
    torch.testing.assert_close(train_logits[:, 8:12], sample_logits[:, 8:12], rtol=1e-5, atol=1e-5)
    cache = model.new_kv_cache(2, torch.device("cpu"), torch.float32)
    for pos in (0, 4):
        model.decode(x[:, pos:pos + 4], cache)
    cached = model.decode(noisy[:, 8:12], cache, keep=False)
    torch.testing.assert_close(cached, sample_logits[:, 8:12], rtol=1e-5, atol=1e-5)


def test_shifted_block_sampling_cached_equals_uncached():
    model = diffusion_gpt(True, block=4, seed=8)
    canvas = torch.full((2, 14), V)
    canvas[:, :2] = torch.tensor([1, 2])
    runs = [generate_blocks(model, canvas, block=4, sampler="confidence", mask_token_id=V, steps=8, temperature=0.0,
                            generator=gen(), use_cache=use)[0] for use in (True, False)]
    assert torch.equal(runs[0], runs[1]) and (runs[0] != V).all()


def test_shift_needs_diffusion():
    with pytest.raises(ValueError, match="shift"):
        GPTConfig(model_type="gpt2", shift=True)
    with pytest.raises(UserError, match="attn_anneal_iters"):
        build_config(TrainConfig, {"attn_anneal_iters": 10})


# --- attention annealing --------------------------------------------------------------------------------------

def test_anneal_schedule_is_causal_at_zero_and_full_after():
    assert anneal_ratio(0, 100) == 0.0 and anneal_ratio(50, 100) == 0.5
    assert anneal_ratio(100, 100) == 1.0 and anneal_ratio(5000, 100) == 1.0 and anneal_ratio(0, 0) == 1.0
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    assert torch.equal(annealed_attention(16, 0.0, gen(), torch.device("cpu")), causal)
    assert annealed_attention(16, 1.0, gen(), torch.device("cpu")).all()
    half = annealed_attention(64, 0.5, gen(), torch.device("cpu"))
    assert (half | ~causal.new_ones(64, 64).tril()).all() and 0.4 < half.triu(1).sum() / (64 * 63 / 2) < 0.6


def test_annealed_model_at_iteration_zero_is_causal():
    model = diffusion_gpt(False, seed=2)
    step_model = annealed(model, model.config, anneal_ratio(0, 10), gen())
    x = torch.randint(0, V, (2, 16), generator=gen(3))
    y = x.clone()
    y[:, 9:] = torch.randint(0, V, (2, 7), generator=gen(4))
    a, b = step_model(x)[0], step_model(y)[0]
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=0)  # no position sees the future
    assert not torch.allclose(model(x)[0][:, :9], model(y)[0][:, :9])  # the model itself is bidirectional


# --- adaptation end to end ------------------------------------------------------------------------------------

@pytest.fixture
def ar_run(tmp_path: Path, tiny_values) -> Path:
    out = tmp_path / "ar"
    train(build_config(TrainConfig, tiny_values(out, model_type="gpt2", bias=True, max_iters=4, eval_interval=4)))
    return out


def adapt_values(tiny_values, out: Path, source, **kw) -> dict:
    base = dict(model_type="diffusion", objective="mdlm", init_from=str(source), attn_anneal_iters=4, eval_interval=3)
    return tiny_values(out, **{**base, **kw})


def assert_starts_as_the_ar_model(ar_logits_fn, adapted: GPT, x: torch.Tensor) -> None:
    """Under a causal mask the adapted model's shifted logits at i are the AR model's next-token logits at i-1."""
    causal = annealed(adapted, adapted.config, 0.0, gen())
    got = causal(x)[0]  # (B, T, V + 1)
    want = ar_logits_fn(x)  # (B, T, V)
    torch.testing.assert_close(got[:, 1:, :-1], want[:, :-1], rtol=1e-5, atol=1e-5)


def test_adapt_from_ar_out_dir_resumes_exactly_and_samples(tmp_path: Path, ar_run: Path, tiny_values, tiny_argv,
                                                           capsys) -> None:
    ar, ar_meta, _ = load_model(ar_run, "last")
    vocab = ar.config.vocab_size
    values = adapt_values(tiny_values, tmp_path, ar_run, pos_emb="learned")  # learned only: starts as the AR model
    args, state, note = init_from_source(build_config(TrainConfig, values), vocab)
    assert "adapting" in note
    assert (args["shift"], args["vocab_size"], args["mask_token_id"], args["pos_emb"]) == (True, vocab + 1, vocab,
                                                                                          "learned")
    adapted = GPT(GPTConfig(**args))
    adapted.load_state_dict(state)
    adapted.eval()
    x = torch.randint(0, vocab, (2, 16), generator=gen(7))
    assert_starts_as_the_ar_model(lambda t: ar(t, all_logits=True)[0], adapted, x)
    mask_row = adapted.transformer.wte.weight[vocab]
    torch.testing.assert_close(mask_row, ar.transformer.wte.weight[:vocab].mean(0))

    a, b = tmp_path / "a", tmp_path / "b"
    train(build_config(TrainConfig, adapt_values(tiny_values, a, ar_run, max_iters=6)))
    train(build_config(TrainConfig, adapt_values(tiny_values, b, ar_run, max_iters=3)))
    argv = [f"--out_dir={b}", "--init_from=resume", "--max_iters=6"]
    assert train(load_train_config(argv))["iter_num"] == 6
    ca, cb = load_checkpoint(a / "ckpt.pt"), load_checkpoint(b / "ckpt.pt")
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    assert cb["meta"]["model_args"]["shift"] is True
    capsys.readouterr()
    assert main(["sample", f"--out_dir={a}", "--ckpt=last", "--device=cpu", "--num_samples=2", "--length=14",
                 "--steps=4", "--start=ab"]) == 0
    samples = capsys.readouterr().out.split("---------------\n")[:2]
    assert all(s.startswith("ab") and len(s) == 15 for s in samples)
    assert main(["eval", f"--out_dir={a}", "--ckpt=last", "--device=cpu", "--num_batches=1"]) == 0
    assert "nelbo" in capsys.readouterr().out


def test_adapt_to_block_diffusion(tmp_path: Path, ar_run: Path, tiny_values, capsys) -> None:
    out = tmp_path / "block"
    train(build_config(TrainConfig, adapt_values(tiny_values, out, ar_run, max_iters=3, diffusion_block=4,
                                                 objective="repair")))
    args = load_checkpoint(out / "ckpt.pt")["meta"]["model_args"]
    assert args["diffusion_block"] == 4 and args["shift"] is True
    assert main(["sample", f"--out_dir={out}", "--ckpt=last", "--device=cpu", "--num_samples=1", "--length=12",
                 "--steps=6", "--start=ab"]) == 0


def test_adapt_unshifted_and_crop(tmp_path: Path, ar_run: Path, tiny_values) -> None:
    cfg = build_config(TrainConfig, adapt_values(tiny_values, tmp_path, ar_run, shift=False, block_size=8))
    args, state, _ = init_from_source(cfg, load_checkpoint(ar_run / "ckpt.pt")["meta"]["model_args"]["vocab_size"])
    assert args["shift"] is False and args["block_size"] == 8 and state["transformer.wpe.weight"].shape[0] == 8


def test_adapted_learned_position_model_gets_rope_so_full_attention_knows_order(tmp_path: Path, ar_run: Path,
                                                                               tiny_values) -> None:
    """Regression: with learned positions alone full attention could not tell which key is the neighbour (the AR
    model read order from its causal mask) and adaptation fell to a bigram predictor. By default the adapted model
    gets rotary attention on top: with the learned table zeroed, it still tells "ab..." from "ba..." at every key."""
    cfg = build_config(TrainConfig, adapt_values(tiny_values, tmp_path, ar_run))
    args, state, _ = init_from_source(cfg, load_checkpoint(ar_run / "ckpt.pt")["meta"]["model_args"]["vocab_size"])
    assert args["pos_emb"] == "learned_rope" and "transformer.wpe.weight" in state
    model = GPT(GPTConfig(**args))
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        x = torch.randint(0, args["vocab_size"] - 1, (1, 8), generator=gen(3))
        flipped = x.flip(1)
        a, b = model(x)[0], model(flipped)[0].flip(1)
    # shifted logits: a[i] reads state i-1 of x, b[i] state i+1; a trunk blind to order would give b[i] == a[i + 2]
    assert not torch.allclose(b[:, :-2], a[:, 2:], atol=1e-4)


def test_adapt_errors(tmp_path: Path, ar_run: Path, tiny_values) -> None:
    with pytest.raises(UserError, match="block_size 32 exceeds"):
        train(build_config(TrainConfig, adapt_values(tiny_values, tmp_path / "x", ar_run, block_size=32)))
    with pytest.raises(UserError, match="init_from=.*nothing.*must be"):
        train(build_config(TrainConfig, adapt_values(tiny_values, tmp_path / "z", tmp_path / "nothing")))
    diff = tmp_path / "diff"
    train(build_config(TrainConfig, tiny_values(diff, model_type="diffusion", max_iters=1, eval_interval=1)))
    with pytest.raises(UserError, match="autoregressive"):
        train(build_config(TrainConfig, adapt_values(tiny_values, tmp_path / "y", diff)))


def test_adapt_from_hf_dir(tmp_path: Path, tiny_values, data_dir) -> None:
    transformers = pytest.importorskip("transformers")
    from test_pretrained import save_tiny_hf_gpt2

    from nanodlm.data.dataset import load_meta

    vocab = int(load_meta(data_dir, "tiny")["vocab_size"])
    hf_dir = tmp_path / "hf"
    save_tiny_hf_gpt2(hf_dir, vocab_size=vocab, n_positions=32)
    values = adapt_values(tiny_values, tmp_path, hf_dir, pos_emb="learned")  # learned only: starts as GPT-2
    args, state, _ = init_from_source(build_config(TrainConfig, values), vocab)
    assert args["activation"] == "gelu_tanh"
    adapted = GPT(GPTConfig(**args))
    adapted.load_state_dict(state)
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).float().eval()
    x = torch.randint(0, vocab, (2, 16), generator=gen(9))
    with torch.no_grad():
        assert_starts_as_the_ar_model(lambda t: hf(t).logits, adapted.eval(), x)
    train(build_config(TrainConfig, adapt_values(tiny_values, tmp_path / "trained", hf_dir, max_iters=3)))


def test_cpu_presets_train_the_protocol_ar_then_adapt_it() -> None:
    from nanodlm.bench.runs import config_hash
    from nanodlm.training.config import load_config

    ar, adapt = load_config(TrainConfig, ["cpu_ar"]), load_config(TrainConfig, ["cpu_adapt"])
    assert config_hash(ar) == "5db8f2be"  # the quality protocol's AR run (bench quality --preset=cpu)
    assert adapt.init_from == ar.out_dir and adapt.model_type == "diffusion" and adapt.attn_anneal_iters > 0
    for key in ("dataset", "block_size", "batch_size", "beta2"):
        assert getattr(adapt, key) == getattr(ar, key), key
    gpu = load_config(TrainConfig, ["gpt2_adapt_diffusion"])
    assert gpu.init_from == "gpt2" and gpu.block_size == 1024
    assert gpu.batch_size * gpu.gradient_accumulation_steps == 512



def test_shifted_bidirectional_decode_reads_the_state_before_the_span():
    # a prefix cache refreshed on the same canvas is exact: decoding canvas[:, s:] equals the full pass there,
    # the first position reading the state at s - 1 that the refresh stored
    model = diffusion_gpt(True, seed=5, pos_emb="rope")
    x = torch.randint(0, V + 1, (2, 16), generator=gen(3))
    full, _ = model(x)
    cache = model.new_kv_cache(2, torch.device("cpu"), torch.float32)
    model.decode(x, cache, keep=False)
    cache.advance(8)
    part = model.decode(x[:, 8:], cache, keep=False)
    torch.testing.assert_close(part, full[:, 8:], rtol=1e-5, atol=1e-5)
