"""Pixel reconstruction terms and the learned output log-variance (docs/method.md section 7).

The paper's reconstruction loss is ``(L1 + w_p * LPIPS) / exp(s) + s`` with a learned scalar log-variance
``s``, summed over pixels per image and averaged over the batch (the same per-image sum as the rate term,
which is in bits per image: that is what makes ``rate_weight = 0.1`` meaningful).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pixel_loss_map(x_hat: Tensor, x: Tensor, *, l1_weight: float = 1.0, l2_weight: float = 0.0) -> Tensor:
    """Per-pixel ``l1_weight * |x - x_hat| + l2_weight * (x - x_hat)^2``.

    Args:
        x_hat, x: ``(B, C, H, W)`` images in [-1, 1].

    Returns:
        ``(B, C, H, W)`` float32 map (zero when both weights are 0).
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)} must have the same shape")
    diff = x.float() - x_hat.float()
    out = torch.zeros_like(diff)
    if l1_weight:
        out = out + l1_weight * diff.abs()
    if l2_weight:
        out = out + l2_weight * diff.pow(2)
    return out


class LearnedLogVariance(nn.Module):
    """Gaussian/Laplace-style NLL with one learned scalar log-variance ``s`` (init 0).

    ``forward(loss_map)`` returns ``sum(loss_map / exp(s) + s) / B``: the optimum ``s`` tracks the log of the
    mean per-pixel loss, so the reconstruction weight adapts as training improves. With
    ``learned=False``, ``s`` is a fixed 0 buffer and the result is ``sum(loss_map) / B``.
    """

    def __init__(self, learned: bool = True) -> None:
        super().__init__()
        if learned:
            self.logvar = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("logvar", torch.zeros(()))

    def forward(self, loss_map: Tensor) -> Tensor:
        """``loss_map``: ``(B, ...)`` non-negative per-element losses -> scalar per-image-summed NLL."""
        nll = loss_map / torch.exp(self.logvar) + self.logvar
        return nll.sum() / loss_map.shape[0]
