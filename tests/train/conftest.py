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


@pytest.fixture
def tiny_config(tmp_path):
    from gaussquant.train.config import load_config

    def make(preset: str = "unet-tiny-gq", out=None, **extra):
        return load_config(preset, tiny_overrides(out or tmp_path / "run", **extra))

    return make
