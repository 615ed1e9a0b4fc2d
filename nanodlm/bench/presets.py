"""``bench quality``'s presets: model sizes, searches, knob grids, seeds, and what was fixed before looking."""

from __future__ import annotations

from typing import Any

# --- presets --------------------------------------------------------------------------------------------------

# AR and diffusion share one model/optimizer config (the same sizes and the same number of training tokens).
# 2,000 iterations (6 epochs of tiny shakespeare): the budget that fits the protocol in an hour on 2 cores
# (BENCHMARKS.md section 9 measures what it costs against 5,000). Dropout, where searched, drops the residual
# stream only (attn_dropout 0): attention dropout runs PyTorch's CPU attention unfused, 1.7x slower per iteration.
_CPU_MODEL: dict[str, Any] = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=256, batch_size=12, dropout=0.0, attn_dropout=0.0,
    learning_rate=1e-3, min_lr=1e-4,
    warmup_iters=100, beta2=0.99, max_iters=2000, lr_decay_iters=2000, eval_interval=500, eval_iters=20,
    log_interval=10,
)
_SMOKE_MODEL: dict[str, Any] = dict(
    n_layer=1, n_head=2, n_embd=32, block_size=64, batch_size=4, dropout=0.0, learning_rate=1e-3, min_lr=1e-4,
    warmup_iters=5, beta2=0.99, max_iters=30, lr_decay_iters=30, eval_interval=30, eval_iters=2, log_interval=10,
)
# what each side searches: a screen grid ({TrainConfig key: [values]}, every candidate briefly, screen_iters) and
# a final grid (the screen's winner x these, full budget; bench/search.py); the knob values each frontier sweeps;
# the seeds. The AR search is the diffusion model's (rotary positions, its learning rates) plus the learned
# positions of the recipe, and dropout, since AR overfits this data by 2,000 iterations and diffusion does not.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "model": _CPU_MODEL,
        # configs/judge.py (6 layers, 6 heads, 192 wide, rope, lr 2e-3) at the contestants' budget, with dropout:
        # it overfits as the AR does and must stay stronger than every contestant
        "judge": ("judge", {"max_iters": 2000, "lr_decay_iters": 2000, "dropout": 0.1, "attn_dropout": 0.0}),
        "search": {"ar": {"screen": {"pos_emb": ["learned", "rope"], "learning_rate": [1e-3, 2e-3, 3e-3]},
                          "final": {"dropout": [0.0, 0.1, 0.2]}},
                   "diffusion": {"screen": {"learning_rate": [1e-3, 2e-3, 3e-3]}, "final": {}},
                   "judge": {"screen": {}, "final": {}}},
        "screen_iters": 400,
        "temperature": [0.8, 0.9, 1.0, 1.1, 1.2],  # AR's frontier
        "knob": {"prior_weight": [0.0, 0.4, 0.6, 0.7, 0.8, 1.0], "temperature": [0.8, 0.9, 1.0, 1.1, 1.2],
                 "noise": [0.5, 1.0, 2.0, 4.0, 16.0]},  # the diffusion sampler's frontier, by --knob
        "selection_seeds": [1, 2], "report_seeds": [1337, 1338, 1339],
        "num_samples": 32, "length": 256, "steps": 64, "eval_windows": 200, "eval_batch_size": 32,
        # choosing, sampling and judging both frontiers, for the estimate: measured 5.3 min with one thread per lane
        # on 2 lanes, 10.5 with one thread (BENCHMARKS.md section 9, "Wall time")
        "sampling_minutes": 6,
    },
    "smoke": {  # the same protocol, small enough for a test: seconds on 2 cores
        "model": {**_SMOKE_MODEL, "plot": False},
        "judge": {**_SMOKE_MODEL, "n_layer": 2, "plot": False},
        "search": {"ar": {"screen": {"pos_emb": ["learned", "rope"]}, "final": {}},
                   "diffusion": {"screen": {"learning_rate": [1e-3, 3e-3]}, "final": {}},
                   "judge": {"screen": {}, "final": {}}},
        "screen_iters": 0,  # no screen: every candidate trains the full (tiny) budget
        "temperature": [0.7, 1.0, 1.5],
        "knob": {"prior_weight": [0.0, 0.7, 1.5], "temperature": [0.7, 1.0, 1.5], "noise": [0.5, 1.0, 4.0]},
        "selection_seeds": [1], "report_seeds": [2, 3, 4],
        "num_samples": 4, "length": 64, "steps": 8, "eval_windows": 8, "eval_batch_size": 8,
        "sampling_minutes": 0.5,
    },
}
# settings the ruler uses that were fixed before it existed (some of them on all of val.bin, test half included,
# in earlier rounds) and are not chosen inside the protocol: written into the JSON as protocol.fixed_a_priori
FIXED_A_PRIORI: dict[str, str] = {
    "judge": "configs/judge.py sizes, rope positions, lr 2e-3 (issue 11, chosen on all of val.bin); dropout 0.1 "
             "(residual stream only, attn_dropout 0, for speed) and the contestants' 2,000 iterations fixed for this "
             "budget without a run",
    "copy_weight": "0.1 for the repair objective (issue 5 sweep, on all of val.bin)",
    "block_clipping": "(mdlm_eps, mdlm_t_max) = (0.45, 0.95) for block 4 (BD3-LM's range, section 8)",
    "knob_grids": "the prior_weight / temperature / noise grids and AR's temperature grid (issue 11)",
    "search_grids": "the screen grids, the dropout grid (0, 0.1, 0.2; residual stream only), screen_iters 400 and "
                    "max_iters 2,000",
}
