"""The baselines' defaults are the GQ reference's settings, each alternative one option away (issue 11).

One test per setting: BSQ temperature 0.01, VQ beta on the codebook term and strided groups, LFQ pooled
codebook entropy, TokenBridge quantizing a posterior sample.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gaussquant.quantizers.bsq import BinarySphericalQuantizer, bsq_entropy_terms
from gaussquant.quantizers.build import (
    BSQConfig,
    LFQConfig,
    TokenBridgeConfig,
    VQConfig,
    build_bottleneck,
)
from gaussquant.quantizers.lfq import LookupFreeQuantizer
from gaussquant.quantizers.tokenbridge import TokenBridgeQuantizer
from gaussquant.quantizers.vq import VectorQuantizer


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_bsq_default_inverse_temperature_is_the_references_100():
    assert BSQConfig().inv_temperature == 100.0
    assert build_bottleneck(BSQConfig(latent_channels=16)).inv_temperature == 100.0
    u = F.normalize(_randn(1024, 16), dim=-1)  # 1024 unit-norm tokens, L = 16
    per_bit_flat = bsq_entropy_terms(u, inv_temperature=1.0, group_size=8)[0].item() / 16
    per_bit_sharp = bsq_entropy_terms(u, inv_temperature=100.0, group_size=8)[0].item() / 16
    # at 1.0 the per-sample entropy is almost its maximum (0.686 of log 2 nats per bit); at 100 far below
    assert per_bit_flat == pytest.approx(0.686, abs=0.005) and math.log(2) - per_bit_flat < 0.01
    assert per_bit_sharp < 0.3
    # and the quantizer's loss uses its inverse temperature
    q100, q1 = BinarySphericalQuantizer(16).train(), BinarySphericalQuantizer(16, inv_temperature=1.0).train()
    h = u.reshape(16, 64, 16)
    assert q100(h).losses["entropy"].item() != pytest.approx(q1(h).losses["entropy"].item(), abs=1e-3)


def test_vq_default_puts_beta_on_the_codebook_term_and_corrected_is_an_option():
    assert VQConfig().legacy is True
    h = _randn(2, 4, 3, 3)
    legacy = VectorQuantizer(4, 8).train()
    corrected = VectorQuantizer(4, 8, legacy=False).train()
    corrected.load_state_dict(legacy.state_dict())
    a, b = legacy(h), corrected(h)
    mse = a.losses["commitment"]  # legacy: commitment unweighted
    assert torch.allclose(a.losses["codebook"], 0.25 * mse)
    assert torch.allclose(b.losses["codebook"], mse) and torch.allclose(b.losses["commitment"], 0.25 * mse)


def test_vq_groups_channels_strided_by_default_like_the_reference():
    assert VQConfig().grouping == "strided"
    q = VectorQuantizer(4, 16, codebook_dim=2, seed=3).eval()
    with torch.no_grad():
        q.codebook.copy_(_randn(16, 2, seed=4))
    h = _randn(2, 5, 4, seed=5)  # (B, L, C) token-last
    idx = q.quantize(h)  # (B, L, G=2)
    # the reference's z.view(-1, dim, codebook_num): group g = channels {g, g + G, ...}
    for g in range(2):
        z = h[..., g::2]  # (B, L, d)
        expected = torch.cdist(z.reshape(-1, 2), q.codebook).argmin(-1).reshape(2, 5)
        assert torch.equal(idx[..., g], expected)
    z_hat = q.dequantize(idx)
    assert torch.equal(z_hat[..., 0::2], q.codebook[idx[..., 0]])
    assert torch.equal(z_hat, q(h).z_hat)
    contiguous = VectorQuantizer(4, 16, codebook_dim=2, grouping="contiguous", seed=3).eval()
    contiguous.load_state_dict(q.state_dict())
    first = torch.cdist(h[..., :2].reshape(-1, 2), q.codebook).argmin(-1).reshape(2, 5)
    assert torch.equal(contiguous.quantize(h)[..., 0], first)
    with pytest.raises(ValueError, match="grouping must be one of"):
        VectorQuantizer(4, 16, codebook_dim=2, grouping="interleaved")


def _confident_codes(split: bool) -> torch.Tensor:
    """(1, 8, 8): 8 tokens of 2 LFQ codebooks x 4 bits, each token a confident corner."""
    codes = torch.arange(16)
    signs = ((codes[:, None] >> torch.arange(3, -1, -1)) & 1).float() * 2 - 1  # (16, 4) msb first
    first, second = (signs[:8], signs[8:]) if split else (signs[:8], signs[:8])
    return (torch.cat([first, second], dim=-1) * 5.0)[None]


def test_lfq_pools_the_codebook_entropy_by_default_like_the_reference():
    assert LFQConfig().codebook_entropy == "pooled"
    pooled = LookupFreeQuantizer(4, 2, commitment_weight=0.0).train()
    per_codebook = LookupFreeQuantizer(4, 2, commitment_weight=0.0, codebook_entropy="per_codebook").train()
    # codebook 1 uses codes 0..7, codebook 2 codes 8..15: each has log 8 nats alone, log 16 pooled
    h = _confident_codes(split=True)
    assert pooled(h).losses["entropy"].item() == pytest.approx(-0.1 * math.log(16), abs=1e-3)
    assert per_codebook(h).losses["entropy"].item() == pytest.approx(-0.1 * math.log(8), abs=1e-3)
    # both codebooks on the same 8 codes: pooling sees only 8 codes too
    same = _confident_codes(split=False)
    assert pooled(same).losses["entropy"].item() == pytest.approx(-0.1 * math.log(8), abs=1e-3)
    with pytest.raises(ValueError, match="codebook_entropy"):
        LookupFreeQuantizer(4, 2, codebook_entropy="joint")


def test_lfq_pooled_entropy_equals_the_references_formula_on_random_latents():
    h = _randn(3, 16, 16, seed=2) * 0.05  # (B, L, 2 x 8 bits), near the boundaries: soft assignments
    q = LookupFreeQuantizer(8, 2, inv_temperature=100.0, commitment_weight=0.0, entropy_weight=1.0).train()
    codes = q.lfq.codebook.float()  # (256, 8)
    probs = torch.softmax(2 * h.reshape(-1, 2, 8) @ codes.T / 0.01, -1)  # the reference: logits / 0.01
    avg = probs.reshape(-1, 256).mean(0)
    per_sample = -(probs * torch.log_softmax(2 * h.reshape(-1, 2, 8) @ codes.T / 0.01, -1)).sum(-1).mean()
    expected = per_sample + (avg * torch.log(avg.clamp_min(1e-5))).sum()
    assert q(h).losses["entropy"].item() == pytest.approx(expected.item(), abs=1e-4)


def test_tokenbridge_quantizes_a_posterior_sample_by_default():
    assert TokenBridgeConfig().input == "sample"
    c = 4
    mean, logvar = _randn(2, 6, c, seed=7), torch.full((2, 6, c), math.log(0.25))
    h = torch.cat([mean, logvar], dim=-1)  # (B, L, 2C) moments
    q = TokenBridgeQuantizer(c, codebook_bits=4).eval()
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))  # noise_seed 0
    by_hand = TokenBridgeQuantizer(c, codebook_bits=4, input="mean")
    expected = by_hand.quantize(torch.cat([mean + 0.5 * eps, logvar], dim=-1))
    assert torch.equal(q.quantize(h), expected)
    assert torch.equal(q(h).indices, expected)  # deterministic: the same batch gives the same tokens
    assert not torch.equal(by_hand.quantize(h), expected)  # the mean is a different input
    other = q.quantize(h, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other, expected)


def test_bsq_gradients_stay_finite_at_the_references_temperature():
    # at inverse temperature 100 sigmoid saturates to exactly 0 / 1: the entropy terms must not give NaN
    h = (_randn(2, 8, 3, 4, seed=9) * 1.5).requires_grad_(True)
    q = BinarySphericalQuantizer(8, codebook_bits=4).train()
    out = q(h)
    (out.z_hat.square().sum() + out.losses["entropy"]).backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    x = torch.tensor([-1e4, -3.0, 0.0, 2.0, 1e4])
    from gaussquant.quantizers.bsq import binary_entropy, binary_entropy_from_logits

    torch.testing.assert_close(binary_entropy_from_logits(x), binary_entropy(torch.sigmoid(x)))
