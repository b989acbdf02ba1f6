"""Training: configs, trainer, optimisation, checkpoints, EMA and distributed helpers."""
