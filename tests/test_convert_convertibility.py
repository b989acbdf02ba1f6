"""Convertibility report math: grouping, streaming statistics, section-5 probability, sizing warning."""

import math

import pytest
import torch

from gaussquant.convertibility import (
    KLAccumulator,
    histogram,
    large_error_probability,
    predicted_large_error,
    sizing_warning,
    suggested_codebook_size,
)
from gaussquant.quantizers.grouping import to_groups
from gaussquant.quantizers.posterior import DiagonalGaussian


def test_grouping_contiguous_and_strided():
    x = torch.arange(12.0).view(1, 12)
    assert to_groups(x, 4, "contiguous")[0, 1].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert to_groups(x, 4, "strided")[0, 1].tolist() == [1.0, 4.0, 7.0, 10.0]  # G = 3: {1, 1+3, ...}
    with pytest.raises(ValueError, match="divide"):
        to_groups(x, 5, "contiguous")
    with pytest.raises(ValueError, match="grouping"):
        to_groups(x, 4, "zigzag")


@pytest.mark.parametrize("mu, sigma, k", [(0.7, 0.3, 20), (-1.5, 0.1, 300), (0.0, 0.5, 3)])
def test_d1_probability_matches_monte_carlo_of_nearest_search(mu, sigma, k):
    """Section 5's exact (1 - P_q)^K against K i.i.d. N(0,1) codewords and the nearest rule."""
    gen = torch.Generator().manual_seed(0)
    trials = 20000
    codewords = torch.randn(trials, k, generator=gen)
    nearest = codewords.gather(1, (codewords - mu).abs().argmin(1, keepdim=True))
    empirical = ((nearest - mu).abs() >= sigma).double().mean().item()
    exact = large_error_probability(torch.tensor(mu), torch.tensor(sigma), k).item()
    band = 4 * math.sqrt(exact * (1 - exact) / trials) + 1e-3
    assert abs(empirical - exact) < band
    # for d = 1 the per-dimension allocation K_i = K ** 1 reduces to the exact form
    kl = DiagonalGaussian(torch.tensor([[mu]]), torch.tensor([[2 * math.log(sigma)]])).kl_bits()
    p_dim, p_group = predicted_large_error(torch.tensor([[[mu]]]), torch.tensor([[[sigma]]]), kl[:, None], k)
    assert p_dim.item() == pytest.approx(exact, rel=1e-9) and p_group.item() == pytest.approx(exact, rel=1e-6)


def test_probability_falls_with_codebook_size_and_is_accurate_in_the_tail():
    mean, std = torch.tensor([3.0, 8.0]), torch.tensor([0.2, 0.2])
    p_small = large_error_probability(mean, std, 4)
    p_large = large_error_probability(mean, std, 2**20)
    assert (p_large < p_small).all()
    assert (p_small > 0.99).all() and p_large[1] > 0.999  # 8 sigma out: a tiny box, no cancellation to 0 or NaN


def test_accumulator_streams_exactly_and_matches_direct_statistics():
    gen = torch.Generator().manual_seed(1)
    mean = torch.randn(6, 8, 3, 3, generator=gen) * 2
    logvar = torch.randn(6, 8, 3, 3, generator=gen) - 3
    whole = KLAccumulator(16, 4, "strided")
    whole.update(mean, logvar)
    parts = KLAccumulator(16, 4, "strided")
    parts.update(mean[:2], logvar[:2])
    parts.update(mean[2:], logvar[2:])
    a, b = whole.report(), parts.report()
    assert a.histogram_counts == b.histogram_counts and a.kl_bits_mean == pytest.approx(b.kl_bits_mean, rel=1e-12)
    kl = DiagonalGaussian(mean, logvar).kl_bits().permute(0, 2, 3, 1).reshape(-1, 8)
    groups = to_groups(kl, 4, "strided").sum(-1).double()  # (54, 2)
    assert a.num_images == 6 and a.num_group_tokens == 108 and a.num_groups == 2
    assert a.kl_bits_mean == pytest.approx(groups.mean().item(), rel=1e-6)
    assert a.kl_bits_min == pytest.approx(groups.min().item()) and a.kl_bits_max == pytest.approx(groups.max().item())
    assert a.kl_bits_per_group == pytest.approx(groups.mean(0).tolist(), rel=1e-6)
    assert a.fraction_in_band == pytest.approx(((groups - 4).abs() <= 0.5).double().mean().item())
    assert sum(a.histogram_counts) == 108
    assert a.histogram_edges[0] <= a.kl_bits_min and a.histogram_edges[-1] >= a.kl_bits_max
    text = a.to_text()
    assert "log2 K = 4.000" in text and "per dimension" in text


def test_histogram_overflow_and_bins():
    counts, edges = histogram(torch.tensor([0.1, 0.6, 3.9, 300.0]))
    assert sum(counts) == 4 and counts[-1] == 1 and edges[-1] == 300.0 and len(counts) <= 40


def test_warning_and_suggested_size_for_any_k():
    assert sizing_warning(8.3, 256) is None
    assert sizing_warning(8.6, 256) is not None and "512" in sizing_warning(8.6, 256)
    warning = sizing_warning(4.2, 300)  # K need not be a power of two
    assert "below" in warning and "16" in warning
    assert suggested_codebook_size(0.2) == 2 and suggested_codebook_size(6.49) == 64
    with pytest.raises(ValueError, match=">= 2"):
        KLAccumulator(1, 4)
    with pytest.raises(ValueError, match="no images"):
        KLAccumulator(4, 4).report()
