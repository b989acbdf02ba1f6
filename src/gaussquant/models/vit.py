"""The ViT encoder and decoder in the BSQ-ViT style (docs/method.md section 7).

Paper size: patch 8, width 768, 12 layers, 12 heads, MLP ratio 4 (about 175M parameters for encoder plus
decoder). Encoder: a patch-embedding conv (kernel = stride = patch), learned positional embeddings,
pre-LayerNorm transformer blocks, a final LayerNorm and a linear map to the latent channels. Decoder: a
linear map from the latent channels, learned positional embeddings, transformer blocks, a LayerNorm and a
Linear-Tanh-Linear head to the pixels of each patch.

Latents are token-last ``(B, L, C)`` with ``L = (image_size / patch_size)^2`` in raster order.

Output range: the decoder output is clamped to [-1, 1] in every mode, with a straight-through gradient
(the forward value is clamped, the backward pass is the identity) so that pixels that overshoot still
receive a gradient from the reconstruction loss. A hard clamp would zero those gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gaussquant.models.layers import TransformerBlock


def _grid(image_size: int, patch_size: int) -> int:
    if image_size < 1 or patch_size < 1 or image_size % patch_size:
        raise ValueError(
            f"image_size ({image_size}) must be a positive multiple of patch_size ({patch_size})"
        )
    return image_size // patch_size


def clamp_straight_through(x: Tensor, low: float = -1.0, high: float = 1.0) -> Tensor:
    """Values of ``x.clamp(low, high)`` with the gradient of the identity."""
    return x + (x.clamp(low, high) - x).detach()


class ViTEncoder(nn.Module):
    """Images ``(B, 3, S, S)`` in [-1, 1], S = ``image_size`` -> latents ``(B, (S/p)^2, out_channels)``.

    ``out_channels`` is what the bottleneck needs (2 x z_channels for Gaussian bottlenecks).
    """

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        out_channels: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        grid = _grid(image_size, patch_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = image_size
        self.downsample_factor = patch_size
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, width) * width**-0.5)
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, mlp_ratio) for _ in range(depth)])
        self.ln_post = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this ViT encoder has learned positional embeddings for {self.image_size}x{self.image_size} "
                f"images; got {tuple(x.shape[-2:])}. Resize or crop the images to {self.image_size}."
            )
        h = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, L, width)
        h = h + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.proj_out(self.ln_post(h))


class ViTDecoder(nn.Module):
    """Latents ``(B, (S/p)^2, in_channels)`` -> images ``(B, 3, S, S)`` clamped to [-1, 1].

    ``in_channels`` is the bottleneck's ``latent_channels``. See the module docstring for the clamp.
    """

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        in_channels: int,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        self.grid = _grid(image_size, patch_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.patch_size = patch_size
        self.upsample_factor = patch_size
        self.proj_in = nn.Linear(in_channels, width)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, width) * width**-0.5)
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, mlp_ratio) for _ in range(depth)])
        self.ln_post = nn.LayerNorm(width)
        hidden = int(round(width * mlp_ratio))
        # per-token head to the patch's pixels (BSQ-ViT uses a Tanh-activated two-layer head)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.Tanh())
        self.conv_out = nn.Linear(hidden, out_channels * patch_size * patch_size)

    def forward(self, z: Tensor) -> Tensor:
        b, n, _ = z.shape
        if n != self.grid * self.grid:
            raise ValueError(f"this ViT decoder expects {self.grid * self.grid} tokens; got {n}")
        h = self.proj_in(z) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        pixels = self.conv_out(self.head(self.ln_post(h)))  # (B, L, C*p*p)
        p, g, c = self.patch_size, self.grid, self.out_channels
        # (B, g*g, C*p*p) -> (B, C, g*p, g*p): un-patchify in raster order
        x = pixels.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)
        return clamp_straight_through(x)

    @property
    def last_layer_weight(self) -> Tensor:
        """The final linear layer's weight (for the VQGAN adaptive GAN weight)."""
        return self.conv_out.weight
