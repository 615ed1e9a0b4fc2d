# Sampling preset "fast": `nanodlm sample fast --out_dir=BLOCK_DIFFUSION_RUN` (a block diffusion model, e.g.
# configs/cpu_block_diffusion.py). Threshold parallel decoding (Fast-dLLM): each pass commits every masked
# position whose drawn character has probability > parallel_threshold, at least one, inside the current block;
# finished blocks live in the exact KV cache. steps is a ceiling (one pass per character), not the cost.
# CANDIDATE: chosen by reasoning, not yet by measurement. BENCHMARKS.md section 10 gives the `bench parallel`
# command that measures it against cached AR; replace these values with the fastest configuration that meets the
# quality bar there (judge PPL <= 1.5x AR, entropy within 3% of real text).
sampler = "confidence"
steps = 256
parallel_threshold = 0.9
prior_weight = 0.0
