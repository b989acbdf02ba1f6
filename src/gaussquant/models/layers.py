"""Building blocks of the UNet and ViT autoencoders (docs/method.md section 7).

UNet blocks follow the Stable-Diffusion-family VAE (GroupNorm(32) + SiLU residual blocks, single-head
spatial self-attention with 1x1-conv q/k/v, strided-conv downsampling, nearest-neighbour upsampling). Their
submodule names (``norm1``, ``conv1``, ``nin_shortcut``, ``q``, ``k``, ``v``, ``proj_out``, ``conv``) are the
ones of that family, so that its checkpoints load with a plain key prefix mapping.

The ViT block is a pre-LayerNorm transformer block (attention + GELU MLP) as in BSQ-ViT.

Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (the fused kernel); the tests compare it
with a plain softmax(QK^T / sqrt(d)) V reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUPS = 32


def group_norm(channels: int, groups: int = GROUPS) -> nn.GroupNorm:
    """GroupNorm(32, eps=1e-6, affine) as in the SD-family VAE; a clear error if ``groups`` does not divide."""
    if channels % groups:
        raise ValueError(
            f"GroupNorm with {groups} groups needs a channel count divisible by {groups}; got {channels}. "
            f"Choose base_channels and channel_mults so that every level has a multiple of {groups} channels."
        )
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """``x + conv(SiLU(norm(conv(SiLU(norm(x))))))`` with a 1x1 ``nin_shortcut`` when channels change.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``. ``groups``: GroupNorm groups (32).
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, groups: int = GROUPS) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, groups: int = GROUPS) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, C, H, W) -> (B, 1 head, H*W, C): one head over all channels, as in the SD-family VAE.
        q, k, v = (t.reshape(b, 1, c, h * w).transpose(2, 3) for t in (self.q(y), self.k(y), self.v(y)))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv after asymmetric (right/bottom) zero padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        # Pad right and bottom only: with even H, W this gives exactly H/2, W/2 (the SD-family convention).
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour interpolation then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens. ``(B, L, width) -> (B, L, width)``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, width = x.shape
        # (B, L, 3*width) -> 3 x (B, heads, L, width/heads)
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, width))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` (GELU MLP of ``mlp_ratio * width``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def reference_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Plain softmax(q k^T / sqrt(d)) v, the reference the fused kernel is tested against. ``(..., L, d)``."""
    scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
    return torch.softmax(scores, dim=-1) @ v
