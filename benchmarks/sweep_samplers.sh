#!/usr/bin/env bash
# Second sweep: the best objectives from benchmarks/sweep.sh at learning rate 2e-3/3e-3, and the samplers'
# reveal-order noise (Gumbel on the confidence order, annealed). Same protocol size as sweep.sh.
# Usage: bash benchmarks/sweep_samplers.sh RESULTS_DIR [DEVICE] [ITERS] [JUDGE_ITERS] [NUM_SAMPLES]
set -uo pipefail
res=${1:?results dir}; dev=${2:-cuda}; iters=${3:-5000}; jiters=${4:-4000}; ns=${5:-32}
big=${BIG_STEPS:-256}; mid=${MID_STEPS:-64}
mkdir -p "$res"; work=${WORK:-/tmp/nanodlm-sweep2}; data=$work/data; runs=$work/runs
nd="python3 -m nanodlm"
$nd prepare shakespeare_char --data_dir="$data" > "$res/prepare.log" 2>&1 || exit 1
common=(--data_dir="$data" --dataset=shakespeare_char --device="$dev" --n_layer=4 --n_head=4 --n_embd=128
  --block_size=256 --batch_size=12 --dropout=0.0 --learning_rate=1e-3 --min_lr=1e-4 --warmup_iters=100
  --beta2=0.99 --max_iters="$iters" --lr_decay_iters="$iters" --eval_interval=500 --eval_iters=20
  --log_interval=50 --progress=False --plot=False --always_save_checkpoint=False)
declare -A variants=(
  [ar]="--model_type=gpt2"
  [mdlm_lr2e3]="--model_type=diffusion --objective=mdlm --learning_rate=2e-3"
  [mdlm_lr3e3]="--model_type=diffusion --objective=mdlm --learning_rate=3e-3"
  [repair_lr2e3]="--model_type=diffusion --objective=repair --copy_weight=0.1 --learning_rate=2e-3"
  [repair_lr2e3_r02]="--model_type=diffusion --objective=repair --copy_weight=0.1 --repair_rate_max=0.2 --learning_rate=2e-3"
)
for name in "${!variants[@]}"; do
  # shellcheck disable=SC2086
  $nd train "${common[@]}" ${variants[$name]} --out_dir="$runs/$name" > "$res/train_$name.log" 2>&1 &
done
$nd train judge --data_dir="$data" --device="$dev" --max_iters="$jiters" --lr_decay_iters="$jiters" \
  --progress=False --plot=False --out_dir="$runs/judge" > "$res/train_judge.log" 2>&1 &
wait
for name in "${!variants[@]}"; do cp "$runs/$name/metrics.jsonl" "$res/metrics_$name.jsonl" 2>/dev/null; done
judge() {  # model sampler steps noise
  $nd judge --judge="$runs/judge" --out_dir="$runs/$1" --ckpt=last --sampler="$2" --steps="$3" --noise="$4" \
    --num_samples="$ns" --length=256 --temperature=1.0 --seed=1 --device="$dev" \
    --json="$res/judge_$1_$2_$3_n$4.json" > "$res/judge_$1_$2_$3_n$4.log" 2>&1
}
evaluate() { $nd eval --out_dir="$runs/$1" --ckpt=last --device="$dev" --json="$res/eval_$1.json" > "$res/eval_$1.log" 2>&1; }
(evaluate ar; judge ar seed 1 0) &
for name in "${!variants[@]}"; do
  [ "$name" = ar ] && continue
  (
    evaluate "$name"
    judge "$name" ancestral "$mid" 0
    for n in 0.5 1 2; do judge "$name" confidence "$mid" $n; done
    case $name in repair*) for n in 0.5 1 2; do judge "$name" remask "$mid" $n; done ;; esac
  ) &
done
(  # steps for the candidates
  for s in 16 32 128 $big; do judge repair_lr2e3 remask $s 1; judge mdlm_lr2e3 confidence $s 1; done
) &
wait
echo sweep done
