"""The Autoencoder: encoder -> bottleneck -> decoder, for every bottleneck of the protocol (method.md 1, 7).

Works with both latent layouts: a UNet encoder gives channel-first ``(B, C, h, w)`` latents, a ViT encoder
token-last ``(B, L, C)``; the bottleneck keeps the layout (quantizers/base.py).

Turning a Gaussian VAE into a VQ-VAE is never done here: swap the bottleneck explicitly (convert.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gaussquant.quantizers.base import Bottleneck, BottleneckOutput

log = logging.getLogger(__name__)
_warned_unit_range = False


def check_pixel_range(x: Tensor) -> None:
    """Catch images given in [0, 255] or [0, 1] instead of [-1, 1] (one host sync).

    Any value outside [-1.5, 1.5] is an error (no [-1, 1] image gets there; [0, 255] pixels do). A batch whose
    values all lie in [0, 1] is allowed (it is valid [-1, 1] input, e.g. bright images) but logs a warning
    once per process, since [0, 1] images are the common mistake.
    """
    low, high = torch.aminmax(x.detach())
    low, high = float(low), float(high)
    if not (-1.5 <= low and high <= 1.5):
        hint = " ([0, 255] pixels? use x / 127.5 - 1)" if low >= 0 and high > 1.5 else ""
        raise ValueError(f"images must be in [-1, 1]; got values in [{low:.4g}, {high:.4g}]{hint}")
    global _warned_unit_range
    if low >= 0 and not _warned_unit_range:
        _warned_unit_range = True
        log.warning("every pixel value is in [0, 1]: if these images are in [0, 1], map them with x * 2 - 1; "
                    "the model expects [-1, 1]")


@dataclass
class AutoencoderOutput:
    """What :meth:`Autoencoder.forward` returns.

    Attributes:
        x_hat: reconstruction ``(B, 3, H, W)``, nominally in [-1, 1].
        bottleneck: the bottleneck's output (latent, indices, losses, statistics, posterior).
    """

    x_hat: Tensor
    bottleneck: BottleneckOutput


class Autoencoder(nn.Module):
    """Encoder + bottleneck + decoder.

    Args:
        encoder: images ``(B, 3, H, W)`` -> ``bottleneck.in_channels``-channel latents; must expose
            ``in_channels`` and ``downsample_factor``.
        bottleneck: any :class:`~gaussquant.quantizers.base.Bottleneck`.
        decoder: ``bottleneck.latent_channels``-channel latents -> images; exposes ``last_layer_weight``.
        convert_grayscale: repeat a single-channel input to 3 channels instead of raising.
    """

    def __init__(
        self, encoder: nn.Module, bottleneck: Bottleneck, decoder: nn.Module, *, convert_grayscale: bool = False
    ) -> None:
        super().__init__()
        enc_out = getattr(encoder, "out_channels", None)
        if enc_out is not None and enc_out != bottleneck.in_channels:
            raise ValueError(
                f"the encoder emits {enc_out} channels but the bottleneck takes {bottleneck.in_channels}; "
                "build the encoder with out_channels=bottleneck.in_channels (build_autoencoder does this)"
            )
        dec_in = getattr(decoder, "in_channels", None)
        if dec_in is not None and dec_in != bottleneck.latent_channels:
            raise ValueError(
                f"the decoder takes {dec_in} channels but the bottleneck gives {bottleneck.latent_channels}; "
                "build the decoder with in_channels=bottleneck.latent_channels"
            )
        self.encoder = encoder
        self.bottleneck = bottleneck
        self.decoder = decoder
        self.convert_grayscale = convert_grayscale

    @property
    def downsample_factor(self) -> int:
        """f: one latent token per f x f pixels."""
        return int(self.encoder.downsample_factor)

    @property
    def last_layer_weight(self) -> Tensor:
        """The decoder's last layer weight (for the VQGAN adaptive GAN weight)."""
        return self.decoder.last_layer_weight

    def check_images(self, x: Tensor) -> Tensor:
        """Validate ``(B, 3, H, W)`` float images with H, W multiples of f; convert grayscale if configured."""
        if not isinstance(x, Tensor):
            raise TypeError(f"images must be a torch.Tensor; got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(
                f"images must be a float tensor in [-1, 1]; got dtype {x.dtype}. "
                "Convert uint8 images with x.float() / 127.5 - 1."
            )
        if x.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W); got shape {tuple(x.shape)}")
        channels = getattr(self.encoder, "in_channels", 3)
        if x.shape[1] == 1 and channels == 3:
            if not self.convert_grayscale:
                raise ValueError(
                    "got grayscale images (B, 1, H, W); this model takes RGB (B, 3, H, W). Convert them "
                    "(x.expand(-1, 3, -1, -1)) or build the model with convert_grayscale=True."
                )
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != channels:
            raise ValueError(f"images must have {channels} channels; got shape {tuple(x.shape)}")
        f = self.downsample_factor
        h, w = x.shape[-2:]
        if h % f or w % f:
            raise ValueError(
                f"image height and width must be multiples of the downsampling factor {f}; got {h}x{w}. "
                f"Crop or resize to e.g. {max(f, h - h % f)}x{max(f, w - w % f)}."
            )
        return x

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> BottleneckOutput:
        """Images ``(B, 3, H, W)`` in [-1, 1] -> the bottleneck output (``z_hat``, indices, losses, ...).

        ``generator`` is handed to the bottleneck (the Gaussian ones draw their posterior sample from it);
        with None the bottleneck is called as ``bottleneck(h)``.
        """
        h = self.encoder(self.check_images(x))
        return self.bottleneck(h) if generator is None else self.bottleneck(h, generator=generator)

    def decode(self, z_hat: Tensor) -> Tensor:
        """Latents ``(B, C, h, w)`` or ``(B, L, C)`` with ``C = latent_channels`` -> images ``(B, 3, H, W)``."""
        return self.decoder(z_hat)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> AutoencoderOutput:
        """Images -> :class:`AutoencoderOutput` (``x_hat`` and the bottleneck output); see :meth:`encode`."""
        out = self.encode(x, generator)
        return AutoencoderOutput(x_hat=self.decode(out.z_hat), bottleneck=out)

    def _require_discrete(self, what: str) -> None:
        if not getattr(self.bottleneck, "is_discrete", False):
            raise TypeError(
                f"{what} needs a discrete bottleneck; {type(self.bottleneck).__name__} is continuous. "
                "Convert a Gaussian VAE to a GQ VQ-VAE first (gaussquant convert)."
            )

    def tokenize(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> int64 indices ``(B, G, h, w)`` (UNet) or ``(B, L, G)`` (ViT), values in [0, K).

        The pixel range is checked (:func:`check_pixel_range`): [0, 255] input is an error, [0, 1] a warning.
        """
        self._require_discrete("tokenize")
        x = self.check_images(x)
        check_pixel_range(x)
        return self.bottleneck.quantize(self.encoder(x))

    def detokenize(self, indices: Tensor) -> Tensor:
        """Indices from :meth:`tokenize` -> images ``(B, 3, H, W)``."""
        self._require_discrete("detokenize")
        return self.decode(self.bottleneck.dequantize(indices))

    def decode_posterior_mean(self, x: Tensor) -> Tensor:
        """The continuous reconstruction of a Gaussian or GQ model: decode the posterior mean.

        Runs the bottleneck once (to obtain its posterior) and decodes ``posterior.mean`` instead of
        ``z_hat``. Raises a TypeError if the bottleneck returns no posterior (VQ, FSQ, LFQ, BSQ, ...).
        """
        out = self.encode(x)
        if out.posterior is None:
            raise TypeError(
                f"{type(self.bottleneck).__name__} returns no posterior; decode_posterior_mean needs a "
                "Gaussian or Gaussian-Quant bottleneck"
            )
        return self.decode(out.posterior.mean)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Convenience: ``forward(x).x_hat`` without gradients."""
        return self.forward(x).x_hat
