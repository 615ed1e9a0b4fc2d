# The AR judge for `nanodlm judge`: a 2.7M-parameter character model of tiny shakespeare.
# Train it with one command:  nanodlm train judge   (presets resolve by bare name; writes out-judge/)
# It scores samples of any model trained on shakespeare_char; its block of 256 characters gives every
# scored character up to 256 characters of context (textstats.judge_nll slides the window beyond that).
out_dir = "out-judge"
dataset = "shakespeare_char"
device = "cpu"
threads = 1  # one CPU thread: more oversubscribe a busy machine (README, "How long things take")
eval_interval = 500
eval_iters = 20
log_interval = 10
always_save_checkpoint = False
batch_size = 12
block_size = 256
n_layer = 6
n_head = 6
n_embd = 192
dropout = 0.0
pos_emb = "rope"  # rope + lr 2e-3, as the tuned contestants: the judge must stay stronger than them
learning_rate = 2e-3
max_iters = 4000
lr_decay_iters = 4000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
