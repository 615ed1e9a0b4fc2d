"""Data: corpora -> token files (prepare), tokenizers, the prepared dataset folder, batches; HF corpora (hf.py)."""
