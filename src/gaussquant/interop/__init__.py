"""Bridges to other libraries' model layouts.

- diffusers.py: load a diffusers ``AutoencoderKL`` folder into a gaussquant UNet Autoencoder with a Gaussian
  bottleneck (to fine-tune it with TDC and convert it to GQ), and export the continuous model back.
"""
