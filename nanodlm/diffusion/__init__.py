"""Diffusion math, tensors in and out: corruption, objectives, NELBO (diffusion.py), TiDAR (tidar.py), diagnostics."""
