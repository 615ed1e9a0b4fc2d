#!/usr/bin/env bash
# The main job end to end on a CPU: install, prepare tiny-shakespeare, train the CPU recipes (a few minutes each
# on a busy 2-core machine, see the README), sample. The corpus is downloaded once (sha256-checked)
# unless NANODLM_DATA_MIRROR names a folder holding tinyshakespeare.txt. Rerunning it retrains (--overwrite=True).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
if [ -z "${NANODLM_DATA_MIRROR:-}" ] && [ -f ../shared/data/tinyshakespeare.txt ]; then
  export NANODLM_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
nanodlm prepare shakespeare_char
nanodlm train cpu --overwrite=True                    # autoregressive baseline -> out-cpu/ (replaced on a rerun)
nanodlm sample --out_dir=out-cpu --num_samples=2 --max_new_tokens=300
nanodlm train cpu_diffusion --overwrite=True          # diffusion (repair objective) -> out-cpu-diffusion/
nanodlm sample --out_dir=out-cpu-diffusion --num_samples=2 --length=64 --verbose
