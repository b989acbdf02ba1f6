"""The plain, obviously correct codebook search (docs/method.md section 4): an (N, K, d) broadcast.

The fast paths of :mod:`gaussquant.quantizers.search` are tested against it and the search benchmark times
it as the baseline. It needs N x K x d memory: for tests and benchmarks only.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["reference_scores", "reference_search"]


def reference_scores(
    mean: Tensor,
    std: Tensor | None,
    codebook: Tensor,
    *,
    rule: str = "log_ratio",
    beta: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The plain, obviously correct (N, K) scores (higher is better), built from an (N, K, d) broadcast.

    ``log_ratio``: -sum_i [(c_ki - mu_i)^2 / sigma_i^2 - beta c_ki^2]; ``nearest``: -||c_k - mu||^2.
    For tests and the benchmark only: it needs N x K x d memory.
    """
    mu, c = mean.to(dtype), codebook.to(dtype)
    diff2 = (c.unsqueeze(0) - mu.unsqueeze(1)).square()  # (N, K, d)
    if rule == "nearest":
        return -diff2.sum(dim=-1)
    if rule != "log_ratio" or std is None:
        raise ValueError(f"rule must be 'log_ratio' (with std) or 'nearest'; got {rule!r}")
    var = std.to(dtype).square().unsqueeze(1)
    return -(diff2 / var).sum(dim=-1) + beta * c.square().sum(dim=-1).unsqueeze(0)


def reference_search(
    mean: Tensor,
    std: Tensor | None,
    codebook: Tensor,
    *,
    rule: str = "log_ratio",
    beta: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Argmax (first maximum) of :func:`reference_scores`: (N,) int64."""
    return reference_scores(mean, std, codebook, rule=rule, beta=beta, dtype=dtype).argmax(dim=1)
