# MDLM's OpenWebText setup (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models",
# arXiv:2406.07524; values from the configs of github.com/kuleshov-group/mdlm: configs/config.yaml,
# model/small.yaml, lr_scheduler/constant_warmup.yaml): 12 layers, 12 heads, 768 wide, context 1024, rotary
# positions, no time conditioning, dropout 0.1; global batch 512 sequences (524,288 tokens), 1M steps
# (524B tokens); AdamW lr 3e-4, betas (0.9, 0.999), eps 1e-8, no weight decay, 2,500 warmup steps then a
# constant rate; gradient clipping 1.0; bf16. Differences, and what is uncertain:
# - MDLM keeps an EMA of the weights (0.9999) and samples/evaluates with it: nanodlm has no EMA.
# - MDLM's backbone is a DiT with untied input/output embeddings (~169M parameters with them); ours is GPT-2's
#   block with tied embeddings (124M). Its noise schedule is log-linear, alpha_t = 1 - (1 - eps) t, which is
#   our linear alpha_t = 1 - t up to eps = 1e-3.
# - The paper's OpenWebText tables compare models at 262B tokens as we recall them, which is 500k steps at this
#   batch, half of the config's 1M; stop at max_iters=500000 to compare with those numbers.
# - MDLM splits OpenWebText's last 100k documents off as validation; `prepare openwebtext` uses nanoGPT's random
#   0.05%, so validation numbers are comparable in kind, not digit for digit.
#   torchrun --standalone --nproc_per_node=8 -m nanodlm train gpt2_owt_diffusion
# Cost (README, "What the GPU recipes cost"): ~315 H100-hours for 1M steps at an assumed 40% MFU.
out_dir = "out-gpt2-owt-diffusion"
dataset = "openwebtext"
device = "cuda"
dtype = "bfloat16"
compile = True
model_type = "diffusion"
objective = "mdlm"
mdlm_eps = 1e-3
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
bias = False
pos_emb = "rope"
dropout = 0.1
batch_size = 16
gradient_accumulation_steps = 32
learning_rate = 3e-4
min_lr = 3e-4
warmup_iters = 2500
max_iters = 1000000
lr_decay_iters = 1000000
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0
eval_interval = 5000
eval_iters = 100
log_interval = 10
