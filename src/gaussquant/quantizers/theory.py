"""The quantization-error theory of Gaussian Quant, for numerical checks (docs/method.md section 5).

Setting (per dimension, d = 1): posterior N(mu, sigma^2), K i.i.d. N(0, 1) codewords, rule ``nearest``;
R = KL(N(mu, sigma^2) || N(0, 1)) in nats; a "large error" is |z_hat - mu| >= sigma.

- Exact: the error is large iff no codeword falls within sigma of mu, so
  P(large error) = (1 - P_q)^K with P_q = Phi(mu + sigma) - Phi(mu - sigma).
- Achievability (log K = R + t, |mu sigma| <= c1): P(large error) <= exp(-e^t sqrt(2/pi) e^(-c1 - 0.5)).
  Why: P_q >= 2 sigma phi(|mu| + sigma) >= sqrt(2/pi) e^(-c1 - 0.5) e^(-R), and (1 - P_q)^K <= exp(-K P_q).
- Converse (log K = R - t, |mu| + |sigma| <= c2): P(large error) >= 1 - e^(-t) sqrt(2/pi) e^(0.5 c2^2 - 0.5).
  Why: the union bound 1 - (1 - P_q)^K <= K P_q and P_q <= 2 sigma / sqrt(2 pi).

Both bounds therefore hold for every (mu, sigma, K) with the tightest constants c1 = |mu sigma| and
c2 = |mu| + sigma (the defaults below); t may be negative, where a bound can be vacuous (> 1 or < 0).
All functions broadcast over tensors (computed in float64) and accept Python floats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "kl_nats",
    "hit_probability",
    "large_error_probability",
    "achievability_bound",
    "converse_bound",
    "monte_carlo_large_error",
]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _t(x: float | Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _check(mean: Tensor, std: Tensor, codebook_size: Tensor | None = None) -> None:
    if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
        raise ValueError("std must be > 0 and mean finite")
    if codebook_size is not None and not bool((codebook_size > 0).all()):
        raise ValueError("codebook_size must be > 0 (real values are allowed: K = e^(R + t))")


def kl_nats(mean: float | Tensor, std: float | Tensor) -> Tensor:
    """R = KL(N(mean, std^2) || N(0, 1)) in nats."""
    m, s = _t(mean), _t(std)
    _check(m, s)
    return 0.5 * (m.square() + s.square() - 1.0) - torch.log(s)


def hit_probability(mean: float | Tensor, std: float | Tensor) -> Tensor:
    """P_q = Phi(mean + std) - Phi(mean - std): the chance that one N(0, 1) codeword lands within std of mean."""
    m, s = _t(mean), _t(std)
    _check(m, s)
    # Difference of upper tails on the positive side keeps precision far from the origin.
    a = m.abs()
    return torch.special.ndtr(-(a - s)) - torch.special.ndtr(-(a + s))


def large_error_probability(mean: float | Tensor, std: float | Tensor, codebook_size: int | Tensor) -> Tensor:
    """Exact P(|z_hat - mean| >= std) = (1 - P_q)^K for K i.i.d. N(0, 1) codewords and rule ``nearest``."""
    k = _t(codebook_size)
    _check(_t(mean), _t(std), k)
    return torch.exp(k * torch.log1p(-hit_probability(mean, std)))


def achievability_bound(
    mean: float | Tensor, std: float | Tensor, codebook_size: int | Tensor, c1: float | Tensor | None = None
) -> Tensor:
    """Upper bound exp(-e^t sqrt(2/pi) e^(-c1 - 0.5)) with t = log K - R; needs |mean std| <= c1."""
    m, s, k = _t(mean), _t(std), _t(codebook_size)
    c1 = (m * s).abs() if c1 is None else _t(c1)
    if not bool(((m * s).abs() <= c1 + 1e-12).all()):
        raise ValueError("the achievability bound needs |mean * std| <= c1")
    t = torch.log(k) - kl_nats(m, s)
    return torch.exp(-torch.exp(t) * _SQRT_2_OVER_PI * torch.exp(-c1 - 0.5))


def converse_bound(
    mean: float | Tensor, std: float | Tensor, codebook_size: int | Tensor, c2: float | Tensor | None = None
) -> Tensor:
    """Lower bound 1 - e^(-t) sqrt(2/pi) e^(0.5 c2^2 - 0.5) with t = R - log K; needs |mean| + std <= c2."""
    m, s, k = _t(mean), _t(std), _t(codebook_size)
    c2 = m.abs() + s if c2 is None else _t(c2)
    if not bool((m.abs() + s <= c2 + 1e-12).all()):
        raise ValueError("the converse bound needs |mean| + std <= c2")
    t = kl_nats(m, s) - torch.log(k)
    return 1.0 - torch.exp(-t) * _SQRT_2_OVER_PI * torch.exp(0.5 * c2.square() - 0.5)


def monte_carlo_large_error(
    mean: float,
    std: float,
    codebook_size: int,
    trials: int,
    generator: torch.Generator,
    max_values: int = 2**22,
) -> tuple[float, float]:
    """Estimate P(large error) by drawing ``trials`` independent codebooks of K i.i.d. N(0, 1) codewords.

    Each trial quantizes ``mean`` to its nearest codeword and records |z_hat - mean| >= std. Draws come from
    the local ``generator`` in chunks of at most ``max_values`` numbers. Returns (estimate, standard error).
    """
    if trials < 1 or codebook_size < 1 or not std > 0:
        raise ValueError("need trials >= 1, codebook_size >= 1 and std > 0")
    chunk = max(1, max_values // codebook_size)
    large = 0
    for start in range(0, trials, chunk):
        rows = min(chunk, trials - start)
        codewords = torch.randn(rows, codebook_size, generator=generator, dtype=torch.float64)
        error = (codewords - mean).abs().min(dim=1).values  # distance to the nearest codeword
        large += int((error >= std).sum())
    p = large / trials
    return p, math.sqrt(max(p * (1 - p), 1.0 / trials) / trials)
