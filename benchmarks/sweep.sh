#!/usr/bin/env bash
# The diffusion design sweep behind BENCHMARKS.md's "objective x sampler x steps" table: trains the AR
# baseline, the judge and several diffusion variants at the `cpu` protocol size (4 layers, 128 dim,
# block 256, batch 12, 5000 iters), all concurrently, then evaluates NELBO and judges samples for each
# sampler and step count. Usage: bash benchmarks/sweep.sh RESULTS_DIR [DEVICE] [ITERS] [JUDGE_ITERS] [NUM_SAMPLES]
set -uo pipefail
res=${1:?results dir}; dev=${2:-cuda}; iters=${3:-5000}; jiters=${4:-4000}; ns=${5:-32}
mkdir -p "$res"; work=${WORK:-/tmp/nanodlm-sweep}; data=$work/data; runs=$work/runs
nd="python3 -m nanodlm"
$nd prepare shakespeare_char --data_dir="$data" > "$res/prepare.log" 2>&1 || exit 1
common=(--data_dir="$data" --dataset=shakespeare_char --device="$dev" --n_layer=4 --n_head=4 --n_embd=128
  --block_size=256 --batch_size=12 --dropout=0.0 --learning_rate=1e-3 --min_lr=1e-4 --warmup_iters=100
  --beta2=0.99 --max_iters="$iters" --lr_decay_iters="$iters" --eval_interval=500 --eval_iters=20
  --log_interval=50 --progress=False --plot=False --always_save_checkpoint=False)
declare -A variants=(
  [ar]="--model_type=gpt2"
  [seed]="--model_type=diffusion --objective=seed"
  [mdlm_learned]="--model_type=diffusion --objective=mdlm --pos_emb=learned"
  [mdlm]="--model_type=diffusion --objective=mdlm"
  [mdlm_lr2e3]="--model_type=diffusion --objective=mdlm --learning_rate=2e-3"
  [mdlm_qk_lr3e3]="--model_type=diffusion --objective=mdlm --qk_norm=True --learning_rate=3e-3"
  [repair]="--model_type=diffusion --objective=repair --copy_weight=0.1"
)
for name in "${!variants[@]}"; do
  # shellcheck disable=SC2086
  $nd train "${common[@]}" ${variants[$name]} --out_dir="$runs/$name" > "$res/train_$name.log" 2>&1 &
done
$nd train judge --data_dir="$data" --device="$dev" --max_iters="$jiters" --lr_decay_iters="$jiters" \
  --progress=False --plot=False --out_dir="$runs/judge" > "$res/train_judge.log" 2>&1 &
wait
for name in "${!variants[@]}"; do cp "$runs/$name/metrics.jsonl" "$res/metrics_$name.jsonl" 2>/dev/null; done
judge() {  # model sampler steps
  $nd judge --judge="$runs/judge" --out_dir="$runs/$1" --ckpt=last --sampler="$2" --steps="$3" --num_samples="$ns" \
    --length=256 --temperature=1.0 --seed=1 --device="$dev" --json="$res/judge_$1_$2_$3.json" \
    > "$res/judge_$1_$2_$3.log" 2>&1
}
evaluate() { $nd eval --out_dir="$runs/$1" --ckpt=last --device="$dev" --json="$res/eval_$1.json" > "$res/eval_$1.log" 2>&1; }
(evaluate ar; judge ar seed 1) &
for name in "${!variants[@]}"; do
  [ "$name" = ar ] && continue
  (
    evaluate "$name"
    for s in 16 64 256; do judge "$name" ancestral $s; done
    case $name in
      seed) for s in 16 64; do judge "$name" seed $s; done ;;
      mdlm|repair|mdlm_qk_lr3e3|mdlm_lr2e3)
        for s in 32 128; do judge "$name" ancestral $s; done
        for s in 16 64 256; do judge "$name" confidence $s; judge "$name" remask $s; done ;;
    esac
  ) &
done
wait
echo sweep done
