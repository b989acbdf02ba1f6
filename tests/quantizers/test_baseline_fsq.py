"""FSQ: levels, bounds, exact rate, and the wrapper against vector-quantize-pytorch directly."""

from __future__ import annotations

import math

import pytest
import torch
from vector_quantize_pytorch import FSQ

from gaussquant.quantizers.fsq import FiniteScalarQuantizer


def test_reference_levels_rate_is_exact():
    q = FiniteScalarQuantizer([8, 8, 8, 5, 5, 5])
    assert q.codebook_size == 64000
    assert q.bits_per_token == math.log2(64000) == pytest.approx(15.965784284662087, abs=1e-15)


@pytest.mark.parametrize("levels", [[8, 5, 3], [4, 7]])
def test_values_lie_on_the_level_grid_and_in_bounds(levels):
    q = FiniteScalarQuantizer(levels).eval()
    h = torch.linspace(-20, 20, 4001)[:, None].expand(-1, len(levels))[None]  # (1, N, d), sweeps each channel
    z_hat = q(h).z_hat[0]
    for i, n in enumerate(levels):
        half = n // 2
        grid = (torch.arange(n) - half) / half
        values = torch.unique(z_hat[:, i])
        assert len(values) == n  # every level reached, no others
        assert torch.allclose(values, grid)
        assert values.min() >= -1 and values.max() <= 1


def test_every_index_round_trips():
    q = FiniteScalarQuantizer([5, 4, 3], num_groups=1)
    idx = torch.arange(q.codebook_size).reshape(1, -1, 1)
    codes = q.dequantize(idx)
    assert torch.equal(q.quantize(_inverse(q, codes)), idx)
    assert len(torch.unique(codes[0], dim=0)) == q.codebook_size


def _inverse(q: FiniteScalarQuantizer, codes: torch.Tensor) -> torch.Tensor:
    """An input that FSQ maps exactly onto ``codes``: invert the shifted tanh bound at the code values."""
    levels = torch.tensor(q.levels, dtype=torch.float64)
    half_l = (levels - 1) * (1 + 1e-3) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_l)
    target = codes.double() * (levels // 2)  # the rounded integer value before division
    return (torch.atanh((target + offset) / half_l) - shift).float()


def test_wrapper_matches_library():
    g = torch.Generator().manual_seed(0)
    levels = [8, 5, 5, 3]
    ours = FiniteScalarQuantizer(levels, num_groups=2).eval()
    lib = FSQ(levels=levels, num_codebooks=2, keep_num_codebooks_dim=True)
    h = torch.randn(2, 8, 3, 3, generator=g) * 2
    out = ours(h)
    codes, idx = lib(h)
    assert torch.equal(out.z_hat, codes)
    assert torch.equal(out.indices, idx.long().permute(0, 3, 1, 2))


def test_gradient_is_straight_through_the_bound():
    q = FiniteScalarQuantizer([8, 5]).train()
    h = torch.zeros(1, 1, 2, requires_grad=True)
    q(h).z_hat.sum().backward()
    assert (h.grad > 0).all()


def test_refuses_codebooks_too_large_for_exact_indices():
    with pytest.raises(ValueError, match="num_groups"):
        FiniteScalarQuantizer([16] * 7)
    with pytest.raises(ValueError, match=">= 3"):
        FiniteScalarQuantizer([2, 4])
