"""Runs on disk: checkpoints (weights + JSON metadata), the run directory and its lock, pretrained GPT-2 weights."""
