# GPT-2 small adapted to a masked diffusion LM, the DiffuGPT recipe (Gong et al. 2024, "Scaling Diffusion
# Language Models via Adaptation from Autoregressive Models", arXiv:2410.17891): start from GPT-2's weights, add
# [MASK], anneal attention from causal to full, shifted head (on by default when adapting), MDLM's objective.
# DiffuGPT-S used about 30B tokens; here 60k iterations of 512 x 1024 tokens = 31.5B. The anneal length,
# learning rate and schedule are our choices for this size, not the paper's numbers.
#   pip install -e ".[hf]" && nanodlm prepare openwebtext
#   torchrun --standalone --nproc_per_node=8 -m nanodlm train gpt2_adapt_diffusion
# Cost (README, "What the GPU recipes cost"): ~19 H100-hours at an assumed 40% MFU.
out_dir = "out-gpt2-adapt-diffusion"
init_from = "gpt2"
dataset = "openwebtext"
device = "cuda"
dtype = "bfloat16"
compile = True
model_type = "diffusion"
objective = "mdlm"
attn_anneal_iters = 6000
block_size = 1024
dropout = 0.0
batch_size = 16
gradient_accumulation_steps = 32
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 1000
max_iters = 60000
lr_decay_iters = 60000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
eval_interval = 2000
eval_iters = 100
log_interval = 10
