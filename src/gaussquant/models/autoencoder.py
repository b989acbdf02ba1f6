"""The Autoencoder: encoder -> bottleneck -> decoder, for every bottleneck of the protocol (docs/method.md sections 1, 7).

Works with both latent layouts: a UNet encoder gives channel-first ``(B, C, h, w)`` latents, a ViT encoder
token-last ``(B, L, C)``; the bottleneck keeps the layout (quantizers/base.py).

Turning a Gaussian VAE into a VQ-VAE is never done here: swap the bottleneck explicitly (convert.py).

The model knows what it is: :attr:`Autoencoder.config` holds the :class:`ModelConfig` it was built from and
its bottleneck's own typed config, so ``model.save_pretrained(dir)`` needs no config arguments and
``Autoencoder.from_pretrained(dir_or_repo_id)`` returns the model (the file format and the Hugging Face Hub
code live in ``gaussquant.pretrained``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from gaussquant.quantizers.base import Bottleneck, BottleneckOutput, require_discrete

if TYPE_CHECKING:  # pragma: no cover
    from gaussquant.models.presets import ModelConfig
    from gaussquant.quantizers.build import BottleneckConfig


@dataclass(frozen=True)
class AutoencoderConfig:
    """What an :class:`Autoencoder` is: ``model`` (architecture and image size; None for an autoencoder
    assembled by hand from its own encoder and decoder) and ``bottleneck`` (e.g. a ``GQConfig``).
    These are the ``"model"`` and ``"bottleneck"`` sections of a saved ``config.json``."""

    model: "ModelConfig | None"
    bottleneck: "BottleneckConfig"

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
        convert_grayscale: repeat a single-channel input to 3 channels instead of raising (default: the
            model config's, else False).
        model_config: the :class:`~gaussquant.models.presets.ModelConfig` the encoder and decoder were built
            from (``build_autoencoder`` passes it); needed to save the model.

    Attributes:
        metadata: the extra ``config.json`` keys of a loaded model (``step``, ``train``, ``conversion``,
            ``metrics``, ...; empty for a model built in code).
    """

    def __init__(
        self, encoder: nn.Module, bottleneck: Bottleneck, decoder: nn.Module, *,
        convert_grayscale: bool | None = None, model_config: "ModelConfig | None" = None,
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
        if convert_grayscale is None:
            convert_grayscale = bool(model_config.convert_grayscale) if model_config is not None else False
        self.convert_grayscale = convert_grayscale
        self.model_config = model_config
        self.metadata: dict[str, Any] = {}

    @property
    def config(self) -> AutoencoderConfig:
        """The model config and the bottleneck's typed config (exactly what this model does)."""
        return AutoencoderConfig(model=self.model_config, bottleneck=self.bottleneck.config)

    def save_pretrained(self, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None,
                        metrics: dict[str, Any] | None = None, model_card: bool = True) -> Path:
        """Write ``config.json``, ``model.safetensors`` (and a model card ``README.md``) into ``directory``.

        ``extra``: more JSON-safe keys for config.json; ``metrics``: measured numbers (e.g. the result of
        ``gaussquant.evaluate``) stored under ``"metrics"`` and shown in the model card. See
        ``gaussquant.pretrained.save_model``.
        """
        from gaussquant.pretrained import save_model

        return save_model(self, directory, extra=extra, metrics=metrics, model_card=model_card)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Save this model to a temporary folder and upload it to the Hugging Face Hub repo ``repo_id``.

        Needs the ``hub`` extra (``pip install 'gaussquant[hub]'``); keyword arguments as in
        ``gaussquant.pretrained.hub.push_to_hub`` (``private``, ``token``, ``commit_message``, ``metrics``).
        Returns the URL of the commit.
        """
        from gaussquant.pretrained.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                        use_ema: bool = False, **hub_kwargs: Any) -> "Autoencoder":
        """Rebuild a saved model (eval mode) from a local folder or a Hugging Face Hub repo id.

        Args:
            path_or_repo_id: a ``save_pretrained`` folder, a checkpoint step folder, a training run folder, or
                ``"user/repo"`` (downloaded, or read from the Hub cache offline; needs the ``hub`` extra).
            map_location: device of the returned model.
            use_ema: load the EMA weights of a training checkpoint.
            hub_kwargs: ``revision``, ``cache_dir``, ``token``, ``local_files_only`` for a Hub repo id.

        Returns:
            The model; ``model.metadata`` holds the rest of its ``config.json`` (step, conversion, metrics).
        """
        from gaussquant.pretrained import load_model

        return load_model(path_or_repo_id, map_location=map_location, use_ema=use_ema, **hub_kwargs)

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

    def tokenize(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> int64 indices ``(B, G, h, w)`` (UNet) or ``(B, L, G)`` (ViT), values in [0, K).

        The pixel range is checked (:func:`check_pixel_range`): [0, 255] input is an error, [0, 1] a warning.
        """
        require_discrete(self.bottleneck, "tokenize")
        x = self.check_images(x)
        check_pixel_range(x)
        return self.bottleneck.quantize(self.encoder(x))

    def detokenize(self, indices: Tensor) -> Tensor:
        """Indices from :meth:`tokenize` -> images ``(B, 3, H, W)``."""
        require_discrete(self.bottleneck, "detokenize")
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
