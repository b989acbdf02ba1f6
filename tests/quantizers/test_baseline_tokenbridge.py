"""TokenBridge: bin edges and centroids against closed form (scipy), nearest-level assignment, range maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from gaussquant.quantizers.tokenbridge import TokenBridgeQuantizer, normal_quantile_edges, truncated_normal_means


@pytest.mark.parametrize("bits", [1, 3, 6])
@pytest.mark.parametrize("clamp", [3.0, None])
def test_edges_and_centroids_match_scipy(bits, clamp):
    edges = normal_quantile_edges(bits, clamp)
    ref = stats.norm.ppf(np.arange(2**bits + 1) / 2**bits)
    if clamp is not None:
        ref = np.clip(ref, -clamp, clamp)
    assert np.allclose(edges.numpy(), ref, atol=1e-12)
    levels = truncated_normal_means(edges).numpy()
    ref_levels = stats.truncnorm.mean(ref[:-1], ref[1:])
    assert np.allclose(levels, ref_levels, atol=1e-9)
    assert np.all(np.diff(levels) > 0) and np.allclose(levels, -levels[::-1], atol=1e-12)


def test_one_bit_levels_are_half_normal_means():
    q = TokenBridgeQuantizer(1, 1, edge_clamp=None)
    assert torch.allclose(q.levels, torch.tensor([-1.0, 1.0]) * np.sqrt(2 / np.pi))


def test_nearest_level_and_default_range_map():
    g = torch.Generator().manual_seed(0)
    q = TokenBridgeQuantizer(3, 4, input="mean").eval()  # the range map, on the mean
    mean = torch.randn(2, 3, 5, 5, generator=g) * 3
    h = torch.cat([mean, torch.zeros_like(mean)], dim=1)  # (mean, logvar)
    out = q(h)
    u = (mean * 0.6).clamp(-3, 3)  # [-5, 5] onto [-3, 3], scale factor 1
    ref = (u[..., None] - q.levels).abs().argmin(-1)  # brute force, ties to the lowest index
    assert torch.equal(out.indices, ref)
    assert torch.allclose(out.z_hat, q.levels[ref] * 5 / 3)
    assert torch.equal(q.dequantize(out.indices), out.z_hat)


def test_scale_factor_and_fitted_range():
    q = TokenBridgeQuantizer(2, 2, scale_factor=0.25)
    assert torch.allclose(q.channel_scale, torch.full((2,), 0.25 * 3 / 5))
    latents = torch.randn(4, 100, 2, generator=torch.Generator().manual_seed(1)) * torch.tensor([0.5, 2.0])
    scale = q.fit_range(latents)
    assert torch.allclose(scale, 1 / latents.reshape(-1, 2).double().std(0).float())
    state = q.state_dict()
    assert torch.equal(state["channel_scale"], scale)
    with pytest.raises(ValueError, match="constant"):
        q.fit_range(torch.ones(1, 5, 2))


def test_sample_input_uses_the_generator_and_reports_kl():
    q = TokenBridgeQuantizer(2, 3, input="sample")
    h = torch.randn(1, 4, 4)  # (B, L, 2C)
    a = q(h, generator=torch.Generator().manual_seed(5))
    b = q(h, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.indices, b.indices)
    assert a.kl_bits.shape == (1, 4, 2) and a.posterior is not None
    idx = q.quantize(h, generator=torch.Generator().manual_seed(5))
    assert torch.equal(idx, a.indices)


def test_rate_and_errors():
    q = TokenBridgeQuantizer(16, 1)
    assert (q.in_channels, q.num_groups, q.codebook_size, q.bits_per_token) == (32, 16, 2, 16.0)
    with pytest.raises(ValueError, match="input"):
        TokenBridgeQuantizer(4, 2, input="mode")
    with pytest.raises(ValueError, match="latent channels"):
        q(torch.randn(1, 16, 2, 2))  # needs mean and logvar: 32 channels
