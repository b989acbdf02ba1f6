"""``gaussquant train --dry-run``: parameters, activation memory per image and a step time, nothing written."""

from __future__ import annotations

import pytest
import torch

from gaussquant.cli import main
from gaussquant.models.presets import build_autoencoder
from gaussquant.quantizers.build import build_bottleneck
from gaussquant.train.config import load_config
from gaussquant.train.dry_run import dry_run, saved_tensor_bytes


def test_saved_tensor_bytes_counts_what_autograd_keeps():
    weight = torch.nn.Parameter(torch.randn(16, 32))
    x = torch.randn(5, 16, requires_grad=True)

    def run():
        (x @ weight).relu().sum().backward()  # saves x (for weight's grad) and relu's output

    assert saved_tensor_bytes(run, exclude=[weight]) == 5 * 16 * 4 + 5 * 32 * 4
    assert saved_tensor_bytes(run, exclude=[]) == 5 * 16 * 4 + 5 * 32 * 4 + 16 * 32 * 4  # weight saved too


def test_dry_run_of_a_tiny_preset_measures_real_sizes():
    cfg = load_config("vit-tiny-gq", ["device=cpu"])
    report = dry_run(cfg)
    model = build_autoencoder(cfg.model, build_bottleneck(cfg.bottleneck))
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.step_batch == 1 and report.step_seconds > 0 and report.peak_device_bytes is None
    # at least the input image and the output image are kept per image (fp32)
    assert report.activation_bytes_per_image > 2 * 3 * 32 * 32 * 4
    bigger = dry_run(load_config("vit-tiny-gq", ["device=cpu", "model.image_size=64", "data.image_size=64"]))
    ratio = bigger.activation_bytes_per_image / report.activation_bytes_per_image
    assert 3.0 < ratio < 5.0, ratio  # 4x the pixels: about 4x the activations (ViT tokens grow 4x)


def test_cli_dry_run_prints_sizes_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "unet-tiny-gq", "--dry-run", "--out", str(out), "--set", "device=cpu"]) == 0
    text = capsys.readouterr().out
    assert "parameters:" in text and "MiB per image" in text and "step time:" in text
    assert not out.exists()


def test_a_slow_cpu_step_is_not_run_twice(monkeypatch):
    from gaussquant.train import dry_run as module

    monkeypatch.setattr(module, "SLOW_STEP_S", 0.0)
    report = dry_run(load_config("vit-tiny-gq", ["device=cpu"]))
    assert report.step_seconds > 0 and report.step_batch == 1
    assert any("first (measuring) step" in note for note in report.notes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dry_run_on_cuda_times_the_configured_batch_and_reports_peak_memory():
    cfg = load_config("unet-tiny-gq", ["device=cuda"])
    report = dry_run(cfg, steps=2)
    assert report.device.startswith("cuda") and report.step_batch == cfg.batch_size
    # the peak holds at least the weights, their gradients and the activations of the timed batch
    assert report.peak_device_bytes > report.params * 4 * 2 + report.activation_bytes_per_image * cfg.batch_size
