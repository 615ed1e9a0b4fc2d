#!/usr/bin/env bash
# Reveal-order sweep (BENCHMARKS.md section 8): one trained diffusion model, one judge, many sampler settings.
# Each row is one `nanodlm judge` call (32 x 256 characters, temperature 1, seed 1, last checkpoints) and one
# JSON file in OUT. Usage: bash benchmarks/sweep_reveal_order.sh DIFFUSION_RUN JUDGE_RUN OUT [DEVICE]
set -euo pipefail
run=$1; judge=$2; out=$3; device=${4:-cpu}
mkdir -p "$out"
# every sampler knob pinned to its value when BENCHMARKS.md section 8 was measured (commit 5bf591d); a row's
# flags come after these and win
base=(--judge_ckpt=last --ckpt=last --sampler=remask --steps=64 --temperature=1.0 --top_k=none --top_p=none
  --schedule=cosine --noise=1.0 --order=sampled --noise_decay=1.0 --prior_weight=0.0 --remask_frac=0.2
  --threshold=0.5 --num_samples=32 --length=256 --seed=1)
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
  python3 -m nanodlm judge --judge="$judge" --out_dir="$run" "${base[@]}" --device="$device" $flags \
    --json="$out/$name.json" > /dev/null
  python - "$out/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, real = r["samples"], r["real"]
print(f"{sys.argv[2]:22s} judge PPL {s['judge_ppl']:7.2f}  entropy {s['entropy_bits']:.3f} "
      f"({100 * (s['entropy_bits'] / real['entropy_bits'] - 1):+.1f}% vs real)  distinct-4 {s['distinct_4']:.3f}")
PY
done
