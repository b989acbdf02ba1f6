"""The diagonal Gaussian posterior q(z|x) = N(mean, diag(std^2)) of docs/method.md section 2.

It lives beside the quantizers (not in models/) because the Gaussian bottlenecks build it and imports go
models -> quantizers, never back.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gaussquant.quantizers.base import channels_last
from gaussquant.quantizers.grouping import to_groups

LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0
LN2 = math.log(2.0)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) in the latent layout of ``mean`` (channel-first or token-last).

    Args:
        mean: ``(B, C, H, W)`` or ``(B, L, C)``.
        logvar: same shape; clamped to [-30, 20] as the reference does.
    """

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ in shape")
        self.mean = mean
        self.logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)

    @classmethod
    def from_moments(cls, h: Tensor) -> "DiagonalGaussian":
        """Split an encoder output with 2C channels into (mean, logvar): first C, last C."""
        dim = 1 if h.dim() == 4 else -1
        mean, logvar = h.chunk(2, dim=dim)
        return cls(mean, logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample ``mean + std * eps``; ``generator`` makes it reproducible."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl_bits(self) -> Tensor:
        """KL(q || N(0, I)) per dimension, in bits, same shape as ``mean``."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar) / LN2

    def group_kl_bits(self, codebook_dim: int, grouping: str = "contiguous") -> Tensor:
        """KL per group of ``codebook_dim`` channels, in bits: ``(B, H, W, G)`` or ``(B, L, G)`` (token-last).

        A group's KL is the sum of its dimensions' KLs (docs/method.md section 2); ``grouping`` is
        ``contiguous`` or ``strided`` (see :mod:`gaussquant.quantizers.grouping`).
        """
        per_dim = channels_last(self.kl_bits())
        if per_dim.shape[-1] % codebook_dim:
            raise ValueError(f"codebook_dim {codebook_dim} does not divide the {per_dim.shape[-1]} latent channels")
        return to_groups(per_dim, codebook_dim, grouping).sum(dim=-1)
