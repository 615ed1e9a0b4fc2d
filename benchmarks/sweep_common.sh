# Shared by sweep.sh and sweep_samplers.sh (sourced, not run): arguments, data, the protocol's training
# flags, and helpers that train a set of variants concurrently, evaluate and judge.
# Expects: RESULTS_DIR [DEVICE] [ITERS] [JUDGE_ITERS] [NUM_SAMPLES] as "$@", and WORK_DEFAULT.
set -uo pipefail
res=${1:?results dir}; dev=${2:-cuda}; iters=${3:-5000}; jiters=${4:-4000}; ns=${5:-32}
mkdir -p "$res"; work=${WORK:-$WORK_DEFAULT}; data=$work/data; runs=$work/runs
nd="python3 -m nanodlm"
$nd prepare shakespeare_char --data_dir="$data" > "$res/prepare.log" 2>&1 || exit 1
# the `cpu` quality preset: 4 layers, 128 dim, block 256, batch 12, 5000 iterations
common=(--data_dir="$data" --dataset=shakespeare_char --device="$dev" --n_layer=4 --n_head=4 --n_embd=128
  --block_size=256 --batch_size=12 --dropout=0.0 --learning_rate=1e-3 --min_lr=1e-4 --warmup_iters=100
  --beta2=0.99 --max_iters="$iters" --lr_decay_iters="$iters" --eval_interval=500 --eval_iters=20
  --log_interval=50 --progress=False --plot=False --always_save_checkpoint=False)

train_all() {  # every entry of the associative array `variants` (name -> flags), plus the judge, concurrently
  for name in "${!variants[@]}"; do
    # shellcheck disable=SC2086
    $nd train "${common[@]}" ${variants[$name]} --out_dir="$runs/$name" > "$res/train_$name.log" 2>&1 &
  done
  $nd train judge --data_dir="$data" --device="$dev" --max_iters="$jiters" --lr_decay_iters="$jiters" \
    --progress=False --plot=False --out_dir="$runs/judge" > "$res/train_judge.log" 2>&1 &
  wait
  for name in "${!variants[@]}"; do cp "$runs/$name/metrics.jsonl" "$res/metrics_$name.jsonl" 2>/dev/null; done
}

judge() {  # model sampler steps [noise]
  local tag="$1_$2_$3${4:+_n$4}"
  $nd judge --judge="$runs/judge" --out_dir="$runs/$1" --ckpt=last --sampler="$2" --steps="$3" --noise="${4:-0}" \
    --num_samples="$ns" --length=256 --temperature=1.0 --seed=1 --device="$dev" \
    --json="$res/judge_$tag.json" > "$res/judge_$tag.log" 2>&1
}

evaluate() { $nd eval --out_dir="$runs/$1" --ckpt=last --device="$dev" --json="$res/eval_$1.json" > "$res/eval_$1.log" 2>&1; }
