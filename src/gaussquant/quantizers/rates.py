"""Rate-matched presets and rate bookkeeping (docs/method.md sections 2 and 6): baselines at equal bits per token.

``rate_matched_configs(bits_per_token)`` gives one config per method at (nearly) the same bits per token:

| bits | gq / vq / gaussian (C=16)   | fsq                          | lfq       | bsq         | tokenbridge |
| ---- | --------------------------- | ---------------------------- | --------- | ----------- | ----------- |
| 16   | K=2^16, d=16 (G=1)          | [8,8,8,5,5,5]: 15.966 bits   | 2 x 8 bit | 16 channels | b=1 (C=16)  |
| 32   | K=2^16, d=8  (G=2)          | 2 groups of the above        | 4 x 8 bit | 32 channels | b=2         |
| 64   | K=2^16, d=4  (G=4)          | 4 groups of the above        | 8 x 8 bit | 64 channels | b=4         |

16 bits mirror the reference's settings (docs/method.md section 6); 32 and 64 keep K = 2^16 per group and add
groups, as the paper's 0.5 and 1.0 bpp GQ models do. Tiny rates for the CPU benchmark (B < 16, default C = 4):
one group of K = 2^B (gq, vq), FSQ's recommended levels for 2^B codes (8: [8,6,5], 10: [8,5,5,5],
12: [7,5,5,5,5], 14: [8,8,8,6,5]), LFQ 2 x B/2 bits, BSQ B channels, TokenBridge b = B / C.
FSQ's rates are exact but not powers of two (log2 64000 = 15.965784284662087); every table prints them exactly.
"""

from __future__ import annotations

import math
from typing import Any

from gaussquant.quantizers.base import Bottleneck, DiscreteBottleneck
from gaussquant.quantizers.build import (
    BSQConfig,
    FSQConfig,
    GaussianConfig,
    GQConfig,
    LFQConfig,
    TokenBridgeConfig,
    VQConfig,
)

FSQ_LEVELS: dict[int, list[int]] = {  # FSQ paper, table of recommended levels per target codebook size 2^B
    8: [8, 6, 5],
    10: [8, 5, 5, 5],
    12: [7, 5, 5, 5, 5],
    14: [8, 8, 8, 6, 5],
    16: [8, 8, 8, 5, 5, 5],
}
MAX_GROUP_BITS = 16


def _default_channels(bits: int) -> int:
    return 16 if bits >= MAX_GROUP_BITS else 4


def rate_matched_configs(bits_per_token: int, latent_channels: int | None = None) -> dict[str, Any]:
    """Configs for "gq", "vq", "fsq", "lfq", "bsq", "tokenbridge", "gaussian" (the VAE GQ converts) and
    "gaussian_tokenbridge" (the TDC VAE at d = 1, b bits per dimension, that TokenBridge converts).

    Args:
        bits_per_token: B; 8, 10, 12, 14 (tiny CPU rates) or a multiple of 16.
        latent_channels: C of the Gaussian/GQ/VQ/TokenBridge latents (default 16, or 4 below 16 bits).
            FSQ, LFQ and BSQ latents have as many channels as their method needs.
    """
    b = int(bits_per_token)
    if b < MAX_GROUP_BITS and b not in FSQ_LEVELS or b >= MAX_GROUP_BITS and b % MAX_GROUP_BITS:
        raise ValueError(f"bits_per_token must be one of {sorted(FSQ_LEVELS)[:-1]} or a multiple of 16; got {b}")
    c = _default_channels(b) if latent_channels is None else int(latent_channels)
    groups = max(1, b // MAX_GROUP_BITS)
    group_bits = min(b, MAX_GROUP_BITS)
    if c % groups:
        raise ValueError(f"latent_channels {c} must be divisible by the {groups} groups of {b} bits per token")
    if b % c:
        raise ValueError(f"TokenBridge needs bits_per_token ({b}) divisible by latent_channels ({c})")
    d = c // groups
    fsq = FSQConfig(levels=list(FSQ_LEVELS[group_bits]), num_groups=groups)
    lfq = (LFQConfig(codebook_bits=b // 2, num_groups=2) if b <= MAX_GROUP_BITS
           else LFQConfig(codebook_bits=8, num_groups=b // 8))
    return {
        "gaussian": GaussianConfig(latent_channels=c, codebook_dim=d, target_bits=float(group_bits)),
        "gq": GQConfig(latent_channels=c, codebook_size=2**group_bits, codebook_dim=d,
                       target_bits=float(group_bits)),
        "vq": VQConfig(latent_channels=c, codebook_size=2**group_bits, codebook_dim=d),
        "fsq": fsq,
        "lfq": lfq,
        "bsq": BSQConfig(latent_channels=b, codebook_bits=group_bits),
        "tokenbridge": TokenBridgeConfig(latent_channels=c, codebook_bits=b // c),
        "gaussian_tokenbridge": GaussianConfig(latent_channels=c, codebook_dim=1, target_bits=float(b // c)),
    }


def config_bits_per_token(cfg: Any) -> float:
    """Exact bits per token a config (or bottleneck) gives; for a Gaussian config, its TDC target rate."""
    if isinstance(cfg, DiscreteBottleneck):
        return float(cfg.bits_per_token)
    if isinstance(cfg, Bottleneck):
        raise ValueError(f"{type(cfg).__name__} is continuous: it has no bits per token (use its config's target)")
    if isinstance(cfg, GaussianConfig):
        if cfg.target_bits is None:
            raise ValueError("a fixed-KL-weight Gaussian config has no target rate, hence no bits per token")
        return cfg.latent_channels // cfg.codebook_dim * float(cfg.target_bits)
    if isinstance(cfg, (GQConfig, VQConfig)):
        d = cfg.codebook_dim or cfg.latent_channels
        return cfg.latent_channels // d * math.log2(cfg.codebook_size)
    if isinstance(cfg, FSQConfig):
        return cfg.num_groups * math.log2(math.prod(cfg.levels))
    if isinstance(cfg, LFQConfig):
        return float(cfg.num_groups * cfg.codebook_bits)
    if isinstance(cfg, BSQConfig):
        return float(cfg.latent_channels)
    if isinstance(cfg, TokenBridgeConfig):
        return float(cfg.latent_channels * cfg.codebook_bits)
    raise TypeError(f"cannot tell the rate of a {type(cfg).__name__}")


def rate_summary(cfg_or_bottleneck: Any, image_size: int | tuple[int, int], downsample_factor: int) -> dict[str, float]:
    """``{"bits_per_token", "tokens", "bpp"}`` for images of ``image_size`` (int or (H, W)) and a latent grid
    downsampled by ``downsample_factor`` (conv stride product, or ViT patch size)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    f = int(downsample_factor)
    if f < 1 or h % f or w % f:
        raise ValueError(f"image size {h}x{w} must be divisible by the downsample factor {f}")
    bits = config_bits_per_token(cfg_or_bottleneck)
    tokens = (h // f) * (w // f)
    return {"bits_per_token": bits, "tokens": float(tokens), "bpp": tokens * bits / (h * w)}


def format_rate_table(configs: dict[str, Any], image_size: int | tuple[int, int], downsample_factor: int) -> str:
    """A plain-text table: name, kind, bits per token (exact), tokens, bpp."""
    rows = ["name                  kind         bits/token   tokens      bpp"]
    for name, cfg in configs.items():
        r = rate_summary(cfg, image_size, downsample_factor)
        kind = getattr(cfg, "kind", type(cfg).__name__)
        rows.append(f"{name:<21} {kind:<12} {r['bits_per_token']:>10.4f} {int(r['tokens']):>8d} {r['bpp']:>9.5f}")
    return "\n".join(rows)
