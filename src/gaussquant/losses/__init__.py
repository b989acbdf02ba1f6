"""Reconstruction, perceptual and adversarial losses, and the objective that weights them."""
