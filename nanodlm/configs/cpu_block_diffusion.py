# Block diffusion (BD3-LM) on the CPU recipe: attention block-causal over blocks of 4 characters, each block
# denoised given the clean text before it, trained on BD3-LM's clipped schedule t ~ U(0.45, 0.95).
# On the quality protocol (block 256, 5,000 iterations) its NELBO is 1.11x the AR loss (BENCHMARKS.md,
# section 8); it writes well at one pass per character: nanodlm sample --out_dir=out-cpu-block-diffusion --steps=64
out_dir = "out-cpu-block-diffusion"
dataset = "shakespeare_char"
device = "cpu"
threads = 1  # one CPU thread: more oversubscribe a busy machine (README, "How long things take")
model_type = "diffusion"
objective = "repair"
pos_emb = "rope"
copy_weight = 0.1
diffusion_block = 4
mdlm_eps = 0.45
mdlm_t_max = 0.95
eval_interval = 250
eval_iters = 20
log_interval = 10
always_save_checkpoint = False
batch_size = 12
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
learning_rate = 2e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
