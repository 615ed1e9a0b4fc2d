"""Train (or reuse) the five runs ``bench infill`` compares, at the fair ruler's size and budget, in bench quality's
run cache (so the protocol and this script share them): the ruler's AR final (rope, lr 3e-3, dropout 0: its dev
choice), the same AR trained with objective=fim (fim_rate 0.5; and with half of those windows in SPM order), the
ruler's bidirectional diffusion model (repair, rope, lr 3e-3) and the ruler's judge. Equal compute: every contestant
trains 2,000 iterations of 12 x 256 tokens.

    python benchmarks/infill_runs.py [--work_dir=~/.cache/nanodlm/quality] [--launcher=../shared/bin/cpu-slot]
        [--lanes=1] [--seed=1337]

Prints one JSON line: {"ar": DIR, "fim": DIR, "fim_spm": DIR, "diffusion": DIR, "judge": DIR}.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from nanodlm.bench.presets import PRESETS
from nanodlm.bench.runs import PROTECTED, ensure_dataset, plan_run
from nanodlm.bench.search import Job, Lanes
from nanodlm.core.errors import UserError
from nanodlm.training.config import parse_overrides, read_config_file


def main(argv: list[str]) -> dict[str, str]:
    _, flags = parse_overrides(argv)
    unknown = set(flags) - {"work_dir", "launcher", "lanes", "seed"}
    if unknown:
        raise UserError(f"unknown key(s): {', '.join(sorted(unknown))} (work_dir, launcher, lanes, seed)")
    work_dir = Path(flags.get("work_dir", "~/.cache/nanodlm/quality")).expanduser()
    data_dir = work_dir / "data"
    ensure_dataset(data_dir, "shakespeare_char")
    preset = PRESETS["cpu"]
    model = {**preset["model"], "seed": int(flags.get("seed", 1337))}
    file, extra = preset["judge"]
    judge = {**{k: v for k, v in read_config_file(file).items() if k not in PROTECTED}, **extra, "model_type": "gpt2"}
    ar = {**model, "model_type": "gpt2", "pos_emb": "rope", "learning_rate": 3e-3, "dropout": 0.0}
    values = {"ar": ar, "fim": {**ar, "objective": "fim", "fim_rate": 0.5},
              # the paper's joint training: half of the FIM windows in SPM order (prefix next to the middle)
              "fim_spm": {**ar, "objective": "fim", "fim_rate": 0.5, "fim_spm_rate": 0.5},
              "diffusion": {**model, "model_type": "diffusion", "objective": "repair", "pos_emb": "rope",
                            "learning_rate": 3e-3, "copy_weight": 0.1},
              "judge": judge}
    lanes = Lanes(int(flags.get("lanes", 1)), shlex.split(flags.get("launcher", "")), work_dir / "jobs")
    for name in ("judge", "fim", "fim_spm", "ar", "diffusion"):  # the longest first
        plan = plan_run(name, values[name], work_dir, data_dir, "shakespeare_char", "cpu", False)
        lanes.submit(Job(name, "final", {}, plan))
    out = {job.role: job.run["out_dir"] for job in lanes.completed()}
    lanes.close()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
