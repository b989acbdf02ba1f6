"""The UNet (conv) encoder and decoder of the Stable-Diffusion-family VAE (docs/method.md section 7).

Paper size: base channels 128, multipliers [1, 2, 4, 4] (downsampling f = 8), 2 res blocks per level,
self-attention at the 32x32 level of a 256x256 input, z_channels 16 with the encoder emitting 2 x 16
(mean, logvar) for a Gaussian bottleneck: 35.3M encoder + 51.6M decoder parameters.

Parameter names equal those of the GQ reference one for one (``conv_in``, ``down.{i}.block.{j}``,
``down.{i}.attn.{j}``, ``down.{i}.downsample.conv``, ``mid.block_1``, ``mid.block_2``, ``up.{i}...``,
``norm_out``, ``conv_out``). The reference has no middle attention (``mid.attn_1``) and no
``quant_conv`` / ``post_quant_conv``; SD-family VAEs (diffusers' ``AutoencoderKL``) have all three: build
with ``mid_attention=True``, ``quant_conv=True`` (encoder) and ``post_quant_conv=True`` (decoder), and
``norm_groups`` as theirs (see :mod:`gaussquant.interop.diffusers`). Inside an :class:`Autoencoder` the
keys carry the prefixes ``encoder.`` and ``decoder.``.

Latents are channel-first ``(B, C, H/f, W/f)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from gaussquant.models.layers import GROUPS, AttnBlock, Downsample, ResnetBlock, Upsample, group_norm


def _check_common(base_channels: int, channel_mults: Sequence[int], num_res_blocks: int, resolution: int) -> None:
    if base_channels < 1 or num_res_blocks < 1 or resolution < 1:
        raise ValueError("base_channels, num_res_blocks and resolution must be positive integers")
    if len(channel_mults) < 1 or any(m < 1 for m in channel_mults):
        raise ValueError(f"channel_mults must be a non-empty list of positive ints; got {list(channel_mults)}")


class _Mid(nn.Module):
    """``block_1`` -> (optional ``attn_1``) -> ``block_2`` at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, attention: bool, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, groups)
        self.attn_1 = AttnBlock(channels, groups) if attention else None
        self.block_2 = ResnetBlock(channels, channels, dropout, groups)

    def forward(self, h: Tensor) -> Tensor:
        h = self.block_1(h)
        if self.attn_1 is not None:
            h = self.attn_1(h)
        return self.block_2(h)


class _Level(nn.Module):
    """One resolution level: res blocks, each followed by attention when the level has it, then resampling."""

    def __init__(
        self, blocks: list[ResnetBlock], attention: bool, resample: nn.Module | None, name: str, groups: int
    ) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        channels = blocks[-1].conv2.out_channels
        self.attn = nn.ModuleList([AttnBlock(channels, groups) for _ in blocks] if attention else [])
        # registered under the SD-family name: "downsample" in the encoder, "upsample" in the decoder
        if resample is not None:
            self.add_module(name, resample)
        self._resample_name = name if resample is not None else None

    def forward(self, h: Tensor) -> Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        if self._resample_name is not None:
            h = getattr(self, self._resample_name)(h)
        return h


class UNetEncoder(nn.Module):
    """Images ``(B, in_channels, H, W)`` in [-1, 1] -> ``(B, out_channels, H/f, W/f)``, f = 2^(levels-1).

    Args:
        in_channels: image channels (3).
        base_channels: channels of the first level; level i has ``base_channels * channel_mults[i]``.
        channel_mults: one multiplier per level; every level but the last halves H and W.
        num_res_blocks: res blocks per level.
        attn_resolutions: feature-map sizes (for a ``resolution``-sized input) that get self-attention.
        resolution: the image size the attention placement refers to (any multiple of f runs).
        dropout: dropout inside the res blocks.
        out_channels: what the bottleneck needs: 2 x z_channels (mean, logvar) for Gaussian bottlenecks,
            z_channels for the others.
        mid_attention: self-attention between the two middle res blocks (False in the GQ reference,
            True in SD-family VAEs).
        norm_groups: GroupNorm groups of every norm layer (32; divides every level's channels).
        quant_conv: a 1x1 conv ``out_channels -> out_channels`` after ``conv_out`` (SD-family VAEs' moments
            projection, kept as a layer so their weights load exactly); False in the GQ reference.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        base_channels: int,
        channel_mults: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        resolution: int,
        dropout: float = 0.0,
        out_channels: int,
        mid_attention: bool = False,
        norm_groups: int = GROUPS,
        quant_conv: bool = False,
    ) -> None:
        super().__init__()
        _check_common(base_channels, channel_mults, num_res_blocks, resolution)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample_factor = 2 ** (len(channel_mults) - 1)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        levels, res = [], resolution
        block_in = base_channels
        for i, mult in enumerate(channel_mults):
            block_out = base_channels * mult
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout, norm_groups))
                block_in = block_out
            last = i == len(channel_mults) - 1
            resample = None if last else Downsample(block_in)
            levels.append(_Level(blocks, res in attn_resolutions, resample, "downsample", norm_groups))
            res = res if last else res // 2
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(block_in, dropout, mid_attention, norm_groups)
        self.norm_out = group_norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(out_channels, out_channels, 1) if quant_conv else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h if self.quant_conv is None else self.quant_conv(h)


class UNetDecoder(nn.Module):
    """Latents ``(B, in_channels, h, w)`` -> images ``(B, out_channels, h*f, w*f)`` (unbounded; ~[-1, 1]).

    Args mirror :class:`UNetEncoder`; ``in_channels`` is the bottleneck's ``latent_channels``. Each level
    has ``num_res_blocks + 1`` res blocks; ``up[i]`` works at the resolution of ``down[i]``.
    ``post_quant_conv``: a 1x1 conv ``in_channels -> in_channels`` before ``conv_in`` (SD-family VAEs).
    """

    def __init__(
        self,
        *,
        out_channels: int = 3,
        base_channels: int,
        channel_mults: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        resolution: int,
        dropout: float = 0.0,
        in_channels: int,
        mid_attention: bool = False,
        norm_groups: int = GROUPS,
        post_quant_conv: bool = False,
    ) -> None:
        super().__init__()
        _check_common(base_channels, channel_mults, num_res_blocks, resolution)
        self.in_channels = in_channels
        self.out_channels = out_channels
        num_levels = len(channel_mults)
        self.upsample_factor = 2 ** (num_levels - 1)
        block_in = base_channels * channel_mults[-1]
        res = resolution // self.upsample_factor
        self.post_quant_conv = nn.Conv2d(in_channels, in_channels, 1) if post_quant_conv else None
        self.conv_in = nn.Conv2d(in_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, dropout, mid_attention, norm_groups)
        levels: list[_Level] = []
        for i in reversed(range(num_levels)):
            block_out = base_channels * channel_mults[i]
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout, norm_groups))
                block_in = block_out
            resample = Upsample(block_in) if i else None
            levels.insert(0, _Level(blocks, res in attn_resolutions, resample, "upsample", norm_groups))
            res = res * 2 if i else res
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def last_layer_weight(self) -> Tensor:
        """``conv_out.weight``: the layer the VQGAN adaptive GAN weight differentiates against."""
        return self.conv_out.weight
