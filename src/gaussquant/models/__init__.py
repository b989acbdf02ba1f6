"""Encoders, decoders, the Autoencoder and the PatchGAN discriminator."""
