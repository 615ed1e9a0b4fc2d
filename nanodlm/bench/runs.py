"""The runs behind ``bench quality``: data, training runs keyed by a config hash, and the choice among candidates.

A run lives in ``work_dir/runs/<name>-<hash8>``, hash8 = a hash of its training config (``config_hash``), and is
reused while that config is unchanged. A *search* is a dict {TrainConfig key: [values]} whose product gives the
candidates of one side (``candidates``); the protocol trains them all and keeps the one with the lowest loss on
dev (``protocol.py``): the AR model and the diffusion model each get their own best setting, the judge too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..core.plotting import read_metrics

# keys that cannot change the trained weights (or are the run's location): left out of the run hash
from ..data.dataset import load_meta, prepare
from ..runs.rundir import saved_iter
from ..training.config import TrainConfig, build_config, config_to_dict
from ..training.train import train

NOT_HASHED = ("out_dir", "data_dir", "init_from", "eval_only", "progress", "plot", "log_interval", "wandb_log",
              "wandb_project", "wandb_run_name", "always_save_checkpoint", "device", "backend", "compile",
              "overwrite", "threads")
# keys added after runs were first hashed: left out while at these values, so those runs keep their hash
HASHED_IF_SET = {"diffusion_block": 0, "mdlm_t_max": 1.0, "shift": None, "attn_anneal_iters": 0, "draft_len": 0,
                 "tidar_alpha": 1.0, "fim_rate": None, "fim_spm_rate": None,
                 "input_mask_rate": 0.0, "prime_bits": 0, "prime_base": 0, "prime_shuffle": True,
                 "prime_embed": "candidates"}
# keys a gpt2 run never reads: its hash must not change when their defaults do
DIFFUSION_ONLY = ("objective", "penalty_keep_mask", "penalty_mask_correct", "mdlm_eps", "repair_rate_max",
                  "copy_weight", "diffusion_block", "mdlm_t_max", "shift", "attn_anneal_iters")
PROTECTED = ("out_dir", "data_dir", "dataset", "model_type", "init_from", "eval_only", "device")
CKPT = "last"  # every model is evaluated at its last checkpoint: best.pt was selected on val text
ROLES = ("ar", "diffusion", "judge")


def config_hash(cfg: TrainConfig) -> str:
    """8 hex digits of sha256 over the training config, without the keys in NOT_HASHED (and for gpt2 runs
    without DIFFUSION_ONLY)."""
    skip = NOT_HASHED + (DIFFUSION_ONLY if cfg.model_type == "gpt2" else ())
    values = {k: v for k, v in config_to_dict(cfg).items()
              if k not in skip and not (k in HASHED_IF_SET and v == HASHED_IF_SET[k])}
    if values.get("attn_dropout") in (None, cfg.dropout):  # the same training as before attn_dropout existed
        values.pop("attn_dropout", None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def route_overrides(rest: dict[str, str], bench_keys: list[str]) -> dict[str, dict[str, str]]:
    """Unknown bench keys -> TrainConfig overrides: ``--ar.KEY`` / ``--judge.KEY`` for those models, plain
    ``--KEY`` for the diffusion model."""
    routed: dict[str, dict[str, str]] = {role: {} for role in ROLES}
    train_keys = {f.name for f in fields(TrainConfig) if f.init}
    for key, value in rest.items():
        name, dot, sub = key.partition(".")
        target, sub = (name, sub) if dot else ("diffusion", key)
        if target not in routed or sub not in train_keys:
            raise UserError(f"unknown key '{key}' for bench quality (bench keys: {', '.join(bench_keys)}; any "
                            "TrainConfig key overrides the diffusion model, ar.KEY / judge.KEY the others)")
        if sub in PROTECTED:
            raise UserError(f"'{key}' is fixed by the protocol (run folders, dataset and device are set by bench)")
        routed[target][sub] = value
    return routed


# --- data -----------------------------------------------------------------------------------------------------

def ensure_dataset(data_dir: Path, dataset: str) -> dict[str, Any]:
    """meta.json of ``data_dir/dataset``. shakespeare_char is prepared on the spot (from $NANODLM_DATA_MIRROR,
    the cache or a download); any other dataset must be prepared first: the error gives the command."""

    try:
        return load_meta(str(data_dir), dataset)
    except UserError:
        pass
    here = Path("data") / dataset  # prepared already with `nanodlm prepare` in the default data_dir: use a copy
    if (here / "meta.json").is_file() and here.resolve() != (data_dir / dataset).resolve():
        print(f"copying {here} to {data_dir / dataset}")
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(here, data_dir / dataset, dirs_exist_ok=True)
        return load_meta(str(data_dir), dataset)
    if dataset == "shakespeare_char":
        print(f"preparing {dataset} in {data_dir}")
        try:
            return prepare(dataset, data_dir=str(data_dir))
        except UserError as e:
            raise UserError(f"bench quality could not prepare {dataset} in {data_dir} ({str(e).split(';')[0]}); "
                            f"run `nanodlm prepare {dataset} --input=FILE --data_dir={data_dir}` with a local copy "
                            "of tinyshakespeare, or set NANODLM_DATA_MIRROR") from None
    if dataset == "shakespeare":
        command = f"nanodlm prepare shakespeare --data_dir={data_dir}"
    else:
        command = f"nanodlm prepare text --input=FILE --name={dataset} --data_dir={data_dir} [--tokenizer=gpt2]"
    raise UserError(f"dataset {dataset!r} is not prepared in {data_dir}: run `{command}`, then bench quality again")


# --- runs -----------------------------------------------------------------------------------------------------

def candidates(search: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """{key: [values]} -> one override dict per combination, in order ({} when the search is empty)."""
    keys = list(search)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(search[k] for k in keys))]


def _spellings(cfg: TrainConfig) -> list[TrainConfig]:
    """``cfg`` and the same model with pos_emb spelled the other way (auto <-> what auto resolves to), so a run
    trained before the search named its positions is found again."""
    other = cfg.resolved_pos_emb if cfg.pos_emb == "auto" else "auto"
    alias = build_config(TrainConfig, {**config_to_dict(cfg), "pos_emb": other})
    return [cfg] if alias.resolved_pos_emb != cfg.resolved_pos_emb else [cfg, alias]


def finished_iters(out_dir: Path) -> int:
    """-1 without a checkpoint, else the iteration its sidecar records (written after ckpt.pt: if it says finished,
    ckpt.pt is finished); 0 without a sidecar (a kill between the two writes), so the run resumes and training
    heals the sidecar."""
    if not (out_dir / "ckpt.pt").exists():
        return -1
    return saved_iter(out_dir) or 0


def plan_run(name: str, values: dict[str, Any], work_dir: Path, data_dir: Path, dataset: str, device: str,
             progress: bool) -> dict[str, Any]:
    """Where run ``name`` with ``values`` lives (work_dir/runs/<name>-<hash8>) and whether it is finished:
    {"cfg", "out_dir", "done"}; an unfinished run's cfg resumes it."""
    base = {**values, "dataset": dataset, "data_dir": str(data_dir), "device": device, "progress": progress,
            "always_save_checkpoint": True}  # a save at every eval: an interrupted run resumes from there
    cfg = build_config(TrainConfig, {**base, "out_dir": "-"})
    dirs = [work_dir / "runs" / f"{name}-{config_hash(c)}" for c in _spellings(cfg)]
    done = [d for d in dirs if finished_iters(d) == cfg.max_iters]
    out_dir = done[0] if done else dirs[0]
    cfg = build_config(TrainConfig, {**base, "out_dir": str(out_dir)})
    if not done and finished_iters(out_dir) >= 0:
        cfg = build_config(TrainConfig, {**config_to_dict(cfg), "init_from": "resume"})
    return {"name": name, "cfg": cfg, "out_dir": str(out_dir), "done": bool(done)}


def train_planned(plan: dict[str, Any]) -> None:
    """Train a planned run in this process (resuming it when it was interrupted)."""
    cfg = plan["cfg"]
    resuming = cfg.init_from == "resume"
    print(f"{plan['name']}: training in {plan['out_dir']}" +
          (f" (resuming at iter {finished_iters(Path(plan['out_dir']))})" if resuming else ""))
    summary = train(cfg)
    if summary.get("interrupted"):
        raise KeyboardInterrupt


def finish_run(plan: dict[str, Any]) -> dict[str, Any]:
    """A planned run once trained -> out_dir, reused, the config and the training ms/iter (median step)."""
    out_dir, cfg = Path(plan["out_dir"]), plan["cfg"]
    if finished_iters(out_dir) != cfg.max_iters:
        raise UserError(f"run {out_dir} did not reach max_iters={cfg.max_iters}; run the protocol again to resume it")
    steps = [r["ms"] for r in read_metrics(out_dir / "metrics.jsonl") if r.get("kind") == "step" and "ms" in r]
    steps = sorted(steps[1:] or steps)  # the first logged step pays the warm-up
    ms = steps[len(steps) // 2] if steps else float("nan")  # median: robust to evals and hiccups
    return {"out_dir": str(out_dir), "reused": plan["done"], "cfg": cfg, "train_ms_per_iter": ms}


def train_or_reuse(name: str, values: dict[str, Any], work_dir: Path, data_dir: Path, dataset: str, device: str,
                   progress: bool) -> dict[str, Any]:
    """Train ``name`` in work_dir/runs/<name>-<hash8>, or reuse it when its ckpt.pt reached max_iters
    (an interrupted run resumes). Returns out_dir, reused, the config and the training ms/iter."""
    plan = plan_run(name, values, work_dir, data_dir, dataset, device, progress)
    if plan["done"]:
        print(f"{name}: reusing {plan['out_dir']} ({plan['cfg'].max_iters} iters)")
    else:
        train_planned(plan)
    return finish_run(plan)


def describe(run: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """What a run is, for the JSON: folder, sizes, tokens seen, speed, and its whole training config."""
    cfg: TrainConfig = run["cfg"]
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    train_cfg = {k: v for k, v in config_to_dict(cfg).items() if k not in NOT_HASHED or k == "data_dir"}
    return {
        "out_dir": run["out_dir"], "reused": run["reused"], "params": model.get_num_params(),
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "block_size": cfg.block_size,
        "batch_size": cfg.batch_size, "max_iters": cfg.max_iters, "tokens_seen": cfg.max_iters * tokens_per_iter,
        "learning_rate": cfg.learning_rate, "min_lr": cfg.min_lr, "warmup_iters": cfg.warmup_iters,
        "pos_emb": model.config.pos_emb, "train_ms_per_iter": run["train_ms_per_iter"],
        "config_hash": Path(run["out_dir"]).name.rsplit("-", 1)[-1], "train_config": train_cfg,
    }
