#!/usr/bin/env bash
# Reveal-order sweep (BENCHMARKS.md section 8): one trained diffusion model, one judge, many sampler settings.
# Each row is one `nanodlm judge` call (32 x 256 characters, temperature 1, seed 1, last checkpoints) and one
# JSON file in OUT. Usage: bash benchmarks/sweep_reveal_order.sh DIFFUSION_RUN JUDGE_RUN OUT [DEVICE]
set -euo pipefail
run=$1; judge=$2; out=$3; device=${4:-cpu}
mkdir -p "$out"
rows=(
  "ancestral|--sampler=ancestral"
  "remask_w0|--sampler=remask --prior_weight=0"
  "remask_w0_noise4|--sampler=remask --prior_weight=0 --noise=4"
  "remask_w0_noise16|--sampler=remask --prior_weight=0 --noise=16"
  "remask_w0_entropy|--sampler=remask --prior_weight=0 --order=entropy --noise=0"
  "remask_w0_margin|--sampler=remask --prior_weight=0 --order=margin --noise=0"
  "remask_w0_warm|--sampler=remask --prior_weight=0 --noise=1000 --noise_decay=8"
  "confidence_w0_warm|--sampler=confidence --prior_weight=0 --noise=1000 --noise_decay=8"
  "remask_w0.5|--sampler=remask --prior_weight=0.5"
  "remask_w0.6|--sampler=remask --prior_weight=0.6"
  "remask_w0.7|--sampler=remask --prior_weight=0.7"
  "remask_w0.8|--sampler=remask --prior_weight=0.8"
  "remask_w0.9|--sampler=remask --prior_weight=0.9"
  "remask_w1|--sampler=remask --prior_weight=1"
  "confidence_w0.7|--sampler=confidence --prior_weight=0.7"
  "remask_w0.7_32|--sampler=remask --prior_weight=0.7 --steps=32"
  "remask_w0.7_128|--sampler=remask --prior_weight=0.7 --steps=128"
)
for row in "${rows[@]}"; do
  name=${row%%|*}; flags=${row#*|}
  # shellcheck disable=SC2086
  nanodlm judge --judge="$judge" --judge_ckpt=last --out_dir="$run" --ckpt=last --num_samples=32 --length=256 \
    --steps=64 --seed=1 --device="$device" $flags --json="$out/$name.json" > /dev/null
  python - "$out/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, real = r["samples"], r["real"]
print(f"{sys.argv[2]:22s} judge PPL {s['judge_ppl']:7.2f}  entropy {s['entropy_bits']:.3f} "
      f"({100 * (s['entropy_bits'] / real['entropy_bits'] - 1):+.1f}% vs real)  distinct-4 {s['distinct_4']:.3f}")
PY
done
