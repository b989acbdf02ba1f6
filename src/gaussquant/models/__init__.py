"""Encoders, decoders, the Autoencoder and the PatchGAN discriminator (docs/method.md section 7).

- layers.py: UNet and ViT building blocks.
- unet.py: UNetEncoder / UNetDecoder (SD-family VAE layout; channel-first latents).
- vit.py: ViTEncoder / ViTDecoder (BSQ-ViT style; token-last latents).
- discriminator.py: PatchDiscriminator with ActNorm / BatchNorm / GroupNorm.
- autoencoder.py: Autoencoder (encoder + bottleneck + decoder) and AutoencoderOutput.
- presets.py: ARCH_PRESETS, ModelConfig, build_encoder_decoder, build_autoencoder.
"""
