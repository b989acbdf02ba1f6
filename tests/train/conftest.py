"""Tiny training configs shared by the train tests (unet-tiny at 16 px, a few steps, batch 2)."""

from __future__ import annotations

import pytest


def tiny_overrides(out, **extra) -> list[str]:
    base = {
        "model.image_size": 16, "data.image_size": 16, "data.num_crops": 32, "data.eval_crops": 4,
        "batch_size": 2, "steps": 4, "log_every": 1, "image_every": 100, "ckpt_every": 100,
        "optim.warmup_steps": 0, "out": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def band_steps() -> list[tuple["torch.Tensor", "torch.Tensor"]]:
    """Per-group KLs in bits (B, H=2, W=2, G=2) of three TDC steps for T = 8, tau = 0.5, as (rank 0's part,
    rank 1's part) of the global batch: rank 0's KLs all above T + tau, rank 1's all below T - tau.

    Global decisions (lambda, lambda_max, lambda_min): step 1 mean 8.5 -> (up, up, down); step 2 mean 7 ->
    (down, up, down); step 3 one image at 11 and three at 6, mean 7.25 -> (down, up, down), while the mean of
    the two ranks' means (8.5) would say up.
    """
    import torch

    def full(images: int, value: float) -> torch.Tensor:
        return torch.full((images, 2, 2, 2), value)

    return [(full(2, 10.0), full(2, 7.0)), (full(2, 9.0), full(2, 5.0)), (full(1, 11.0), full(3, 6.0))]


@pytest.fixture
def tiny_config(tmp_path):
    from gaussquant.train.config import load_config

    def make(preset: str = "unet-tiny-gq", out=None, **extra):
        return load_config(preset, tiny_overrides(out or tmp_path / "run", **extra))

    return make
