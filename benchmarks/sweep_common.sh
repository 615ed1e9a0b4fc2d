# Shared by sweep.sh and sweep_samplers.sh (sourced, not run): arguments, data, the protocol's training
# flags, and helpers that train a set of variants concurrently, evaluate and judge.
# Expects: RESULTS_DIR [DEVICE] [ITERS] [JUDGE_ITERS] [NUM_SAMPLES] as "$@", and WORK_DEFAULT.
set -uo pipefail
res=${1:?results dir}; dev=${2:-cuda}; iters=${3:-5000}; jiters=${4:-4000}; ns=${5:-32}
mkdir -p "$res"; work=${WORK:-$WORK_DEFAULT}; data=$work/data; runs=$work/runs
nd="python3 -m nanodlm"
$nd prepare shakespeare_char --data_dir="$data" > "$res/prepare.log" 2>&1 || exit 1
# Every knob is pinned to the value it had when BENCHMARKS.md section 2 was measured (commit ba425e2), so a
# later change of a default cannot change what these scripts measure; a variant's flags come later and win.
# the `cpu` quality preset: 4 layers, 128 dim, block 256, batch 12, 5000 iterations
common=(--data_dir="$data" --dataset=shakespeare_char --device="$dev" --dtype=auto --compile=False --seed=1337
  --n_layer=4 --n_head=4 --n_embd=128 --block_size=256 --batch_size=12 --gradient_accumulation_steps=1
  --dropout=0.0 --bias=False --pos_emb=auto --qk_norm=False
  --objective=seed --penalty_keep_mask=0.25 --penalty_mask_correct=0.5 --mdlm_eps=1e-3 --mdlm_t_max=1.0
  --repair_rate_max=0.1 --copy_weight=0.0 --diffusion_block=0
  --learning_rate=1e-3 --min_lr=1e-4 --warmup_iters=100 --decay_lr=True --weight_decay=0.1 --beta1=0.9
  --beta2=0.99 --grad_clip=1.0 --max_iters="$iters" --lr_decay_iters="$iters" --eval_interval=500 --eval_iters=20
  --log_interval=50 --progress=False --plot=False --always_save_checkpoint=False)
# configs/judge.py as it was then, spelled out
judge_flags=(--data_dir="$data" --dataset=shakespeare_char --device="$dev" --dtype=auto --compile=False --seed=1337
  --model_type=gpt2 --n_layer=6 --n_head=6 --n_embd=192 --block_size=256 --batch_size=12
  --gradient_accumulation_steps=1 --dropout=0.0 --bias=False --pos_emb=auto --qk_norm=False
  --learning_rate=1e-3 --min_lr=1e-4 --warmup_iters=100 --decay_lr=True --weight_decay=0.1 --beta1=0.9
  --beta2=0.99 --grad_clip=1.0 --max_iters="$jiters" --lr_decay_iters="$jiters" --eval_interval=500
  --eval_iters=20 --log_interval=10 --progress=False --plot=False --always_save_checkpoint=False)
# the sampler options of that commit: no reveal-order knobs yet (= order sampled, noise_decay 1, prior_weight 0);
# the judge's best checkpoint (judge_ckpt's default then; the fair protocol of `bench quality` uses last)
sampling=(--judge_ckpt=best --ckpt=last --temperature=1.0 --top_k=none --top_p=none --schedule=cosine
  --order=sampled --noise_decay=1.0 --prior_weight=0.0 --remask_frac=0.2 --threshold=0.5)

train_all() {  # every entry of the associative array `variants` (name -> flags), plus the judge, concurrently
  for name in "${!variants[@]}"; do
    # shellcheck disable=SC2086
    $nd train "${common[@]}" ${variants[$name]} --out_dir="$runs/$name" > "$res/train_$name.log" 2>&1 &
  done
  $nd train "${judge_flags[@]}" --out_dir="$runs/judge" > "$res/train_judge.log" 2>&1 &
  wait
  for name in "${!variants[@]}"; do cp "$runs/$name/metrics.jsonl" "$res/metrics_$name.jsonl" 2>/dev/null; done
}

judge() {  # model sampler steps [noise]
  local tag="$1_$2_$3${4:+_n$4}"
  $nd judge --judge="$runs/judge" --out_dir="$runs/$1" "${sampling[@]}" --sampler="$2" --steps="$3" --noise="${4:-0}" \
    --num_samples="$ns" --length=256 --temperature=1.0 --seed=1 --device="$dev" \
    --json="$res/judge_$tag.json" > "$res/judge_$tag.log" 2>&1
}

evaluate() {  # 20 batches of 12 = 240 evenly spaced val windows, 4 stratified draws each
  $nd eval --out_dir="$runs/$1" --ckpt=last --split=val --num_batches=20 --batch_size=12 --n_draws=4 --seed=1337 \
    --device="$dev" --json="$res/eval_$1.json" > "$res/eval_$1.log" 2>&1
}
