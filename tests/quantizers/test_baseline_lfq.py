"""LFQ: sign quantization, index bits, entropy on known distributions, wrapper against the library."""

from __future__ import annotations

import math

import pytest
import torch
from vector_quantize_pytorch import LFQ

from gaussquant.quantizers.lfq import LookupFreeQuantizer


def test_signs_and_msb_first_indices():
    q = LookupFreeQuantizer(codebook_bits=3, num_groups=2).eval()
    h = torch.tensor([[[0.5, -2.0, 3.0, -0.1, -0.2, 0.0]]])  # bits 101 | 000 (0 maps to -1)
    out = q(h)
    assert torch.equal(out.z_hat, torch.tensor([[[1.0, -1.0, 1.0, -1.0, -1.0, -1.0]]]))
    assert out.indices.tolist() == [[[5, 0]]]
    assert q.bits_per_token == 6


def _corners(bits: int, repeats: int, scale: float) -> torch.Tensor:
    codes = torch.arange(2**bits)
    signs = ((codes[:, None] >> torch.arange(bits - 1, -1, -1)) & 1).float() * 2 - 1
    return (signs * scale).repeat(repeats, 1)[None]  # (1, N, bits)


def test_entropy_uniform_confident_codes():
    q = LookupFreeQuantizer(codebook_bits=4, num_groups=1, entropy_weight=0.1, commitment_weight=0.0).train()
    out = q(_corners(4, 3, scale=5.0))  # every code equally often, far from the decision boundaries
    # per-sample entropy ~0, codebook entropy log(16): entropy loss = 0.1 * (0 - log 16)
    assert out.losses["entropy"].item() == pytest.approx(-0.1 * math.log(16), abs=1e-3)


def test_entropy_collapsed_codes():
    q = LookupFreeQuantizer(codebook_bits=4, num_groups=1).train()
    out = q(torch.full((1, 10, 4), 5.0))  # all tokens on one code: both entropies ~0
    assert abs(out.losses["entropy"].item()) < 1e-3
    assert out.losses["commitment"].item() == pytest.approx(0.025 * 16.0)  # (5 - 1)^2 = 16


def test_wrapper_matches_library_losses_and_codes():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 8, 3, 3, generator=g)
    ours = LookupFreeQuantizer(codebook_bits=4, num_groups=2, inv_temperature=10.0,
                               codebook_entropy="per_codebook").train()
    lib = LFQ(dim=8, codebook_size=16, num_codebooks=2, entropy_loss_weight=0.1, commitment_loss_weight=0.025,
              has_projections=False).train()
    out = ours(h)
    (codes, idx, aux), parts = lib(h, inv_temperature=10.0, return_loss_breakdown=True)
    assert torch.allclose(out.z_hat, codes)
    assert torch.equal(out.indices, idx.long().permute(0, 3, 1, 2))  # library keeps groups last
    assert torch.allclose(out.losses["entropy"] + out.losses["commitment"], aux, atol=1e-6)


def test_eval_has_no_auxiliary_terms():
    q = LookupFreeQuantizer(codebook_bits=2, num_groups=1).eval()
    out = q(torch.randn(1, 4, 2))
    assert out.losses["entropy"].item() == 0 and out.losses["commitment"].item() == 0


def test_bad_bits():
    with pytest.raises(ValueError, match="num_groups"):
        LookupFreeQuantizer(codebook_bits=20)
