"""Fréchet distances (reference check, EfficientNet-Lite0 features, TorchScript rFID path) and codebook usage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gaussquant.eval import fid
from gaussquant.eval.codebook_stats import CodebookUsage
from gaussquant.eval.fid import EffNetLite0Features, FeatureStats, FrechetDistance, InceptionFeatures
from gaussquant.eval.streaming import StreamingSums


def test_frechet_matches_scipy_reference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.5 + 0.3
    stats = []
    for feats in (a, b):
        s = FeatureStats(6)
        s.update(torch.from_numpy(feats[:20]))
        s.update(torch.from_numpy(feats[20:]))
        mean, cov = s.mean_cov()
        assert np.allclose(mean, feats.mean(0)) and np.allclose(cov, np.cov(feats, rowvar=False))
        stats.append((mean, cov))
    (m1, s1), (m2, s2) = stats
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert fid.frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-8)
    assert fid.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)
    # singular covariance (fewer samples than dimensions) takes the eigen route: same answer
    low = np.cov(a[:4], rowvar=False)
    ref_low = float(np.trace(low + s2 - 2 * scipy.linalg.sqrtm(low @ s2).real))
    assert fid.frechet_distance(m2, low, m2, s2) == pytest.approx(ref_low, rel=1e-6)
    factor = fid.psd_factor(low)
    assert factor.shape == (6, 3) and np.allclose(factor @ factor.T, low, atol=1e-12)


def test_effnet_fd_of_a_set_against_itself_is_zero():
    extractor = EffNetLite0Features()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metric = FrechetDistance(extractor)
    metric.update(x, x)
    scale = float(np.trace(metric.real.mean_cov()[1]))  # FD is a difference of traces of this size
    assert metric.count == 3 and scale > 0 and abs(metric.compute()) < 1e-6 * scale


class _FakeInception(torch.nn.Module):
    """Stands in for the TorchScript Inception: same call signature, uint8 input."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8 and return_features
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float(), 8).flatten(1)
        return torch.cat([pooled] * 11, dim=1)[:, :2048]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_rfid_loads_torchscript_file(tmp_path):
    torch.jit.script(_FakeInception()).save(str(tmp_path / fid.INCEPTION_FILE))
    digest = fid.file_sha256(tmp_path / fid.INCEPTION_FILE)  # the stand-in is not the release: trust it by name
    metric = FrechetDistance(InceptionFeatures(weights_dir=tmp_path, sha256=digest))
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    metric.update(x, x)
    real, fake = metric.real.mean_cov(), metric.fake.mean_cov()
    assert metric.count == 3 and real[0].shape == (2048,)
    assert np.array_equal(real[0], fake[0]) and np.array_equal(real[1], fake[1])
    (tmp_path / fid.INCEPTION_FILE).write_bytes(b"truncated")
    with pytest.raises(ValueError, match=fid.INCEPTION_FILE):
        InceptionFeatures(weights_dir=tmp_path, sha256="skip")


def test_codebook_usage_uniform_and_exact():
    k, g = 16, 2
    gen = torch.Generator().manual_seed(0)
    usage = CodebookUsage(k, g)
    for _ in range(4):
        usage.update(torch.randint(0, k, (8, 50, g), generator=gen))  # (B, L, G)
    stats = usage.compute()
    assert stats["codebook_usage"] == 1.0 and stats["num_tokens"] == 1600
    assert abs(stats["index_entropy_bits"] - math.log2(k)) < 0.05
    exact = CodebookUsage(4, 1)
    exact.update(torch.tensor([0, 0, 1, 2]).view(1, 1, 2, 2))  # (B, G, H, W); code 3 unused
    s = exact.compute()
    assert s["codebook_usage"] == 0.75 and s["index_entropy_bits"] == pytest.approx(1.5)
    assert s["perplexity"] == pytest.approx(2**1.5)
    with pytest.raises(ValueError, match="out of range"):
        exact.update(torch.tensor([4]).view(1, 1, 1, 1))


def test_all_reduce_in_a_one_rank_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        usage = CodebookUsage(4, 1)
        usage.update(torch.tensor([[[1], [2]]]))
        usage.all_reduce()
        assert usage.counts.tolist() == [[0, 1, 1, 0]]
    finally:
        dist.destroy_process_group()
    with pytest.raises(TypeError):
        StreamingSums().merge(usage)
