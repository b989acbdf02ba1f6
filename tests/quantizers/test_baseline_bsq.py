"""BSQ: scaled sign quantization on the sphere, entropy terms, and agreement with LFQ(spherical=True)."""

from __future__ import annotations

import math

import pytest
import torch
from vector_quantize_pytorch import LFQ

from gaussquant.quantizers.bsq import BinarySphericalQuantizer, binary_entropy, bsq_entropy_terms


def test_scaled_signs_on_the_unit_sphere():
    q = BinarySphericalQuantizer(4).eval()
    h = torch.tensor([[[3.0, -0.5, 0.0, 2.0]]])
    out = q(h)
    assert torch.equal(out.z_hat, torch.tensor([[[0.5, -0.5, -0.5, 0.5]]]))  # sign / sqrt(4)
    assert out.indices.tolist() == [[[0b1001]]]
    z_hat = q(torch.randn(3, 4, 2, 2)).z_hat
    assert torch.allclose(z_hat.norm(dim=1), torch.ones(3, 2, 2))


def test_codebook_bits_packing():
    q = BinarySphericalQuantizer(64)  # default: 4 indices of 16 bits
    assert (q.num_groups, q.codebook_size, q.bits_per_token) == (4, 2**16, 64)
    h = torch.randn(2, 3, 64)
    assert torch.equal(q.dequantize(q.quantize(h)), q.eval()(h).z_hat)


def test_entropy_terms_on_known_distributions():
    bits = 4
    codes = torch.arange(2**bits)
    corners = (((codes[:, None] >> torch.arange(bits - 1, -1, -1)) & 1).float() * 2 - 1) / 2  # unit norm
    per_sample, codebook = bsq_entropy_terms(corners, inv_temperature=200.0, group_size=bits)
    assert per_sample.item() == pytest.approx(0.0, abs=1e-6)  # confident
    assert codebook.item() == pytest.approx(bits * math.log(2), abs=1e-5)  # uniform over 16 codes
    per_sample, codebook = bsq_entropy_terms(corners[:1].repeat(8, 1), 200.0, group_size=2)
    assert codebook.item() == pytest.approx(0.0, abs=1e-6)  # collapsed
    # at u = 0 every bit is a fair coin: per-sample entropy L log 2
    per_sample, _ = bsq_entropy_terms(torch.zeros(3, bits), 1.0, group_size=1)
    assert per_sample.item() == pytest.approx(bits * math.log(2))


def test_group_approximation_upper_bounds_the_joint_entropy():
    u = torch.nn.functional.normalize(torch.randn(64, 6, generator=torch.Generator().manual_seed(0)), dim=-1)
    joint = bsq_entropy_terms(u, 2.0, group_size=6)[1]
    for g in (1, 2, 3):
        assert bsq_entropy_terms(u, 2.0, group_size=g)[1] >= joint - 1e-6


def test_matches_library_spherical_lfq():
    """Quantization, per-sample and (full-group) codebook entropy equal LFQ(spherical=True)'s."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 6, 4, generator=g)
    tau = 1.5
    lib = LFQ(dim=4, codebook_size=16, spherical=True, has_projections=False).train()
    (codes, idx, _), parts = lib(h, inv_temperature=tau, return_loss_breakdown=True)
    q = BinarySphericalQuantizer(4, inv_temperature=tau, entropy_group_size=4).train()
    out = q(h)
    assert torch.allclose(out.z_hat, codes, atol=1e-6)
    assert torch.equal(out.indices[..., 0], idx.long())
    u = torch.nn.functional.normalize(h, dim=-1).reshape(-1, 4)
    per_sample, codebook = bsq_entropy_terms(u, tau, group_size=4)
    assert per_sample.item() == pytest.approx(parts.per_sample_entropy.item(), rel=1e-4)
    assert codebook.item() == pytest.approx(parts.batch_entropy.item(), rel=1e-4)
    assert out.losses["entropy"].item() == pytest.approx(0.1 * (per_sample - codebook).item(), rel=1e-5)


def test_binary_entropy_edges():
    assert torch.equal(binary_entropy(torch.tensor([0.0, 1.0])), torch.zeros(2))
    assert binary_entropy(torch.tensor(0.5)).item() == pytest.approx(math.log(2))
