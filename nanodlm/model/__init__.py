"""The model: GPT and its config (model.py), attention masks and KV caches (attention.py). Nothing of training."""
