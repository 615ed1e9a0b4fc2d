"""nanodlm eval: the likelihoods against sources of known entropy, determinism, the CLI.

Fake models return log-probabilities we control, so the expected numbers are known in closed form:
- i.i.d. source p: a model that outputs log p everywhere has AR CE = diffusion NELBO = H(p) in expectation.
- first-order Markov chain: the true conditional gives the entropy rate (AR); the exact posterior
  p(x_i | visible tokens) (forward-backward) makes the masked-diffusion NELBO equal -log p(x) / T in
  expectation (the bound is tight for the true denoiser: an average over orders of exact AR factorisations,
  Shi et al. 2024 / Ou et al. 2024); a marginal-only model gives H(pi) >= the entropy rate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nanodlm.cli import main as cli_main
from nanodlm.evaluation.evaluate import EvalConfig, ar_cross_entropy, diffusion_nelbo, eval_windows, evaluate_checkpoint
from nanodlm.evaluation.evaluate import main as eval_main

T = 32  # block size of the fake models

# i.i.d. source: H = 1.75 bits
P_IID = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
H_IID = -(P_IID * P_IID.log()).sum().item()
# sticky 3-state chain: uniform stationary distribution, entropy rate far below H(pi) = ln 3
P_MC = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]], dtype=torch.float64)
PI_MC = torch.full((3,), 1 / 3, dtype=torch.float64)
H_RATE = -(PI_MC[:, None] * P_MC * P_MC.log()).sum().item()
H_PI = math.log(3)


def iid_stream(n: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(P_IID.float(), n, replacement=True, generator=g).numpy()


def markov_stream(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty(n, dtype=np.int64)
    x[0] = rng.integers(3)
    u = rng.random(n)
    cdf = P_MC.cumsum(1).numpy()
    for i in range(1, n):
        x[i] = min(int(np.searchsorted(cdf[x[i - 1]], u[i], side="right")), 2)
    return x


def markov_nll_per_token(windows: torch.Tensor) -> float:
    """Exact -log p(x) / T of windows[:, :T] under the chain (stationary start), averaged over windows."""
    x = windows[:, :T]
    nll = -PI_MC[x[:, 0]].log() - P_MC[x[:, :-1], x[:, 1:]].log().sum(1)
    return (nll / T).mean().item()


class FakeModel(torch.nn.Module):
    """``logits, _ = model(idx, ...)`` with logits (B, T, V) from ``fn(idx)``; V = K (+1 for [MASK])."""

    def __init__(self, fn, k: int, diffusion: bool) -> None:
        super().__init__()
        self.fn = fn
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        v = k + int(diffusion)
        self.config = SimpleNamespace(block_size=T, vocab_size=v, mask_token_id=k if diffusion else None,
                                      model_type="diffusion" if diffusion else "gpt2")
        self.k, self.diffusion = k, diffusion

    def forward(self, idx, targets=None, *, all_logits=False, kv_cache=None):
        logp = self.fn(idx).float()  # (B, T, K)
        if self.diffusion:  # a [MASK] column the SUBS bound must ignore: make it large to prove it does
            logp = torch.cat([logp, torch.full_like(logp[..., :1], 5.0)], dim=-1)
        return logp, None


def marginal_fn(p: torch.Tensor):
    return lambda idx: p.log().expand(*idx.shape, -1)


def ar_markov_fn(idx: torch.Tensor) -> torch.Tensor:
    return P_MC.log()[idx]  # (B, T, 3): the row of the current token is the next-token distribution


def exact_posterior_fn(idx: torch.Tensor) -> torch.Tensor:
    """Forward-backward: log p(x_i | all visible tokens) of the chain; [MASK] (id 3) is unobserved."""
    B, L = idx.shape
    ev = torch.ones(B, L, 3, dtype=torch.float64)  # evidence: 1 for masked, one-hot for visible
    vis = idx < 3
    ev[vis] = torch.nn.functional.one_hot(idx[vis], 3).double()
    alpha = torch.empty(B, L, 3, dtype=torch.float64)
    beta = torch.ones(B, L, 3, dtype=torch.float64)
    a = PI_MC * ev[:, 0]
    alpha[:, 0] = a / a.sum(-1, keepdim=True)
    for i in range(1, L):
        a = (alpha[:, i - 1] @ P_MC) * ev[:, i]
        alpha[:, i] = a / a.sum(-1, keepdim=True)
    for i in range(L - 2, -1, -1):
        b = (ev[:, i + 1] * beta[:, i + 1]) @ P_MC.T
        beta[:, i] = b / b.sum(-1, keepdim=True)
    post = alpha * beta
    return (post / post.sum(-1, keepdim=True)).clamp_min(1e-30).log()


# --- windows -----------------------------------------------------------------------------------------


def test_eval_windows_even_and_deterministic() -> None:
    data = np.arange(1000, dtype=np.uint16)
    w = eval_windows(data, 9, 5)
    assert w.shape == (5, 10) and w.dtype == torch.int64
    assert w[0, 0] == 0 and w[-1, -1] == 999  # spans the split from start to end
    assert torch.equal(w[:, 1:] - w[:, :-1], torch.ones(5, 9, dtype=torch.int64))  # contiguous text
    assert torch.equal(w, eval_windows(data, 9, 5))
    starts = w[:, 0]
    assert (starts[1:] - starts[:-1]).min() >= 10  # disjoint
    from nanodlm.core.errors import UserError

    with pytest.raises(UserError, match="block_size"):
        eval_windows(data[:5], 9, 1)


# --- AR cross-entropy --------------------------------------------------------------------------------


def test_ar_markov_true_conditional_gives_entropy_rate() -> None:
    windows = eval_windows(markov_stream(40_000), T, 400)
    out = ar_cross_entropy(FakeModel(ar_markov_fn, 3, False), windows, batch_size=64)
    assert out["tokens"] == 400 * T
    assert abs(out["loss"] - H_RATE) < 3 * out["stderr"] + 1e-3, (out, H_RATE)
    marginal = ar_cross_entropy(FakeModel(marginal_fn(PI_MC), 3, False), windows, batch_size=64)
    assert marginal["loss"] == pytest.approx(H_PI, abs=1e-6)  # uniform marginal: exactly ln 3 for any text
    assert marginal["loss"] > out["loss"] + 0.5


def test_ar_iid_marginal_gives_entropy() -> None:
    windows = eval_windows(iid_stream(40_000), T, 300)
    out = ar_cross_entropy(FakeModel(marginal_fn(P_IID), 4, False), windows, batch_size=50)
    assert abs(out["loss"] - H_IID) < 3 * out["stderr"], (out, H_IID)


# --- diffusion NELBO ---------------------------------------------------------------------------------


def test_nelbo_iid_perfect_model_gives_entropy() -> None:
    windows = eval_windows(iid_stream(40_000), T, 300)
    gen = torch.Generator().manual_seed(0)
    out = diffusion_nelbo(FakeModel(marginal_fn(P_IID), 4, True), windows, 64, gen, n_draws=4)
    assert out["tokens"] == 300 * T
    assert abs(out["nelbo"] - H_IID) < 3 * out["stderr"], (out, H_IID)


def test_nelbo_markov_exact_denoiser_is_tight_and_marginal_is_loose() -> None:
    windows = eval_windows(markov_stream(20_000, seed=1), T, 200)
    exact_nll = markov_nll_per_token(windows)  # ~ H_RATE + (H_PI - H_RATE) / T
    gen = torch.Generator().manual_seed(0)
    exact = diffusion_nelbo(FakeModel(exact_posterior_fn, 3, True), windows, 50, gen, n_draws=4)
    assert abs(exact["nelbo"] - exact_nll) < 3 * exact["stderr"], (exact, exact_nll)
    marginal = diffusion_nelbo(FakeModel(marginal_fn(PI_MC), 3, True), windows, 50, gen, n_draws=2)
    assert marginal["nelbo"] >= H_RATE
    assert abs(marginal["nelbo"] - H_PI) < 3 * marginal["stderr"] + 1e-3
    assert marginal["nelbo"] > exact["nelbo"] + 0.4


def test_nelbo_depends_on_seed_only() -> None:
    windows = eval_windows(iid_stream(5_000), T, 20)
    model = FakeModel(marginal_fn(P_IID), 4, True)

    def run(seed: int) -> float:
        return diffusion_nelbo(model, windows, 8, torch.Generator().manual_seed(seed), 2)["nelbo"]

    assert run(3) == run(3) and run(3) != run(4)


# --- checkpoints end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["gpt2", "diffusion"])
def test_evaluate_checkpoint_deterministic(tiny_runs: dict[str, str], model_type: str) -> None:
    cfg = EvalConfig(out_dir=tiny_runs[model_type], num_batches=3, seed=7, device="cpu", n_draws=2)
    first, second = evaluate_checkpoint(cfg), evaluate_checkpoint(cfg)
    assert first == second  # bit-identical, not approximately equal
    assert first["model_type"] == model_type and first["iter_num"] == 2 and first["num_windows"] == 12
    key = "loss" if model_type == "gpt2" else "nelbo"
    # an almost untrained model sits near the uniform loss ln(V), V ~ 60 characters (diffusion: a bound above it)
    assert 3.0 < first[key] < 8.0
    assert first["bits_per_token"] == pytest.approx(first[key] / math.log(2))
    assert first["bits_per_char"] == pytest.approx(first["bits_per_token"])  # char tokenizer
    assert first["tokens"] == 12 * 16 and first["chars"] == 12 * 16
    if model_type == "diffusion":
        assert first["objective"] == "mdlm"
        for k in ("masked_ce@15", "masked_acc@100", "p_mask@masked", "detect_rate", "false_alarm", "copy_acc",
                  "unigram_entropy"):
            assert k in first
        other = evaluate_checkpoint(EvalConfig(out_dir=tiny_runs[model_type], num_batches=3, seed=8, device="cpu",
                                               n_draws=2))
        assert other["nelbo"] != first["nelbo"]  # the seed drives the masks
    else:
        assert first["objective"] == "ar"


def test_eval_cli_json(tiny_runs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "eval.json"
    argv = [f"--out_dir={tiny_runs['diffusion']}", "--num_batches=1", "--device=cpu", f"--json={path}"]
    assert eval_main(argv) == 0
    out = capsys.readouterr().out
    assert "nelbo" in out and "detect_rate" in out
    data = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    for key in ("nelbo", "stderr", "bits_per_token", "bits_per_char", "unigram_entropy", "masked_ce@50",
                "model_type", "objective", "iter_num", "split", "num_windows", "seed"):
        assert key in data, key
    assert data["num_windows"] == 4  # one batch of the checkpoint's batch_size


def test_eval_cli_missing_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["eval", f"--out_dir={tmp_path / 'nope'}", "--device=cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and len(err.splitlines()) == 1


def test_eval_config_validation() -> None:
    from nanodlm.core.errors import UserError

    with pytest.raises(UserError, match="split"):
        EvalConfig(split="test")
    with pytest.raises(UserError, match="n_draws"):
        EvalConfig(n_draws=0)


def test_eval_rejects_other_vocabulary(tiny_runs: dict[str, str], tmp_path: Path) -> None:
    from nanodlm.core.errors import UserError
    from nanodlm.data.dataset import prepare

    src = tmp_path / "other.txt"
    src.write_text("xyz" * 2000, encoding="utf-8")
    prepare("text", input_path=str(src), data_dir=str(tmp_path), out_name="other")
    with pytest.raises(UserError, match="vocabulary"):
        evaluate_checkpoint(EvalConfig(out_dir=tiny_runs["gpt2"], data_dir=str(tmp_path), dataset="other",
                                       device="cpu"))
