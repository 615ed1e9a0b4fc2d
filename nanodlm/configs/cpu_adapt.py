# AR -> diffusion on the CPU: adapt the `cpu_ar` model (train it first: nanodlm train cpu_ar) into a diffusion
# model in 1,250 iterations: [MASK] row, shifted head, attention annealed from causal to full over 200 iterations,
# the repair objective; the same batch and optimizer as the AR run. runs/adapt_cpu.sh does both steps.
# Add --diffusion_block=4 (and another out_dir) for block diffusion.
out_dir = "out-cpu-adapt"
init_from = "out-cpu-ar"
dataset = "shakespeare_char"
device = "cpu"
threads = 1  # one CPU thread: more oversubscribe a busy machine (README, "How long things take")
model_type = "diffusion"
objective = "repair"
copy_weight = 0.1
attn_anneal_iters = 200
block_size = 256
batch_size = 12
dropout = 0.0
learning_rate = 1e-3
max_iters = 1250
lr_decay_iters = 1250
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
eval_interval = 250
eval_iters = 20
log_interval = 10
always_save_checkpoint = False
