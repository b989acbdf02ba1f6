"""The ViT encoder and decoder as the GQ reference has them (BSQ-ViT / CLIP layout; docs/method.md section 7).

Paper size: image 256, patch 8, width 768, 12 layers, 12 heads, MLP ratio 4: 86,016,032 encoder + 88,809,408
decoder parameters, with the reference's parameter names and shapes one for one (``tests/fixtures/
reference_vit_paper_state_dict_shapes.json``), so the reference's weights load with a plain prefix map.

Encoder: patches flattened channel-major ``(c, sh, sw)`` -> a bias-free linear patch embedding ``conv1``
(the bias is left out because ``ln_pre`` follows) + a learned ``positional_embedding`` -> ``ln_pre`` ->
pre-LayerNorm blocks ``transformer.resblocks.{i}`` (``ln_1``, ``attn`` with a packed ``in_proj_weight``,
``out_proj``, ``ln_2``, ``mlp.c_fc``, GELU, ``mlp.c_proj``) -> ``ln_post`` -> ``quant_embed`` (to the
latent channels). Decoder: ``post_quant_embed`` -> + ``positional_embedding`` -> ``ln_pre`` -> blocks ->
``ln_post`` -> ``ffn`` (Linear + Tanh) -> ``conv_out`` (to the pixels of each patch).

Initialisation (the reference's): positional embeddings N(0, 0.02); every linear weight inside the blocks,
the patch embedding, and the decoder's ``ffn.0`` / ``conv_out`` weights truncated normal with std 0.02
(cut at +-2); the blocks' biases zero; LayerNorms (1, 0); ``quant_embed``, ``post_quant_embed`` and the
biases of ``ffn.0`` / ``conv_out`` keep PyTorch's default Linear initialisation, as in the reference.

Latents are token-last ``(B, L, C)`` with ``L = (image_size / patch_size)^2`` in raster order.

Output range: the decoder output is clamped to [-1, 1] with a straight-through gradient (the forward value is
clamped, the backward pass is the identity) so that pixels that overshoot still receive a gradient from the
reconstruction loss. The reference clamps hard (``clamp_range: [-1, 1]``), which zeroes those gradients; the
forward values are identical (docs/method.md, "Deliberate differences").
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _grid(image_size: int, patch_size: int) -> int:
    if image_size < 1 or patch_size < 1 or image_size % patch_size:
        raise ValueError(
            f"image_size ({image_size}) must be a positive multiple of patch_size ({patch_size})"
        )
    return image_size // patch_size


def clamp_straight_through(x: Tensor, low: float = -1.0, high: float = 1.0) -> Tensor:
    """Values of ``x.clamp(low, high)`` with the gradient of the identity."""
    return x + (x.clamp(low, high) - x).detach()


def _trunc_normal_(weight: Tensor) -> None:
    nn.init.trunc_normal_(weight, std=0.02, a=-2.0, b=2.0)


class PackedSelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout. ``(B, L, W) -> (B, L, W)``.

    ``in_proj_weight`` ``(3W, W)`` stacks the q, k, v projections; head h uses features [h*W/heads,
    (h+1)*W/heads) of each, exactly as ``nn.MultiheadAttention`` does, so its state dict loads here unchanged.
    Computed with ``scaled_dot_product_attention`` (fused kernels, token-first transposes avoided).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, width = x.shape
        # (B, L, 3W) -> 3 x (B, heads, L, W/heads)
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(b, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, L, W/heads)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` (GELU MLP of ``mlp_ratio * W``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PackedSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            [("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))]
        ))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The reference's block initialisation: linear weights truncated normal 0.02, all biases zero."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif not name.startswith("ln_"):
                _trunc_normal_(p)
            else:
                p.fill_(1.0)


class Transformer(nn.Module):
    """``depth`` residual attention blocks under the name ``resblocks`` (CLIP layout)."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(depth)])
        for block in self.resblocks:
            block.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


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
        self.grid = _grid(image_size, patch_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.downsample_factor = patch_size
        # registration order = the reference's state-dict order
        self.positional_embedding = nn.Parameter(torch.empty(self.grid * self.grid, width))
        self.conv1 = nn.Linear(in_channels * patch_size * patch_size, width, bias=False)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.quant_embed = nn.Linear(width, out_channels)
        with torch.no_grad():
            nn.init.normal_(self.positional_embedding, std=0.02)
            _trunc_normal_(self.conv1.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this ViT encoder has learned positional embeddings for {self.image_size}x{self.image_size} "
                f"images; got {tuple(x.shape[-2:])}. Resize or crop the images to {self.image_size}."
            )
        b, c, g, p = x.shape[0], x.shape[1], self.grid, self.patch_size
        # (B, C, g*p, g*p) -> (B, g*g, C*p*p): raster-order patches, each flattened channel-major (c, sh, sw)
        patches = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        h = self.conv1(patches) + self.positional_embedding  # (B, L, W)
        h = self.transformer(self.ln_pre(h))
        return self.quant_embed(self.ln_post(h))  # (B, L, out_channels)


class ViTDecoder(nn.Module):
    """Latents ``(B, (S/p)^2, in_channels)`` -> images ``(B, 3, S, S)`` clamped to [-1, 1].

    ``in_channels`` is the bottleneck's ``latent_channels``. The pixel head's hidden width is
    ``mlp_ratio * width`` (3072 at the paper size, the reference's ``dim_ffn_output``).
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
        hidden = int(width * mlp_ratio)
        # registration order = the reference's state-dict order
        self.positional_embedding = nn.Parameter(torch.empty(self.grid * self.grid, width))
        self.ffn = nn.Sequential(nn.Linear(width, hidden), nn.Tanh())
        self.conv_out = nn.Linear(hidden, out_channels * patch_size * patch_size)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, depth, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.post_quant_embed = nn.Linear(in_channels, width)
        with torch.no_grad():
            nn.init.normal_(self.positional_embedding, std=0.02)
            _trunc_normal_(self.ffn[0].weight)
            _trunc_normal_(self.conv_out.weight)

    def forward(self, z: Tensor) -> Tensor:
        b, n, _ = z.shape
        if n != self.grid * self.grid:
            raise ValueError(f"this ViT decoder expects {self.grid * self.grid} tokens; got {n}")
        h = self.ln_pre(self.post_quant_embed(z) + self.positional_embedding)  # (B, L, W)
        h = self.ln_post(self.transformer(h))
        pixels = self.conv_out(self.ffn(h))  # (B, L, C*p*p)
        p, g, c = self.patch_size, self.grid, self.out_channels
        # (B, g*g, C*p*p) -> (B, C, g*p, g*p): un-patchify in raster order
        x = pixels.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)
        return clamp_straight_through(x)

    @property
    def last_layer_weight(self) -> Tensor:
        """The final linear layer's weight (for the VQGAN adaptive GAN weight)."""
        return self.conv_out.weight
