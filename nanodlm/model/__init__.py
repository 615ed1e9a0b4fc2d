"""The model: GPT (model.py), its config (config.py), attention masks and KV caches (attention.py).
Nothing of training."""
