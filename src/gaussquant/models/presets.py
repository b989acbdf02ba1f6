"""Architecture presets and the typed model config (docs/method.md section 7; chosen by type, not by string).

A preset is a small frozen dataclass (:class:`UNetArch` or :class:`ViTArch`); ``ARCH_PRESETS`` maps names to
them. :class:`ModelConfig` picks one by name and adds the run-specific sizes (image size, dropout). The
builders size the encoder output to ``bottleneck.in_channels`` (2 x z_channels for Gaussian bottlenecks)
and the decoder input to ``bottleneck.latent_channels``; ``z_channels`` of a preset is the default latent
width a bottleneck should be built with. ``unet-paper`` and ``vit-paper`` have the GQ reference's parameter
names and shapes one for one (its ``sd3unet_*`` and ``bsqvit_*`` configs); the smaller presets use the same
code at smaller sizes.

| name       | kind | f | z  | notes                                                   |
| ---------- | ---- | - | -- | ------------------------------------------------------- |
| unet-tiny  | unet | 4 | 8  | base 32, mults 1,2,2, 1 res block, no attention; CPU    |
| unet-small | unet | 8 | 16 | base 64, mults 1,2,2,4, 1 res block, attn lowest level  |
| unet-paper | unet | 8 | 16 | base 128, mults 1,2,4,4, 2 res blocks, attn 32 @ 256px  |
| vit-tiny   | vit  | 4 | 8  | patch 4, width 128, depth 2, heads 4; CPU               |
| vit-small  | vit  | 8 | 16 | patch 8, width 384, depth 6, heads 6                    |
| vit-paper  | vit  | 8 | 16 | patch 8, width 768, depth 12, heads 12 (86.0M + 88.8M)  |

Any other UNet (e.g. one read from a diffusers ``AutoencoderKL`` config by
:func:`gaussquant.interop.diffusers.model_config_from_diffusers`) is ``ModelConfig(arch="unet-custom",
unet=UNetArch(...))``; its ``unet`` field is saved with the model like every other field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn

from gaussquant.models.autoencoder import Autoencoder
from gaussquant.models.unet import UNetDecoder, UNetEncoder
from gaussquant.models.vit import ViTDecoder, ViTEncoder
from gaussquant.quantizers.base import Bottleneck


@dataclass(frozen=True)
class UNetArch:
    """A UNet size. ``attn_levels``: level indices (0 = full resolution) that get self-attention.

    ``mid_attention``, ``norm_groups``, ``quant_conv`` and ``post_quant_conv`` are the SD-family VAE options
    of :class:`~gaussquant.models.unet.UNetEncoder` / :class:`~gaussquant.models.unet.UNetDecoder`; the
    presets keep the GQ reference's layout (no middle attention, 32 groups, no 1x1 convs).
    """

    base_channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    attn_levels: tuple[int, ...]
    z_channels: int
    dropout: float = 0.0
    mid_attention: bool = False
    norm_groups: int = 32
    quant_conv: bool = False
    post_quant_conv: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> "UNetArch":
        """Rebuild from the plain dict a saved config holds (JSON lists back to tuples)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown UNetArch keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)


@dataclass(frozen=True)
class ViTArch:
    """A ViT size (encoder and decoder alike)."""

    patch_size: int
    width: int
    depth: int
    heads: int
    z_channels: int
    mlp_ratio: float = 4.0

    @property
    def downsample_factor(self) -> int:
        return self.patch_size


CUSTOM_UNET = "unet-custom"

ARCH_PRESETS: dict[str, UNetArch | ViTArch] = {
    "unet-tiny": UNetArch(
        base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attn_levels=(), z_channels=8
    ),
    "unet-small": UNetArch(
        base_channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=1, attn_levels=(3,), z_channels=16
    ),
    "unet-paper": UNetArch(
        base_channels=128, channel_mults=(1, 2, 4, 4), num_res_blocks=2, attn_levels=(3,), z_channels=16
    ),
    "vit-tiny": ViTArch(patch_size=4, width=128, depth=2, heads=4, z_channels=8),
    "vit-small": ViTArch(patch_size=8, width=384, depth=6, heads=6, z_channels=16),
    "vit-paper": ViTArch(patch_size=8, width=768, depth=12, heads=12, z_channels=16),
}


@dataclass
class ModelConfig:
    """Which architecture, at which image size.

    Attributes:
        arch: a key of ``ARCH_PRESETS``, or ``"unet-custom"`` together with ``unet``.
        image_size: training image side in pixels; a multiple of the preset's downsampling factor. The
            ViT's positional embeddings are learned for exactly this size; the UNet runs at any multiple
            of f and places attention relative to this size.
        dropout: overrides the UNet preset's dropout (None: keep it). The ViT has none.
        convert_grayscale: repeat single-channel inputs to RGB instead of raising.
        unet: the architecture of ``arch="unet-custom"`` (a :class:`UNetArch` or its dict); None otherwise.
        tile: the window side in pixels this model recommends for encoding and decoding larger images
            (gaussquant/tiling.py: a UNet that normalises over space, trained on small crops, drifts in
            colour on a whole photo); None: one pass. ``gaussquant encode`` / ``decode`` use it when no
            ``--tile`` is given. A multiple of f; UNet only.
    """

    arch: str = "unet-tiny"
    image_size: int = 64
    dropout: float | None = None
    convert_grayscale: bool = False
    unet: UNetArch | None = None
    tile: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetArch.from_dict(self.unet)
        if (self.arch == CUSTOM_UNET) != (self.unet is not None):
            raise ValueError(
                f"arch={CUSTOM_UNET!r} and unet=UNetArch(...) go together; got arch={self.arch!r} with "
                f"unet={'set' if self.unet is not None else 'None'}"
            )
        if self.arch not in ARCH_PRESETS and self.arch != CUSTOM_UNET:
            raise ValueError(
                f"unknown arch {self.arch!r}; choose one of {sorted(ARCH_PRESETS)} (or {CUSTOM_UNET!r} with unet=...)"
            )
        f = self.preset.downsample_factor
        if self.image_size < f or self.image_size % f:
            raise ValueError(
                f"image_size {self.image_size} must be a positive multiple of {self.arch}'s downsampling "
                f"factor {f}"
            )
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.tile is not None and (self.tile < f or self.tile % f or isinstance(self.preset, ViTArch)):
            raise ValueError(
                f"tile {self.tile} must be a positive multiple of the downsampling factor {f}, and a UNet's "
                "(a ViT runs at its training image_size only); or None for one pass"
            )
        if self.dropout and isinstance(self.preset, ViTArch):
            raise ValueError("the ViT presets have no dropout; leave dropout=None for vit-* archs")

    @property
    def preset(self) -> UNetArch | ViTArch:
        return self.unet if self.unet is not None else ARCH_PRESETS[self.arch]

    @property
    def downsample_factor(self) -> int:
        return self.preset.downsample_factor

    @property
    def z_channels(self) -> int:
        """The preset's default latent channels (what a bottleneck's ``latent_channels`` should be)."""
        return self.preset.z_channels


def build_encoder_decoder(
    model_cfg: ModelConfig, enc_out_channels: int, dec_in_channels: int
) -> tuple[nn.Module, nn.Module]:
    """The encoder (emitting ``enc_out_channels``) and decoder (taking ``dec_in_channels``) of a preset."""
    arch, size = model_cfg.preset, model_cfg.image_size
    if isinstance(arch, UNetArch):
        common = dict(
            base_channels=arch.base_channels,
            channel_mults=arch.channel_mults,
            num_res_blocks=arch.num_res_blocks,
            attn_resolutions=[size // 2**level for level in arch.attn_levels],
            resolution=size,
            dropout=arch.dropout if model_cfg.dropout is None else model_cfg.dropout,
            mid_attention=arch.mid_attention,
            norm_groups=arch.norm_groups,
        )
        return (
            UNetEncoder(out_channels=enc_out_channels, quant_conv=arch.quant_conv, **common),
            UNetDecoder(in_channels=dec_in_channels, post_quant_conv=arch.post_quant_conv, **common),
        )
    common = dict(
        image_size=size, patch_size=arch.patch_size, width=arch.width, depth=arch.depth,
        heads=arch.heads, mlp_ratio=arch.mlp_ratio,
    )
    return ViTEncoder(out_channels=enc_out_channels, **common), ViTDecoder(in_channels=dec_in_channels, **common)


def build_autoencoder(model_cfg: ModelConfig, bottleneck: Bottleneck) -> Autoencoder:
    """Encoder + ``bottleneck`` + decoder, sized to the bottleneck's ``in_channels`` / ``latent_channels``."""
    encoder, decoder = build_encoder_decoder(model_cfg, bottleneck.in_channels, bottleneck.latent_channels)
    return Autoencoder(encoder, bottleneck, decoder, convert_grayscale=model_cfg.convert_grayscale,
                       model_config=model_cfg)
