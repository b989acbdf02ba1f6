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


# Level numbers (digits) of two tokens x two groups for levels [3, 4, 5], and their indices computed by hand:
# first_least_significant: n0 + 3 n1 + 12 n2 (FSQ paper); first_most_significant: 20 n0 + 5 n1 + n2 (GQ reference).
_DIGITS = [[(2, 1, 3), (0, 3, 1)], [(1, 0, 4), (2, 1, 3)]]  # (token, group, channel)
_HAND = {
    "first_least_significant": [[2 + 3 * 1 + 12 * 3, 0 + 3 * 3 + 12 * 1], [1 + 0 + 12 * 4, 2 + 3 * 1 + 12 * 3]],
    "first_most_significant": [[20 * 2 + 5 * 1 + 3, 0 + 5 * 3 + 1], [20 * 1 + 0 + 4, 20 * 2 + 5 * 1 + 3]],
}


@pytest.mark.parametrize("order", sorted(_HAND))
def test_index_order_numbers_codes_as_computed_by_hand(order):
    """Indices of known level numbers equal the hand-computed mixed-radix numbers in either order, the codes
    are the same whichever order numbers them, and dequantize inverts quantize.

    Catches: the option ignored (both orders giving the library's numbering), weights reversed
    (prod(levels[:i]) vs prod(levels[i+1:]) swapped), dequantize not undoing the renumbering, and groups
    mixed up when renumbering.
    """
    from gaussquant.quantizers.build import FSQConfig, build_bottleneck

    levels = [3, 4, 5]
    q = build_bottleneck(FSQConfig(levels=levels, num_groups=2, index_order=order)).eval()
    assert q.index_order == order
    half = torch.tensor([n // 2 for n in levels] * 2, dtype=torch.float32)
    digits = torch.tensor([[c for g in token for c in g] for token in _DIGITS], dtype=torch.float32)  # (2, 6)
    codes = ((digits - half) / half)[None]  # (B=1, L=2, C=6): the code of each level number
    h = _inverse(FiniteScalarQuantizer(levels), codes.reshape(1, 4, 3)).reshape(1, 2, 6)
    out = q(h)
    assert torch.equal(out.z_hat, codes)
    assert out.indices.tolist() == [_HAND[order]]  # (B, L, G)
    assert torch.equal(q.dequantize(torch.tensor([_HAND[order]])), codes)
    every = torch.arange(q.codebook_size).repeat_interleave(2).reshape(1, -1, 2)
    assert torch.equal(q.quantize(_inverse_groups(q, q.dequantize(every))), every)


def _inverse_groups(q: FiniteScalarQuantizer, codes: torch.Tensor) -> torch.Tensor:
    b, n, c = codes.shape
    return _inverse(FiniteScalarQuantizer(q.levels), codes.reshape(b, n * q.num_groups, c // q.num_groups)).reshape(
        b, n, c)


def test_index_order_default_and_bad_value():
    assert FiniteScalarQuantizer([8, 5]).index_order == "first_least_significant"
    with pytest.raises(ValueError, match="index_order"):
        FiniteScalarQuantizer([8, 5], index_order="big")
