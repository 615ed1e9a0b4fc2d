#!/usr/bin/env bash
# Train the quality protocol's AR model on the CPU, adapt it to diffusion (and to block diffusion), sample both.
# Afterwards: nanodlm eval --out_dir=out-cpu-adapt
set -euo pipefail
cd "$(dirname "$0")/.."
python -m nanodlm prepare shakespeare_char
[ -f out-cpu-ar/ckpt.pt ] || python -m nanodlm train cpu_ar
python -m nanodlm train cpu_adapt
python -m nanodlm train cpu_adapt --diffusion_block=4 --out_dir=out-cpu-adapt-block4
python -m nanodlm sample --out_dir=out-cpu-adapt --length=256 --num_samples=2
python -m nanodlm sample --out_dir=out-cpu-adapt-block4 --length=256 --num_samples=2
