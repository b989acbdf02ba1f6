import json

import numpy as np
import pytest
import torch

from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.models.autoencoder import Autoencoder
from gaussquant.quantizers.build import FSQConfig, build_bottleneck
from gaussquant.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from gaussquant.train.monitor import image_grid


def _fsq_model(arch="unet-tiny"):
    torch.manual_seed(0)
    cfg = FSQConfig(levels=[8, 6, 5])
    mcfg = ModelConfig(arch=arch, image_size=16)
    return build_autoencoder(mcfg, build_bottleneck(cfg)), mcfg, cfg


def test_save_and_load_pretrained_round_trip(tmp_path):
    model, mcfg, bcfg = _fsq_model()
    model.save_pretrained(tmp_path / "m", extra={"note": "x"})
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format"] == "gaussquant-autoencoder" and meta["version"] == 1
    assert meta["bottleneck"]["kind"] == "fsq" and meta["bits_per_token"] == pytest.approx(np.log2(240))
    loaded = Autoencoder.from_pretrained(tmp_path / "m")
    assert loaded.metadata["note"] == "x" and not loaded.training
    assert loaded.config.model == mcfg and loaded.config.bottleneck == bcfg
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded(x).x_hat, model.eval()(x).x_hat, rtol=0, atol=0)


def test_truncated_and_foreign_weights_are_clear_errors(tmp_path):
    model, mcfg, bcfg = _fsq_model()
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Autoencoder.from_pretrained(tmp_path / "m")
    other, _, _ = _fsq_model("vit-tiny")
    other.save_pretrained(tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "config.json").read_text())
    meta["model"]["arch"] = "unet-tiny"  # the config lies about the weights
    (tmp_path / "v" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another architecture.*missing.*unexpected"):
        Autoencoder.from_pretrained(tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Autoencoder.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="ema"):
        Autoencoder.from_pretrained(tmp_path / "v", use_ema=True)


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        save_checkpoint(root, step, meta={"step": step}, weights={"model": {"w": torch.full((2,), float(step))}},
                        training_state={"step": step, "rng": [torch.get_rng_state()]}, keep_last=2)
    assert [p.name for p in list_checkpoints(root)] == ["step_00000002", "step_00000003"]
    assert (root / "latest").read_text().strip() == "step_00000003"
    assert not list(root.glob(".tmp-*"))
    meta, weights, state = load_checkpoint(root / "step_00000003")
    assert meta["step"] == 3 and state["step"] == 3 and weights["model"]["w"].tolist() == [3.0, 3.0]
    (root / "step_00000003" / "training_state.pt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(root / "step_00000003")


def test_image_grid_layout():
    top = -torch.ones(3, 3, 4, 5)
    bottom = torch.ones(3, 1, 4, 5)
    grid = image_grid([top, bottom.expand(-1, 3, -1, -1)], pad=2)
    assert grid.shape == (2 * 6 + 2, 3 * 7 + 2, 3) and grid.dtype == np.uint8
    assert grid[2, 2, 0] == 0 and grid[8, 2, 0] == 255 and grid[0, 0, 0] == 255
