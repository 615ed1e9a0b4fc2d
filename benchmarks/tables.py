"""Markdown tables for BENCHMARKS.md and the README, read from the committed JSON (never typed by hand).

    python benchmarks/tables.py quality benchmarks/quality-fair-cpu-2026-12-03.json [MORE.json ...]
    python benchmarks/tables.py parallel benchmarks/parallel-test-cpu-2026-12-03.json
    python benchmarks/tables.py fast DEV.json TEST.json [...] > nanodlm/configs/sample/fast.py  # bench parallel
    python benchmarks/tables.py prime benchmarks/prime-screen-cpu-DATE.json benchmarks/prime-report-cpu-DATE.json
    python benchmarks/tables.py epochs benchmarks/epochs-cpu-DATE.json
    python benchmarks/tables.py infill benchmarks/infill-test2-cpu-2026-12-07.json

Every figure printed is the JSON's, rounded only here; ratios are computed from the JSON's own numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nanodlm.bench.parallel import meets_bar
from nanodlm.core.fileio import read_json
from nanodlm.evaluation.protocol import choose_on


def pm(v: float | None, se: float | None = None, fmt: str = ".2f") -> str:
    if v is None:
        return "–"
    return f"{v:{fmt}} ± {se:{fmt}}" if se is not None and se == se else f"{v:{fmt}}"


def pct(v: float | None, ref: float | None) -> str:
    return "–" if v is None or not ref else f"{100 * (v / ref - 1):+.1f}%"


def row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def quality(paths: list[str]) -> list[str]:
    out = [row(["model (chosen on dev)", "test loss / NELBO", "judge PPL", "× AR", "entropy vs real",
                "PPL at real entropy", "× AR", "chars/s (batch 32)", "JSON"]),
           row(["---"] * 9)]
    for path in paths:
        r = read_json(Path(path), "result")
        ar, real = r["ar"], r["real"]
        name = Path(path).name
        sides = [("AR", ar, "val_loss"), ("diffusion", r["diffusion"], "nelbo")]
        if r.get("diffusion_compare"):
            sides.append(("diffusion, " + r["diffusion_compare"]["sampler"], r["diffusion_compare"], None))
        for label, s, key in sides:
            cfg = s.get("config", {})
            train = cfg.get("train", {})
            what = label
            if train:
                what += f" ({train.get('pos_emb')}, lr {train.get('learning_rate'):g}, dropout {train.get('dropout'):g}"
                what += f", block {train['diffusion_block']}" if train.get("diffusion_block") else ""
                what += f"; {cfg.get('knob')} {cfg.get('knob_value'):g})"
            out.append(row([what, pm(s.get(key), s.get(f"{key}_stderr"), ".4f") if key else "–",
                            pm(s["judge_ppl"], s.get("judge_ppl_se")),
                            f"{s['judge_ppl'] / ar['judge_ppl']:.2f}", pct(s["entropy_bits"], real["entropy_bits"]),
                            pm(s.get("ppl_at_real_entropy"), s.get("ppl_at_real_entropy_se")),
                            f"{s['ppl_at_real_entropy'] / ar['ppl_at_real_entropy']:.2f}"
                            if s.get("ppl_at_real_entropy") and ar.get("ppl_at_real_entropy") else "–",
                            f"{s['chars_per_s']:,.0f}", name]))
        out.append(row(["real text (test)", "–", pm(real["judge_ppl"], real.get("judge_ppl_se")), "–",
                        f"{real['entropy_bits']:.3f} bits", "–", "–", "–", name]))
        p = r["protocol"]
        out.append(row([f"judge (test loss {r['judge']['val_loss']:.4f}, stronger: "
                        f"{r['judge']['stronger_than_contestants']})", "", "", "", "", "", "",
                        f"wall {p.get('wall_s', 0) / 60:.0f} min, load {p['load']['start'][0]:.1f}"
                        f"→{p['load']['end'][0]:.1f}", name]))
    return out


def parallel(paths: list[str]) -> list[str]:
    out = [row(["configuration", "tau", "judge PPL", "× AR", "entropy vs real", "passes / 256 chars",
                "× AR chars/s batch 1", "× AR chars/s batch N", "meets bar (dev choice)", "JSON"]),
           row(["---"] * 10)]
    for path in paths:
        r = read_json(Path(path), "result")
        ar, real = r["ar"], r.get("real")
        picks = r.get("chosen_on_dev") or [{}] * len(r["curves"])
        for c, pick in zip(r["curves"], picks):
            for p in c["points"]:
                out.append(row([c["name"], f"{p['tau']:g}", pm(p["judge_ppl"], p.get("judge_ppl_se")),
                                f"{p['judge_ppl'] / ar['judge_ppl']:.2f}",
                                pct(p["entropy_bits"], (real or ar)["entropy_bits"]), f"{p['passes_per_256']:.0f}",
                                f"{p['speedup_b1']:.2f}", f"{p['speedup_bN']:.2f}", pick.get("meets_bar", "–"),
                                Path(path).name]))
        out.append(row(["AR (KV cache)", "–", pm(ar["judge_ppl"], ar.get("judge_ppl_se")), "1.00",
                        pct(ar["entropy_bits"], (real or ar)["entropy_bits"]),
                        f"{ar['passes_per_256']:.0f}", "1.00", "1.00", "–",
                        Path(path).name]))
    return out


def fast(paths: list[str]) -> list[str]:
    """configs/sample/fast.py from bench parallel dev runs and their test reports (pairs DEV TEST ...): the curve
    whose dev choice is fastest at batch 1 within the quality bar (chosen on dev only), with its test figures; or,
    when no curve meets the bar on dev, the one closest to it (lowest dev judge PPL ratio), said so."""
    scored = []
    for dev_path, test_path in zip(paths[::2], paths[1::2]):
        dev, test = read_json(Path(dev_path), "dev result"), read_json(Path(test_path), "test result")
        dev_points = {c["name"]: {p["tau"]: p for p in c["points"]} for c in dev["curves"]}
        for pick, curve in zip(test["chosen_on_dev"], test["curves"]):
            d = dev_points[curve["name"]][pick["tau"]]
            scored.append((pick, curve, d, dev, test, dev_path, test_path))
    # the choice across curves, through choose_on: each curve's dev point, stamped with its dev file's split
    rows = [{"split": s[3]["args"].get("split"), **s[2], "ratio": s[2]["judge_ppl"] / s[3]["ar"]["judge_ppl"]}
            for s in scored]
    meeting = [i for i, s in enumerate(scored) if s[0]["meets_bar"]]
    if meeting:
        i = meeting[choose_on([rows[i] for i in meeting], lambda r: -r["speedup_b1"])]
        verdict = "the fastest configuration within the quality bar on dev"
    else:
        i = choose_on(rows, lambda r: r["ratio"])
        verdict = "NO configuration met the quality bar on dev; this one came closest (lowest judge PPL ratio)"
    pick, curve, d, dev, test, dev_path, test_path = scored[i]
    t, ar, real = curve["points"][0], test["ar"], test.get("real") or test["ar"]
    keys = {"sampler": pick["sampler"], "steps": pick["steps"], "schedule": pick["schedule"],
            "parallel_threshold": pick["tau"], "prior_weight": test["options"]["prior_weight"]}
    if pick["semi_ar_block"]:
        keys.update(semi_ar_block=pick["semi_ar_block"], approx_cache=pick["approx_cache"])
    if pick["sampler"] == "speculative" and pick.get("draft_len"):  # None: the model's own draft length
        keys["draft_len"] = pick["draft_len"]
    lines = [f"# Sampling preset \"fast\": `nanodlm sample fast --out_dir=RUN`, measured on {curve['name']}.",
             f"# MEASURED ({Path(dev_path).name} chose, {Path(test_path).name} reports): {verdict}.",
             "# Quality bar: judge PPL <= 1.5x cached AR and entropy within 3% of real text. Test, report seeds:",
             f"# judge PPL {t['judge_ppl']:.2f} ({t['judge_ppl'] / ar['judge_ppl']:.2f}x AR), entropy "
             f"{100 * (t['entropy_bits'] / real['entropy_bits'] - 1):+.1f}% vs real, {t['passes_per_256']:.0f} passes "
             f"per 256 chars, {t['speedup_b1']:.2f}x cached AR chars/s at batch 1, {t['speedup_bN']:.2f}x at batch "
             f"{test['args']['num_samples']}.",
             f"# On test it {'meets' if meets_bar(t, ar, test.get('real')) else 'misses'} the bar; it is "
             f"{'faster' if t['speedup_b1'] > 1 else 'SLOWER'} than cached AR at batch 1.",
             "# Regenerate: python benchmarks/tables.py fast DEV.json TEST.json [DEV.json TEST.json ...]"]
    return lines + [f"{k} = {v!r}" for k, v in keys.items()]


def prime(paths: list[str]) -> list[str]:
    """benchmarks/prime_ruler.py's JSON: the dev screen (each run's dev NELBO and val curve), then the report (test
    NELBO per objective, mean over the training seeds ± their standard error, against AR's and repair's from the
    fair ruler's JSON: the same windows and masks, seed 1337)."""
    out: list[str] = []
    for path in paths:
        r = read_json(Path(path), "result")
        fair, name = r["fair"], Path(path).name
        if "chosen" in r and r["benchmark"].startswith("prime screen"):
            out += [row(["run (seed 1337)", "dev NELBO", "× AR dev CE", "val loss at 500 / 1,000 / 1,500 / 2,000",
                         "ms/iter as trained (shared CPU)", "JSON"]), row(["---"] * 6)]
            for x in r["rows"]:
                curve = " / ".join(f"{v:.3f}" for i, v in x["val_curve"] if i > 0)
                label = f"{x['name']} (base {x['prime'][0]}, {x['prime'][1]} digits)" + (
                    " **chosen**" if x["name"] == r["chosen"] else "")
                out.append(row([label, pm(x["nelbo"], x["stderr"], ".4f"), f"{x['nelbo'] / fair['ar']['dev']:.3f}",
                                curve, f"{x['ms_per_iter']:.0f}", name]))
            out.append(row([f"repair (the ruler's diffusion, {fair['json']})", f"{fair['repair']['dev']:.4f}",
                            f"{fair['repair']['dev'] / fair['ar']['dev']:.3f}", "–", "–", name]))
            out.append("")
            continue
        out += [row(["objective", "seeds", "test NELBO (mean ± s.e. over seeds)", "per seed", "× AR test CE",
                     "val loss at 500 / 1,000 / 1,500 / 2,000 (seed 1337)", "JSON"]), row(["---"] * 7)]
        for obj in (r["chosen"], "mdlm"):
            xs = [x for x in r["rows"] if x["name"] == obj and x["split"] == "test"]
            vals = [x["nelbo"] for x in xs]
            mean = sum(vals) / len(vals)
            se = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) / len(vals)) ** 0.5 if len(vals) > 1 else None
            first = next(x for x in xs if x["seed"] == min(x["seed"] for x in xs))
            curve = " / ".join(f"{v:.3f}" for i, v in first["val_curve"] if i > 0)
            out.append(row([obj, ", ".join(str(x["seed"]) for x in xs), pm(mean, se, ".4f"),
                            ", ".join(f"{v:.4f}" for v in vals), f"{mean / fair['ar']['test']:.3f}", curve, name]))
        d = r.get("summary", {}).get(f"{r['chosen']}_minus_mdlm_test")
        if d and d["se"] is not None:  # paired by training seed: the same data order and masks
            out.append(row([f"{r['chosen']} − mdlm, paired by seed", ", ".join(str(x["seed"]) for x in xs),
                            pm(d["mean"], d["se"], ".4f"), f"{d['min']:.4f} to {d['max']:.4f}", "–", "–", name]))
        for obj, key in (("repair (the ruler's diffusion)", "repair"), ("AR (the ruler's)", "ar")):
            out.append(row([obj, "1337", pm(fair[key]["test"], fair[key]["test_stderr"], ".4f") + " (s.e. over "
                            "windows)", "–", f"{fair[key]['test'] / fair['ar']['test']:.3f}", "–", fair["json"]]))
        out.append("")
    return out


def run_state(run: dict) -> str:
    """How far a run of ``bench epochs`` stands, for its table row: finished (""), stopped by the screen, or
    unfinished. A run that is never screened (diffusion, an AR recipe on its own shorter budget) has
    ``screen_iters`` null."""
    if run["finished"]:
        return ""
    return " (the screen's stop)" if run["reached_iters"] == run.get("screen_iters") else " (unfinished)"


def epochs(paths: list[str]) -> list[str]:
    """bench epochs: per subset, each run's best-dev point (its test loss there), each side's choice, the budget
    curve (each side early-stopped within E epochs, chosen on dev) and the crossover."""
    out = []
    for path in paths:
        data = read_json(Path(path), "bench epochs JSON")
        for sub in data["subsets"]:
            if not any(r["curve"] for r in sub["runs"]):
                out += [f"**{sub['train_tokens']:,} characters, up to {sub['epochs']:g} epochs**: not started", ""]
                continue
            out += [f"**{sub['train_tokens']:,} characters, up to {sub['epochs']:g} epochs** ({Path(path).name})", "",
                    row(["run (seed)", "trained to (epochs)", "best dev at epoch", "dev", "test"]), row(["---"] * 5)]
            for r in sub["runs"]:
                if r["curve"]:
                    b, last = r["best_dev"], r["curve"][-1]
                    state = run_state(r)
                    out.append(row([f"{r['recipe']} ({r['seed']})", f"{last['epochs']:g}{state}", f"{b['epochs']:g}",
                                    f"{b['dev']:.4f}", pm(b["test"], b["test_stderr"], ".4f")]))
            out += ["", row(["budget (epochs)", "AR: recipe, epoch", "AR test CE", "diffusion: recipe, epoch",
                             "diffusion test NELBO", "diffusion / AR"]), row(["---"] * 6)]
            for c in sub["budget_curve"]:
                a, d = c["ar"], c["diffusion"]
                out.append(row([f"{c['epochs']:g}", f"{a['recipe']}, {a['epochs']:g}" if a else "–",
                                f"{a['test']:.4f}" if a else "–", f"{d['recipe']}, {d['epochs']:g}" if d else "–",
                                f"{d['test']:.4f}" if d else "–",
                                f"{c['diffusion_over_ar']:.3f}" if c.get("diffusion_over_ar") else "–"]))
            cross = sub["crossover_epochs"]
            out += ["", f"crossover: {'none' if cross is None else f'{cross:g} epochs'}"]
            for name, s in sub["sides"].items():  # each side's chosen recipe over its training seeds
                if len(s.get("seeds", [])) > 1:
                    over = s["test_over_seeds"]
                    out.append(f"{name} ({s['recipe']}) over seeds {', '.join(map(str, s['seeds']))}: test "
                               + pm(over["mean"], over["se"], ".4f"))
            if sub.get("trend"):
                t = sub["trend"]
                out.append(f"trend (an extrapolation): diffusion's test loss falls {-t['slope_per_octave']:.4f} per "
                           f"doubling of epochs from {t['from_epochs']:g} to {t['to_epochs']:g}; that line reaches "
                           f"AR's best {t['target']:.4f} at {t['line_reaches_target_at_epochs']:.0f} epochs")
            out.append("")
    return out


def infill(paths: list[str]) -> list[str]:
    """bench infill: per hole length, each method's middle NLL, greedy accuracy and sampled fills (judge NLL of the
    window and of the seam, at the real middles' entropy)."""
    out = []
    for path in paths:
        data = read_json(Path(path), "bench infill JSON")
        ltr = data.get("left_to_right", {})
        out += [f"**{data['split']} split, windows of {data['window_len']} characters** ({Path(path).name}); left "
                "to right CE: " + ", ".join(f"{k} {v['ce']:.4f}" for k, v in ltr.items() if isinstance(v, dict)), "",
                row(["L", "method", "middle NLL (nats/char)", "greedy accuracy", "judge NLL at real entropy",
                     "seam NLL at real entropy", "passes / fill"]), row(["---"] * 7)]
        for r in data["rows"]:
            for k in data["methods"]:
                smp = r.get("sampled", {}).get(k, {})
                cells = [smp.get("judge_nll_at_real_entropy"), smp.get("seam_nll_at_real_entropy")]
                out.append(row([r["L"], k, pm(r["likelihood"][k]["mean"], r["likelihood"][k]["se"], ".3f"),
                                pm(r["greedy_accuracy"][k]["mean"], r["greedy_accuracy"][k]["se"], ".3f"),
                                *("–" if c is None else f"{c:.3f}" for c in cells),
                                f"{smp['passes_per_fill']:.0f}" if smp else "–"]))
                if k == "diffusion" and "diffusion_l2r" in r["likelihood"]:  # its exact left-to-right figure
                    exact = r["likelihood"]["diffusion_l2r"]
                    out.append(row([r["L"], "diffusion, left to right (exact)", pm(exact["mean"], exact["se"], ".3f"),
                                    "–", "–", "–", r["L"]]))
            if "real" in r:
                out.append(row([r["L"], "real text", "–", "–", f"{r['real']['judge_nll']['mean']:.3f}",
                                f"{r['real']['seam_nll']['mean']:.3f}", "–"]))
        out.append("")
    return out


def main(argv: list[str]) -> int:
    commands = {"quality": quality, "parallel": parallel, "fast": fast, "prime": prime, "epochs": epochs,
                "infill": infill}
    if len(argv) < 2 or argv[0] not in commands or (argv[0] == "fast" and len(argv) % 2 == 0):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    print("\n".join(commands[argv[0]](argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
