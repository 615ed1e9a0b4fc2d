# The CPU recipe for diffusion: the `cpu` model (4 layers, 128 dim, block 64, batch 12, 2000 iters) trained
# with the defaults the sweep in BENCHMARKS.md chose: the repair objective, rotary positions, lr 2e-3.
# Sample with: nanodlm sample --out_dir=out-cpu-diffusion   (remask sampler, 64 steps, noise 1, prior_weight 0.7)
out_dir = "out-cpu-diffusion"
dataset = "shakespeare_char"
device = "cpu"
threads = 1  # one CPU thread: more oversubscribe a busy machine (README, "How long things take")
model_type = "diffusion"
objective = "repair"
pos_emb = "rope"
copy_weight = 0.1
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
