"""Comparable codebook and distribution metrics, checked against values computed by hand."""

import math

import pytest
import torch
from torch import nn

from gaussquant.convertibility import KLAccumulator, fine_percentile, fine_counts
from gaussquant.eval.codebook_stats import CodebookUsage
from gaussquant.eval.evaluate import evaluate
from gaussquant.eval.fid import FrechetDistance
from gaussquant.eval.kid import kernel_distance, polynomial_mmd2_unbiased
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.build import GaussianConfig, build_bottleneck
from gaussquant.quantizers.code_stats import (code_statistics, entropy_bits, miller_madow_bits, usage,
                                              usage_vs_reachable)

FAST = {"lpips": False, "rfid": False, "fd_effnet": False}


def test_entropy_usage_and_miller_madow_by_hand():
    counts = torch.tensor([2, 1, 1, 0])  # N = 4, m = 3 codes seen; p = (1/2, 1/4, 1/4)
    assert entropy_bits(counts).item() == pytest.approx(1.5)
    assert miller_madow_bits(counts).item() == pytest.approx(1.5 + 2 / (2 * 4 * math.log(2)))
    assert usage(counts).item() == 0.75 and usage_vs_reachable(counts).item() == 0.75
    wide = torch.cat([counts, torch.zeros(12, dtype=torch.long)])  # K = 16 but only 4 tokens: 3 of 4 reachable
    assert usage(wide).item() == 3 / 16 and usage_vs_reachable(wide).item() == 0.75
    stats = code_statistics(torch.tensor([0, 0, 1, 2]), 4)  # the quantizers' per-batch statistics
    assert stats["index_entropy_bits"].item() == pytest.approx(1.5)
    assert stats["perplexity"].item() == pytest.approx(2**1.5) and stats["usage"].item() == 0.75


def test_joint_entropy_of_whole_tokens_by_hand():
    tokens = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [2, 3]]])  # (B=2, L=2, G=2)
    u = CodebookUsage(4, 2)
    u.update(tokens[:1])
    u.update(tokens[1:])  # the joint table is merged across batches
    s = u.compute()
    # each group: codes (0, 0, 1, 2) / (0, 0, 1, 3) -> 1.5 bits; whole tokens (0,0) x2, (1,1), (2,3) -> 1.5 bits
    assert s["index_entropy_bits"] == pytest.approx(1.5) and s["joint_entropy_bits"] == pytest.approx(1.5)
    assert s["joint_entropy_mm_bits"] == pytest.approx(1.5 + 2 / (8 * math.log(2)))
    assert s["distinct_tokens"] == 3 and s["bits_per_token_rate"] == 4.0 and s["max_joint_entropy_bits"] == 2.0
    assert s["num_tokens"] == 4 and s["reachable_codes"] == 4 and s["codebook_usage_vs_reachable"] == 0.75
    assert "biased low" in s["entropy_estimator"]  # 4 tokens for K = 4
    single = CodebookUsage(4, 1)
    single.update(torch.tensor([[[0], [0], [1], [2]]]))
    assert single.compute()["joint_entropy_bits"] == pytest.approx(1.5)  # G = 1: the group entropy
    other = CodebookUsage(4, 2)
    other.update(tokens)
    merged = CodebookUsage(4, 2)
    merged.merge(other)
    assert merged.compute()["joint_entropy_bits"] == pytest.approx(1.5)


def test_kid_by_hand_and_against_shifted_features():
    x = torch.eye(2)  # k = (x.y / 2 + 1)^3: 3.375 on the diagonal, 1 off it
    assert polynomial_mmd2_unbiased(x, x) == pytest.approx(1 + 1 - 2 * (2 * 3.375 + 2) / 4)
    mean, std, m = kernel_distance(x, x)
    assert (mean, std, m) == (pytest.approx(-2.375), 0.0, 2)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 8, generator=gen), torch.randn(300, 8, generator=gen)
    same, _, _ = kernel_distance(a, b, num_subsets=20, subset_size=100)
    shifted, spread, _ = kernel_distance(a, b + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 0.05 < shifted and spread > 0


class _Flat(nn.Module):
    dim = 4

    def forward(self, x):
        return x.flatten(1)[:, :4]


def test_frechet_warns_with_fewer_images_than_dimensions():
    gen = torch.Generator().manual_seed(0)
    few = FrechetDistance(_Flat())
    few.update(torch.rand(3, 3, 2, 2, generator=gen), torch.rand(3, 3, 2, 2, generator=gen))
    few.compute()
    assert "3 images in 4 feature dimensions" in few.warning
    many = FrechetDistance(_Flat())
    many.update(torch.rand(9, 3, 2, 2, generator=gen), torch.rand(9, 3, 2, 2, generator=gen))
    many.compute()
    assert many.warning is None and many.kernel_distance()[2] == 9


def test_kl_percentiles_and_in_band_by_hand():
    values = torch.tensor([0.1, 1.0, 2.0, 3.0])
    fine = fine_counts(values)
    assert fine_percentile(fine, 0.5, 0.1, 3.0) == pytest.approx(1.0625)  # centre of the 0.125-bit bin of 1.0
    assert fine_percentile(fine, 0.99, 0.1, 3.0) == 3.0  # clamped to the max
    # d = 1, logvar 0: KL = mean^2 / (2 ln 2) bits; group KLs 8.1, 8.1, 2, 20 against the band 8 +- 0.5
    kls = torch.tensor([8.1, 8.1, 2.0, 20.0])
    mean = (kls * 2 * math.log(2)).sqrt().view(1, 4, 1)  # (B=1, L=4, C=1)
    acc = KLAccumulator(256, 1, target_bits=8.0, tolerance_bits=0.5)
    acc.update(mean, torch.zeros_like(mean))
    r = acc.report()
    assert r.fraction_in_band == pytest.approx(0.5) and r.fraction_groups_in_band == 0.0  # one group, mean 9.55
    assert r.kl_bits_percentiles["50"] == pytest.approx(8.0625) and r.kl_bits_max == pytest.approx(20.0)


def test_eval_json_carries_the_comparable_keys():
    torch.manual_seed(0)  # weights of the tiny model; tests only
    bottleneck = build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=2, target_bits=3.0))
    model = build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16), bottleneck).eval()
    out = evaluate(model, None, image_size=16, num_crops=3, batch_size=2, metric_options=FAST)
    kl = out["kl_bits"]
    assert kl["target_bits"] == 3.0 and kl["tolerance_bits"] == 0.5 and 0.0 <= kl["in_band"] <= 1.0
    assert set(kl["percentiles"]) == {"1", "50", "99"} and kl["min"] <= kl["percentiles"]["50"] <= kl["max"]
    assert kl["num_group_tokens"] == 3 * 4 * 4 * 2  # 3 images, 4 x 4 tokens, 2 groups
