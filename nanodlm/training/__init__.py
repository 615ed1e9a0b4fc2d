"""Training: the config (TrainConfig, --key=value parsing, presets), the loop, one step, AR adaptation, torchrun."""
