"""``bench infill``: filling a gap, bidirectional diffusion against an AR model trained to fill in the middle.

Windows of ``window_len`` characters (default block_size - 3: a FIM prompt adds three sentinels and must fit in
the AR model's context) from the dev or test half of val.bin, at evenly spaced offsets; one hole per window of
each length L at a uniform position (a seed draws the positions and the fills). Methods side by side: the
diffusion model (``--sampler``, ``--steps``: default one step per hole token), the FIM AR model, a plain AR
model continuing the prefix only (what the suffix is worth), optionally a FIM model trained with SPM windows too
(``--fim_spm_run``, prompted in SPM order: prefix next to the middle), and the real text. Per method and L:

1. **likelihood of the true middle**, nats per character (``evaluation/infill.py`` says what each conditions on);
   for diffusion both its bound and the exact figure of its left-to-right decoder (``diffusion_l2r``);
2. **greedy fills**: character accuracy against the truth (temperature 0);
3. **sampled fills** over a temperature sweep: the fills' character entropy, the judge's NLL per character of
   the whole window with the fill, and the **seam**, the judge's NLL of the first 32 characters after the hole
   given the prefix and the fill; interpolated at the real middles' entropy (matched diversity, as the ruler).

Choose on dev, report on test: a dev run chooses each method's temperatures (the two whose fills' entropy brackets
the real middles', or the nearest), and with ``--samplers`` the diffusion sampler too (the one whose fills the judge
scores best at the chosen temperatures, mean over L); ``--choose_from=DEV.json`` on test measures only those
(and the seeds must differ).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..core.fileio import read_json
from ..data.dataset import open_split
from ..evaluation.evaluate import ar_cross_entropy, eval_windows
from ..evaluation.infill import (
    ar_prefix_nll,
    char_accuracy,
    diffusion_hole_nll,
    diffusion_hole_nll_l2r,
    hole_mask,
    hole_starts,
    judge_window,
)
from ..evaluation.protocol import choose_on, dev_test, ppl_at_entropy
from ..evaluation.textstats import unigram_entropy
from ..runs.checkpoint import load_model
from ..sampling.ar_sampling import generate_ar
from ..sampling.fim import fim_middle_nll, generate_fim
from ..sampling.samplers import SamplerOptions, get_sampler
from ..training.distributed import resolve_device
from .common import machine_info, mean_se, now, parse_list, split_args, write_json

METHODS = ("diffusion", "fim", "fim_spm", "ar")


@dataclass
class InfillArgs:
    diffusion_run: str = ""  # a bidirectional diffusion run's out_dir
    fim_run: str = ""  # a gpt2 run trained with objective=fim
    fim_spm_run: str = ""  # a FIM run trained with SPM windows too (fim_spm_rate > 0), prompted SPM ('': none)
    ar_run: str = ""  # a plain gpt2 run: continues the prefix only ('' = leave it out)
    judge: str = ""  # the judge's run (an AR model of the same tokenizer; '' = no sampled fills)
    split: str = "dev"  # dev chooses, test reports (halves of val.bin)
    lengths: str = "1,8,32,128"  # hole lengths L
    windows: int = 64  # windows per L and seed
    window_len: int = 0  # characters per window (0: the smallest block_size - 3)
    seeds: str = "1,2,3"  # each seed draws the hole positions and the fills
    temperatures: str = "0.7,0.85,1.0,1.15"  # the sampled fills' sweep (every method)
    sampler: str = "confidence"  # the diffusion model's sampler
    samplers: str = ""  # dev: diffusion samplers screened (comma list, '' = --sampler); --choose_from takes the choice
    steps: int = 0  # diffusion steps per hole (0: L, one token per step)
    n_draws: int = 4  # Monte-Carlo draws of the diffusion bound per window
    seam: int = 32  # characters after the hole the seam scores
    choose_from: str = ""  # a dev run's JSON: its chosen temperatures only
    ckpt: str = "last"
    device: str = "auto"
    json: str | None = None  # default infill-<split>.json
    png: str | None = None  # default: the JSON path with .png

    def __post_init__(self) -> None:
        if not self.diffusion_run or not self.fim_run:
            raise UserError("bench infill needs --diffusion_run=DIR and --fim_run=DIR (a gpt2 run with objective=fim)")
        if self.split not in ("dev", "test"):
            raise UserError(f"--split must be dev or test; got {self.split!r}")
        if self.windows < 1 or self.n_draws < 1 or self.seam < 1 or self.steps < 0 or self.window_len < 0:
            raise UserError("--windows, --n_draws and --seam must be >= 1, --steps and --window_len >= 0")


class Methods:
    """The loaded models and how each fills a hole (ids in, ids out)."""

    def __init__(self, args: InfillArgs, device: str) -> None:
        loaded = {m: load_model(d, args.ckpt, device) for m, d in
                  (("diffusion", args.diffusion_run), ("fim", args.fim_run), ("fim_spm", args.fim_spm_run),
                   ("ar", args.ar_run)) if d}
        self.models = {m: v[0] for m, v in loaded.items()}
        self.tok, self.data = loaded["diffusion"][2], loaded["diffusion"][1]["config"]  # its dataset's val split
        self.args, self.device = args, device
        d = self.models["diffusion"]
        if d.config.model_type != "diffusion" or d.config.diffusion_block:
            raise UserError(f"--diffusion_run must be a bidirectional diffusion run; {args.diffusion_run} is not")
        if not getattr(self.models["fim"].config, "fim_sentinels", 0):
            raise UserError(f"--fim_run must be a gpt2 run trained with objective=fim; {args.fim_run} is not")
        if "fim_spm" in self.models and not (loaded["fim_spm"][1]["config"].get("fim_spm_rate") or 0) > 0:
            raise UserError(f"--fim_spm_run must be a FIM run trained with --fim_spm_rate above 0; "
                            f"{args.fim_spm_run} is not")
        if "ar" in self.models and self.models["ar"].config.model_type != "gpt2":
            raise UserError(f"--ar_run must be a gpt2 run; {args.ar_run} is not")
        self.newline = self.tok.encode("\n") or [0]

    def likelihood(self, method: str, prefix: list[int], middle: list[int], suffix: list[int]) -> float:
        if method in ("fim", "fim_spm"):
            return fim_middle_nll(self.models[method], prefix, middle, suffix, spm=method == "fim_spm") / len(middle)
        return ar_prefix_nll(self.models["ar"], prefix or self.newline, middle) / len(middle)

    def fill(self, method: str, windows: torch.Tensor, starts: list[int], L: int, temperature: float,
             gen: torch.Generator, sampler: str | None = None) -> tuple[list[list[int]], float]:
        """Fills (one per window) and the forward passes one fill took (the diffusion sampler fills every window in
        each of its passes: a fill took all of them)."""
        rows = windows.tolist()
        if method == "diffusion":
            model = self.models["diffusion"]
            canvas = windows.clone().to(self.device)
            canvas[hole_mask(len(rows), windows.size(1), starts, L).to(self.device)] = model.config.mask_token_id
            opts = SamplerOptions(sampler=sampler or self.args.sampler, steps=self.args.steps or L,
                                  temperature=temperature)
            out, info = get_sampler(opts.sampler)(model, canvas, mask_token_id=model.config.mask_token_id,
                                                  generator=gen, **{k: v for k, v in opts.sampler_kwargs().items()})
            return [r[s:s + L] for r, s in zip(out.tolist(), starts, strict=True)], float(info["forward_passes"])
        fills, passes = [], 0
        for row, s in zip(rows, starts, strict=True):
            if method in ("fim", "fim_spm"):
                mids, info = generate_fim(self.models[method], row[:s], row[s + L:], 1, length=L, max_new=L,
                                          temperature=temperature, generator=gen, spm=method == "fim_spm")
                fills.append(mids[0])
                passes += info["forward_passes"]
            else:
                ctx = row[:s] or self.newline
                out = generate_ar(self.models["ar"], torch.tensor([ctx], device=self.device), L,
                                  temperature=temperature, generator=gen)
                fills.append(out[0, len(ctx):].tolist())
                passes += L
        return fills, passes / len(rows)


def _judged(judge: torch.nn.Module, rows: list[list[int]], starts: list[int], fills: list[list[int]], L: int,
            seam: int) -> dict[str, float]:
    totals = {"nll": 0.0, "tokens": 0, "seam_nll": 0.0, "seam_tokens": 0}
    for row, s, f in zip(rows, starts, fills, strict=True):
        r = judge_window(judge, row[:s] + f + row[s + L:], s + len(f), seam)
        for k in totals:
            totals[k] += r[k]
    return {"judge_nll": totals["nll"] / totals["tokens"],
            "seam_nll": totals["seam_nll"] / max(1, totals["seam_tokens"]),
            "entropy_bits": float(unigram_entropy([t for f in fills for t in f], bits=True))}


def _at_entropy(curve: list[dict[str, Any]], key: str, target: float) -> float | None:
    ppl = ppl_at_entropy([p["entropy_bits"] for p in curve], [math.exp(p[key]) for p in curve], target)
    return None if ppl is None else math.log(ppl)


def bench_infill(argv: list[str]) -> dict[str, Any]:
    """The whole bench (module docstring) -> the result dict, also written as JSON and a PNG."""
    args, _, rest = split_args(InfillArgs, argv)
    if rest:
        raise UserError(f"unknown key(s) for bench infill: {', '.join(rest)} (see `nanodlm bench infill --help`)")
    device = resolve_device(args.device)
    lengths = parse_list(args.lengths, int, "lengths")
    seeds = parse_list(args.seeds, int, "seeds")
    temps = parse_list(args.temperatures, float, "temperatures")
    samplers = parse_list(args.samplers, str, "samplers") if args.samplers.strip() else [args.sampler]
    if len(samplers) > 1 and (args.split != "dev" or args.choose_from):
        raise UserError("--samplers screens diffusion samplers on dev: give it with --split=dev and no --choose_from")
    chosen_temps = None
    if args.choose_from:
        chosen_temps, chosen_sampler = _choose_from(args, seeds)
        args = dataclasses.replace(args, sampler=chosen_sampler)
        samplers = [chosen_sampler]
    m = Methods(args, device)
    # what sampled fills run under: every method, diffusion once per screened sampler ("diffusion:<sampler>")
    skeys = [k for k in METHODS if k in m.models and k != "diffusion"]
    skeys = [f"diffusion:{s}" for s in samplers] + skeys if len(samplers) > 1 else ["diffusion", *skeys]
    methods = [k for k in METHODS if k in m.models]
    block = min(model.config.block_size for model in m.models.values())
    W = args.window_len or block - 3
    fim_block = min(m.models[k].config.block_size for k in ("fim", "fim_spm") if k in m.models)
    if W + 3 > fim_block or W > m.models["diffusion"].config.block_size:
        raise UserError(f"--window_len {W} does not fit: the FIM prompt needs window_len + 3 <= its block_size "
                        f"{fim_block}")
    for L in lengths:
        if not 1 <= L < W:
            raise UserError(f"a hole of {L} leaves no context in a window of {W}: use lengths below {W}")
    judge = load_model(args.judge, "last", device)[0] if args.judge else None
    cfg = m.models["diffusion"].config
    split = dev_test(open_split(m.data["data_dir"], m.data["dataset"], "val"))[args.split]
    windows = eval_windows(split, W - 1, args.windows)  # (N, W): evenly spaced, the same for every method
    # what FIM costs left to right: each AR model's plain next-token CE on the split's windows of its block_size
    ltr = {}
    for k in ("fim", "fim_spm", "ar"):
        if k in m.models:
            T = m.models[k].config.block_size
            out = ar_cross_entropy(m.models[k], eval_windows(split, T, min(200, max(1, len(split) // (T + 1)))), 16)
            ltr[k] = {"ce": out["loss"], "stderr": out["stderr"]}
    if "ar" in ltr:
        ltr["fim_over_ar"] = ltr["fim"]["ce"] / ltr["ar"]["ce"]
        if "fim_spm" in ltr:
            ltr["fim_spm_over_ar"] = ltr["fim_spm"]["ce"] / ltr["ar"]["ce"]
    rows_out = []
    for L in lengths:
        per_seed: dict[str, Any] = {"likelihood": {k: [] for k in methods}, "accuracy": {k: [] for k in methods},
                                    "sampled": {k: {} for k in skeys}, "real": [],
                                    "passes": {k: [] for k in skeys}, "l2r": []}
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed * 1000 + L)
            starts = hole_starts(windows.size(0), W, L, gen)
            rows = windows.tolist()
            mids = [r[s:s + L] for r, s in zip(rows, starts, strict=True)]
            for k in methods:
                if k == "diffusion":
                    dgen = torch.Generator(device=device).manual_seed(seed)
                    nll = diffusion_hole_nll(m.models[k], windows, hole_mask(len(rows), W, starts, L), dgen,
                                             n_draws=args.n_draws)
                    per_seed["likelihood"][k].append(float(nll.mean()))
                    exact = diffusion_hole_nll_l2r(m.models[k], windows, hole_mask(len(rows), W, starts, L))
                    per_seed["l2r"].append(float(exact.mean()))
                else:
                    per_seed["likelihood"][k].append(sum(
                        m.likelihood(k, r[:s], r[s:s + L], r[s + L:]) for r, s in zip(rows, starts, strict=True))
                        / len(rows))
                fills, _ = m.fill(k, windows, starts, L, 0.0, torch.Generator(device=device).manual_seed(seed))
                per_seed["accuracy"][k].append(sum(char_accuracy(f, t) for f, t in zip(fills, mids, strict=True))
                                               / len(rows))
            if judge is None:
                continue
            per_seed["real"].append(_judged(judge, rows, starts, mids, L, args.seam))
            for k in skeys:
                method, _, sampler = k.partition(":")
                todo = chosen_temps.get(f"{method}/{L}", temps) if chosen_temps else temps
                for t in todo:
                    fills, passes = m.fill(method, windows, starts, L, t,
                                           torch.Generator(device=device).manual_seed(seed), sampler or None)
                    per_seed["sampled"][k].setdefault(t, []).append(_judged(judge, rows, starts, fills, L, args.seam))
                    per_seed["passes"][k].append(passes)
        rows_out.append(_summarize(L, per_seed, methods, skeys, args))
        print(f"L={L}: " + "; ".join(
            f"{k} nll {rows_out[-1]['likelihood'][k]['mean']:.3f} acc {rows_out[-1]['greedy_accuracy'][k]['mean']:.3f}"
            for k in methods))
    screen = _choose_sampler(rows_out, samplers) if len(samplers) > 1 else None
    result = {"benchmark": "infill", "split": args.split, "window_len": W, "lengths": lengths,
              "diffusion_sampler": screen["chosen"] if screen else args.sampler, "sampler_screen": screen,
              "methods": methods, "args": dataclasses.asdict(args), "rows": rows_out, "left_to_right": ltr,
              "conditions": {"diffusion": "bound on -log p(middle | prefix, suffix, L): only the hole masked",
                             "diffusion_l2r": "exact -log p(middle | prefix, suffix, L) of the diffusion model's "
                                              "left-to-right decoder (one hole token per pass, L passes)",
                             "fim": "exact -log p(middle | prefix, suffix, L): sentinels ruled out until L",
                             "fim_spm": "as fim, a model trained with SPM windows too, prompted in SPM order",
                             "ar": "exact -log p(middle | prefix): no suffix"},
              "runs": {k: getattr(args, f"{k}_run") for k in methods}, "judge": args.judge,
              "diffusion_block_size": cfg.block_size, "date": now(), "machine": machine_info(device)}
    json_path = args.json or f"infill-{args.split}.json"
    write_json(json_path, result)
    png = args.png or (str(Path(json_path).with_suffix(".png")) if json_path != "-" else None)
    if png and _plot(result, png):
        print(f"wrote {png}")
    return result


def _summarize(L: int, per_seed: dict[str, Any], methods: list[str], skeys: list[str],
               args: InfillArgs) -> dict[str, Any]:
    likelihood = {k: mean_se(per_seed["likelihood"][k]) for k in methods}
    likelihood["diffusion_l2r"] = mean_se(per_seed["l2r"])
    row: dict[str, Any] = {"L": L, "likelihood": likelihood,
                           "greedy_accuracy": {k: mean_se(per_seed["accuracy"][k]) for k in methods}}
    if not per_seed["real"]:
        return row
    real = {key: mean_se([r[key] for r in per_seed["real"]]) for key in ("judge_nll", "seam_nll", "entropy_bits")}
    row["real"] = real
    row["sampled"] = {}
    for k in skeys:
        curve = [{"temperature": t, **{key: mean_se([r[key] for r in rs])["mean"]
                                       for key in ("judge_nll", "seam_nll", "entropy_bits")}}
                 for t, rs in sorted(per_seed["sampled"][k].items()) if rs]
        target = real["entropy_bits"]["mean"]
        chosen, pair = None, None
        if args.split == "dev":  # the temperature whose fills' entropy is nearest the real middles', and the two
            # nearest on either side of it (test reuses them: its figure is interpolated between them)
            stamped = [{**p, "split": "dev", "gap": abs(p["entropy_bits"] - target)} for p in curve]
            chosen = curve[choose_on(stamped, lambda p: p["gap"], uses=[{"split": "dev"}])]
            pair = {chosen["temperature"]}
            for side in ([p for p in stamped if p["entropy_bits"] <= target],
                         [p for p in stamped if p["entropy_bits"] >= target]):
                if side:
                    pair.add(side[choose_on(side, lambda p: p["gap"], uses=[{"split": "dev"}])]["temperature"])
        row["sampled"][k] = {"curve": curve, "chosen_temperature": chosen and chosen["temperature"],
                             "chosen_temperatures": pair and sorted(pair), "at_chosen": chosen,
                             "judge_nll_at_real_entropy": _at_entropy(curve, "judge_nll", target),
                             "seam_nll_at_real_entropy": _at_entropy(curve, "seam_nll", target),
                             "passes_per_fill": mean_se(per_seed["passes"][k])["mean"]}
    return row


def _choose_sampler(rows: list[dict[str, Any]], samplers: list[str]) -> dict[str, Any]:
    """The screened diffusion sampler whose fills the judge scores best (per-character NLL of the window at each
    L's chosen temperature, mean over L; dev only, through choose_on); its fills become the rows' ``diffusion``."""
    if not all("sampled" in r for r in rows):
        raise UserError("--samplers chooses by the judge's score of sampled fills: give --judge=RUN too")
    scores = [{"split": "dev", "sampler": s, "judge_nll": sum(r["sampled"][f"diffusion:{s}"]["at_chosen"]["judge_nll"]
                                                              for r in rows) / len(rows)} for s in samplers]
    chosen = samplers[choose_on(scores, lambda r: r["judge_nll"], uses=[{"split": "dev"}])]
    for r in rows:
        r["sampled"]["diffusion"] = r["sampled"][f"diffusion:{chosen}"]
    return {"chosen": chosen, "judge_nll_at_chosen_temperatures": {r["sampler"]: r["judge_nll"] for r in scores}}


def _choose_from(args: InfillArgs, seeds: list[int]) -> tuple[dict[str, list[float]], str]:
    """A dev run's choices: each method's temperatures per L ({"method/L": [t, ...]}) and the diffusion sampler."""
    dev = read_json(Path(args.choose_from), "--choose_from file", dict, "; give a bench infill --split=dev result")
    if dev.get("split") != "dev" or dev.get("benchmark") != "infill":
        raise UserError(f"--choose_from must be a bench infill result with --split=dev; got {args.choose_from}")
    used = set(parse_list(dev["args"]["seeds"], int, "seeds"))
    if used & set(seeds):
        raise UserError(f"seeds {sorted(used & set(seeds))} chose on dev; report with other --seeds")
    picks = {f"{k}/{r['L']}": v.get("chosen_temperatures") or [v["chosen_temperature"]]
             for r in dev["rows"] for k, v in r.get("sampled", {}).items() if ":" not in k}
    if not picks:
        raise UserError(f"{args.choose_from} has no sampled fills to choose from (run it with --judge)")
    return picks, dev.get("diffusion_sampler") or dev["args"]["sampler"]


def _plot(result: dict[str, Any], png: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [("likelihood", "NLL of the true middle (nats/char)"), ("greedy_accuracy", "greedy char accuracy"),
              ("seam", "judge NLL of the seam at real entropy")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    Ls = [r["L"] for r in result["rows"]]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for k in [*result["methods"], *(["diffusion_l2r"] if key == "likelihood" else [])]:
            if key == "seam":
                ys = [r.get("sampled", {}).get(k, {}).get("seam_nll_at_real_entropy") for r in result["rows"]]
            else:
                ys = [r[key][k]["mean"] for r in result["rows"]]
            ax.plot(Ls, [float("nan") if y is None else y for y in ys], marker="o", label=k)
        if key == "seam" and all("real" in r for r in result["rows"]):
            ax.plot(Ls, [r["real"]["seam_nll"]["mean"] for r in result["rows"]], "k--", label="real text")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hole length L (chars)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"bench infill, {result['split']} split, windows of {result['window_len']} chars")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True
