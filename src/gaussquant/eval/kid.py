"""Kernel distance (KID, Binkowski et al. 2018): an unbiased alternative to the Fréchet distance.

The Fréchet distance of ``n`` images in ``d`` feature dimensions is biased, and when ``n < d`` its
covariances are singular, so a small evaluation set gives a number that depends on ``n`` as much as on
the model. KID is the squared maximum mean discrepancy with the cubic polynomial kernel
``k(x, y) = (x . y / d + 1) ** 3``, estimated without bias on ``num_subsets`` random subsets of
``subset_size`` images of each side (without replacement, a local seeded generator)::

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2

reported as mean and standard deviation over the subsets (the protocol of the KID paper and of
torch-fidelity / clean-fid, written here because it needs the stored features the Fréchet distance already
streams past, and 20 lines do not warrant a dependency). It needs the features of every image (float32,
``n x d x 4`` bytes per side).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def polynomial_mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 of two ``(m, d)`` feature sets (m >= 2) under ``(x . y / d + 1) ** 3`` (float64)."""
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"KID needs two (m, d) feature sets with m >= 2; got {tuple(x.shape)} and {tuple(y.shape)}")
    m, d = x.shape
    x, y = x.double(), y.double()
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_distance(real: Tensor, fake: Tensor, num_subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                    seed: int = 0) -> tuple[float, float, int]:
    """``(mean, std, m)`` of the unbiased MMD^2 over ``num_subsets`` subsets of ``m = min(subset_size, n)``.

    ``real`` and ``fake``: ``(n, d)`` features of the originals and reconstructions (paired rows, the same
    subset indices are drawn for both sides). With ``m = n`` every subset is the whole set (std 0).
    """
    n = real.shape[0]
    if fake.shape != real.shape or n < 2:
        raise ValueError(f"KID needs at least 2 images on each side; got {tuple(real.shape)} and {tuple(fake.shape)}")
    m = min(int(subset_size), n)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets if m < n else 1):
        a = torch.randperm(n, generator=generator)[:m]
        b = torch.randperm(n, generator=generator)[:m]  # independent draws on the two sides
        values.append(polynomial_mmd2_unbiased(real[a], fake[b]))
    return float(np.mean(values)), float(np.std(values)), m
