#!/usr/bin/env bash
# Second sweep (BENCHMARKS.md section 2, second half): the best objectives at learning rate 2e-3/3e-3 and
# the samplers' reveal-order noise (Gumbel on the confidence order, annealed). Same protocol as sweep.sh.
# Usage: bash benchmarks/sweep_samplers.sh RESULTS_DIR [DEVICE] [ITERS] [JUDGE_ITERS] [NUM_SAMPLES]
WORK_DEFAULT=/tmp/nanodlm-sweep2
source "$(dirname "$0")/sweep_common.sh"
big=${BIG_STEPS:-256}; mid=${MID_STEPS:-64}
declare -A variants=(
  [ar]="--model_type=gpt2"
  [mdlm_lr2e3]="--model_type=diffusion --objective=mdlm --pos_emb=rope --learning_rate=2e-3"
  [mdlm_lr3e3]="--model_type=diffusion --objective=mdlm --pos_emb=rope --learning_rate=3e-3"
  [repair_lr2e3]="--model_type=diffusion --objective=repair --pos_emb=rope --copy_weight=0.1 --learning_rate=2e-3"
  [repair_lr2e3_r02]="--model_type=diffusion --objective=repair --pos_emb=rope --copy_weight=0.1 --repair_rate_max=0.2 --learning_rate=2e-3"
)
train_all
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
