"""LPIPS built from random weights saved in torchvision / lpips file layouts."""

from __future__ import annotations

import pytest
import torch

from gaussquant.losses import perceptual
from gaussquant.losses.perceptual import LPIPS, MissingWeightsError, lpips_available


def write_random_lpips_weights(folder, net: str, seed: int = 0) -> None:
    """Random weights with the real files' names and key layouts (trunk + classifier, lpips heads)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        features, _, channels = perceptual._architecture(net)
    # He-scaled random weights so activations neither vanish nor explode through the trunk
    trunk = {
        f"features.{k}": torch.randn(v.shape, generator=g) * (2.0 / max(1, v[0].numel())) ** 0.5
        for k, v in features.state_dict().items()
    }
    trunk["classifier.1.weight"] = torch.randn(4, 4)  # ignored, like torchvision's classifier
    torch.save(trunk, folder / perceptual.TRUNK_FILES[net])
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(channels)}
    torch.save(heads, folder / perceptual.HEAD_FILES[net])


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_properties(tmp_path, net):
    write_random_lpips_weights(tmp_path, net)
    metric = LPIPS(net, weights_dir=tmp_path)
    g = torch.Generator().manual_seed(0)
    # small inputs keep VGG16 cheap on CPU; AlexNet's stride-4 stem needs more pixels
    size = 16 if net == "vgg" else 64
    x = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    y = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    assert torch.equal(metric(x, x), torch.zeros(2))
    d = metric(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(d, metric(y, x), rtol=1e-5, atol=1e-7)
    assert not any(p.requires_grad for p in metric.parameters())
    if net == "vgg":
        return
    x.requires_grad_(True)
    metric(x, y).sum().backward()  # usable as a loss: gradients reach the input
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_missing_weights_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(perceptual.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ok, message = lpips_available("vgg")
    assert not ok and "vgg16-397923af.pth" in message and "place it" in message
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        LPIPS("alex")
    write_random_lpips_weights(tmp_path, "alex")
    (tmp_path / perceptual.HEAD_FILES["alex"]).unlink()
    with pytest.raises(FileNotFoundError, match="lpips_v0.1_alex.pth"):
        LPIPS("alex")
    write_random_lpips_weights(tmp_path, "alex")
    assert lpips_available("alex") == (True, "")  # found through $GAUSSQUANT_WEIGHTS_DIR
