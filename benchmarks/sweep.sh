#!/usr/bin/env bash
# The diffusion design sweep behind BENCHMARKS.md section 2 (first half): the AR baseline, the judge and
# diffusion variants (objective, position encoding, learning rate, qk_norm) at the `cpu` protocol size,
# trained concurrently, then NELBO and judged samples for each sampler and step count.
# Usage: bash benchmarks/sweep.sh RESULTS_DIR [DEVICE] [ITERS] [JUDGE_ITERS] [NUM_SAMPLES]
WORK_DEFAULT=/tmp/nanodlm-sweep
source "$(dirname "$0")/sweep_common.sh"
declare -A variants=(
  [ar]="--model_type=gpt2"
  [seed]="--model_type=diffusion --objective=seed --pos_emb=rope"
  [mdlm_learned]="--model_type=diffusion --objective=mdlm --pos_emb=learned"
  [mdlm]="--model_type=diffusion --objective=mdlm --pos_emb=rope"
  [mdlm_lr2e3]="--model_type=diffusion --objective=mdlm --pos_emb=rope --learning_rate=2e-3"
  [mdlm_qk_lr3e3]="--model_type=diffusion --objective=mdlm --pos_emb=rope --qk_norm=True --learning_rate=3e-3"
  [repair]="--model_type=diffusion --objective=repair --pos_emb=rope --copy_weight=0.1"
)
train_all
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
