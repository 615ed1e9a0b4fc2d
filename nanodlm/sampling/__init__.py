"""Sampling: the samplers and their parts, AR, block-wise and speculative decoding, ``generate``, trajectories."""
