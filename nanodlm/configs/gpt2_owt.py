# GPT-2 small (124M) on OpenWebText, nanoGPT's recipe (config/train_gpt2.py): 8 GPUs under torchrun, bf16
# autocast, torch.compile, SDPA flash attention. Batch 12 x block 1024 x grad accum 5*8 = 491,520 tokens per
# iteration (gradient_accumulation_steps is global: 5 per GPU on 8), 600k iterations = 295B tokens.
#   nanodlm prepare openwebtext
#   torchrun --standalone --nproc_per_node=8 -m nanodlm train gpt2_owt
# Cost (README, "What the GPU recipes cost"): ~177 H100-hours at an assumed 40% MFU.
out_dir = "out-gpt2-owt"
dataset = "openwebtext"
device = "cuda"
dtype = "bfloat16"
compile = True
model_type = "gpt2"
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
bias = False
pos_emb = "learned"
dropout = 0.0
batch_size = 12
gradient_accumulation_steps = 40
learning_rate = 6e-4
max_iters = 600000
lr_decay_iters = 600000
min_lr = 6e-5
warmup_iters = 2000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
eval_interval = 1000
eval_iters = 200
log_interval = 10
