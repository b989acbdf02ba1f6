"""The error theory of docs/method.md section 5 against Monte Carlo, and the bounds around the exact value."""

import math

import pytest
import torch

from gaussquant.quantizers.theory import (
    achievability_bound,
    converse_bound,
    hit_probability,
    kl_nats,
    large_error_probability,
    monte_carlo_large_error,
)

GRID = [(mu, sigma, k) for mu in (0.0, 0.7, 1.5) for sigma in (0.05, 0.3, 1.0) for k in (4, 64, 1024)]
TRIALS = 1500
C1, C2 = 0.5, 2.0  # constants of the bounds' assumptions |mu sigma| <= C1, |mu| + sigma <= C2


def test_monte_carlo_agrees_with_the_exact_probability_and_the_bounds():
    g = torch.Generator().manual_seed(1234)
    checked_ach = checked_conv = 0
    for mu, sigma, k in GRID:
        exact = float(large_error_probability(mu, sigma, k))
        estimate, _ = monte_carlo_large_error(mu, sigma, k, TRIALS, g)
        band = 5 * math.sqrt(exact * (1 - exact) / TRIALS) + 2 / TRIALS  # 5 sigma of a binomial estimate
        assert abs(estimate - exact) <= band, (mu, sigma, k, estimate, exact)
        if abs(mu * sigma) <= C1:
            upper = float(achievability_bound(mu, sigma, k, c1=C1))
            assert exact <= upper and estimate <= upper + band
            checked_ach += 1
        if abs(mu) + sigma <= C2:
            lower = float(converse_bound(mu, sigma, k, c2=C2))
            assert exact >= lower and estimate >= lower - band
            checked_conv += 1
    assert checked_ach >= 20 and checked_conv >= 20


def test_bounds_with_the_tightest_constants_hold_everywhere():
    mu = torch.linspace(-3, 3, 25)[:, None, None]
    sigma = torch.logspace(-3, 1, 20)[None, :, None]
    k = torch.tensor([2.0, 16.0, 2.0**10, 2.0**16, 2.0**24])[None, None, :]
    exact = large_error_probability(mu, sigma, k)
    assert (exact <= achievability_bound(mu, sigma, k) * (1 + 1e-12)).all()
    assert (exact >= converse_bound(mu, sigma, k) - 1e-12).all()


def test_doubly_exponential_in_the_surplus():
    # With log K = R + t the large-error probability falls doubly exponentially in t, and with a deficit
    # (log K = R - t) it tends to 1: the sizing rule log2 K ~ KL in bits.
    mu, sigma = 0.3, 0.2
    r = float(kl_nats(mu, sigma))
    probs = [float(large_error_probability(mu, sigma, math.exp(r + t))) for t in (-3, 0, 2, 4)]
    assert probs[0] > 0.9 and probs[-1] < 1e-10 and probs == sorted(probs, reverse=True)


def test_closed_forms():
    assert float(kl_nats(0.0, 1.0)) == 0.0
    assert float(hit_probability(0.0, 1.0)) == pytest.approx(0.682689492137, abs=1e-12)
    assert float(hit_probability(-1.2, 0.4)) == pytest.approx(float(hit_probability(1.2, 0.4)))
    assert float(large_error_probability(0.0, 1.0, 3)) == pytest.approx((1 - 0.682689492137) ** 3)
    with pytest.raises(ValueError, match="c1"):
        achievability_bound(2.0, 1.0, 16, c1=0.5)
    with pytest.raises(ValueError, match="std"):
        kl_nats(0.0, 0.0)
