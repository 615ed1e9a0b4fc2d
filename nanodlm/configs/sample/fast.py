# Sampling preset "fast": `nanodlm sample fast --out_dir=RUN`, measured on diffusion-4195ee47 (block 4), confidence 256 steps.
# MEASURED (parallel-dev-block4-cpu-2026-12-03.json chose, parallel-test-block4-cpu-2026-12-03.json reports): the fastest configuration within the quality bar on dev.
# Quality bar: judge PPL <= 1.5x cached AR and entropy within 3% of real text. Test, report seeds:
# judge PPL 6.33 (1.38x AR), entropy -3.2% vs real, 249 passes per 256 chars, 0.60x cached AR chars/s at batch 1, 0.46x at batch 16.
# On test it misses the bar; it is SLOWER than cached AR at batch 1.
# Regenerate: python benchmarks/tables.py fast DEV.json TEST.json [DEV.json TEST.json ...]
sampler = 'confidence'
steps = 256
schedule = 'cosine'
parallel_threshold = 0.9
prior_weight = 0.0
