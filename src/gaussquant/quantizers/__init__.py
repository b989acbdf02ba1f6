"""Bottlenecks: the Gaussian VAE bottleneck with TDC, Gaussian Quant, and the baselines."""
