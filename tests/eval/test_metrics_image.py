"""PSNR / SSIM / MS-SSIM / LPIPS metrics and the ReconstructionMetrics bundle."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from gaussquant.eval.metrics import PSNR, PSNR_CAP_DB, SSIM, ReconstructionMetrics, psnr_uint8

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))
from test_perceptual_lpips import write_random_lpips_weights  # noqa: E402


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_psnr_reference_and_cap():
    x = _images(3, 16, 0)
    noisy = (x + 0.05 * _images(3, 16, 1)).clamp(-1, 1)
    a = ((x + 1) * 127.5).round()
    b = ((noisy + 1) * 127.5).round()
    expected = [10 * math.log10(255**2 / float(((a[i] - b[i]) ** 2).mean())) for i in range(3)]
    assert torch.allclose(psnr_uint8(x, noisy), torch.tensor(expected, dtype=torch.float64), atol=1e-9)
    metric = PSNR()
    metric.update(x, x)
    assert metric.compute() == PSNR_CAP_DB and metric.count == 3
    # values that round to the same uint8 are identical images
    snapped = ((x + 1) * 127.5).round() / 127.5 - 1
    assert psnr_uint8(snapped, snapped + 1e-4).tolist() == [PSNR_CAP_DB] * 3


def test_ssim_identical_is_one_and_merge_equals_whole():
    x, y = _images(4, 24, 2), _images(4, 24, 3)
    same = SSIM()
    same.update(x, x)
    assert same.compute() == pytest.approx(1.0, abs=1e-6)
    whole, first, second = PSNR(), PSNR(), PSNR()
    whole.update(x, y)
    first.update(x[:1], y[:1])
    second.update(x[1:], y[1:])
    first.merge(second)
    assert first.count == 4 and first.compute() == pytest.approx(whole.compute(), rel=1e-12)


def test_bundle_keys_unavailable_and_merge(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSQUANT_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    write_random_lpips_weights(tmp_path, "alex")
    options = dict(fd_effnet=False, codebook_size=8, num_groups=2)
    x, y = _images(4, 64, 4), _images(4, 64, 5)
    idx = torch.randint(0, 8, (4, 2, 3, 3), generator=torch.Generator().manual_seed(0))
    whole = ReconstructionMetrics(**options)
    whole.update(x, y, idx)
    result = whole.compute()
    for key in ("num_images", "psnr", "ssim", "ms_ssim", "lpips_vgg", "lpips_alex", "lpips", "rfid",
                "fd_effnet_lite0", "unavailable", "codebook_usage", "index_entropy_bits", "perplexity"):
        assert key in result
    assert result["num_images"] == 4 and result["lpips"] == result["lpips_alex"] > 0
    assert result["ms_ssim"] is None and "161" in result["unavailable"]["ms_ssim"]
    assert result["lpips_vgg"] is None and "vgg16-397923af.pth" in result["unavailable"]["lpips_vgg"]
    assert result["rfid"] is None and "inception-2015-12-05.pt" in result["unavailable"]["rfid"]
    assert "not requested" in result["unavailable"]["fd_effnet_lite0"]
    halves = [ReconstructionMetrics(**options) for _ in range(2)]
    halves[0].update(x[:3], y[:3], idx[:3])
    halves[1].update(x[3:], y[3:], idx[3:])
    halves[0].merge(halves[1])
    merged = halves[0].compute()
    for key in ("psnr", "ssim", "lpips", "codebook_usage", "index_entropy_bits"):
        # float32 networks may pick other kernels for other batch sizes: LPIPS agrees to ~1e-7
        assert merged[key] == pytest.approx(result[key], rel=1e-6, abs=1e-12)
    assert set(whole.protocol()) >= {"psnr", "ssim", "lpips", "rfid", "fd_effnet_lite0"}
