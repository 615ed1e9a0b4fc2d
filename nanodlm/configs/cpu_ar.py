# The quality protocol's AR model (bench quality, preset cpu): 4 layers, 4 heads, 128 wide, block 256, learned
# positions (pos_emb auto = learned for gpt2), 5,000 iterations of 12 x 256 characters: the protocol run whose bench
# hash is 5db8f2be. The starting point of `cpu_adapt`.
out_dir = "out-cpu-ar"
dataset = "shakespeare_char"
device = "cpu"
threads = 1  # one CPU thread: more oversubscribe a busy machine (README, "How long things take")
model_type = "gpt2"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
batch_size = 12
dropout = 0.0
learning_rate = 1e-3
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
eval_interval = 500
eval_iters = 20
log_interval = 10
always_save_checkpoint = False
