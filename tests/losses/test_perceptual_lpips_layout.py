"""LPIPS against the lpips v0.1 layout and the linear heads that ship in the torchmetrics wheel.

Expectations come from outside gaussquant: torchvision's VGG16 / AlexNet ``features`` layer indices (written
out by hand below), the lpips v0.1 taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 for VGG16; relu1..relu5
for AlexNet), the head files bundled with torchmetrics (``lin{k}.model.1.weight``, (1, C, 1, 1), no bias),
and a distance computed by hand in numpy from known trunk features.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gaussquant.losses import perceptual
from gaussquant.losses.perceptual import LPIPS
from test_perceptual_lpips import write_random_lpips_weights

# torchvision ``vgg16().features``: index -> (in, out) of each 3x3 conv (configuration "D"); every conv is
# followed by a ReLU at index + 1 and max pools sit at 4, 9, 16, 23, 30.
VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
               14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512),
               28: (512, 512)}
VGG16_POOLS = (4, 9, 16, 23, 30)
# lpips v0.1 taps: the ReLU after conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 (features indices 3, 8, 15, 22, 29)
VGG16_TAP_RELUS = (3, 8, 15, 22, 29)
# torchvision ``alexnet().features``: index -> (in, out, kernel, stride, padding); taps after relu1..relu5
ALEX_CONVS = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
              10: (256, 256, 3, 1, 1)}
ALEX_TAP_RELUS = (1, 4, 7, 9, 11)
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
# spatial side of each tap for a 32 x 32 (VGG) / 64 x 64 (AlexNet) input
TAP_SIDES = {"vgg": (32, 16, 8, 4, 2), "alex": (15, 7, 3, 3, 3)}
LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188])  # lpips' ScalingLayer constants
LPIPS_SCALE = np.array([0.458, 0.448, 0.450])


def _torchmetrics_heads(net: str) -> Path:
    """The lpips v0.1 head file bundled with the installed torchmetrics wheel (installed by the `dev` extra)."""
    torchmetrics = pytest.importorskip("torchmetrics")
    path = Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / f"{net}.pth"
    if not path.is_file():
        pytest.skip(f"this torchmetrics ({torchmetrics.__version__}) does not bundle the lpips {net} heads")
    return path


@pytest.fixture(scope="module")
def weights_dirs(tmp_path_factory):
    """One folder per net (written once: a random VGG16 trunk file takes seconds) holding a random trunk in
    torchvision's key layout and the torchmetrics head file under gaussquant's file name."""
    folders = {}

    def get(net: str) -> Path:
        if net not in folders:
            heads = _torchmetrics_heads(net)
            folder = tmp_path_factory.mktemp(f"lpips-{net}")
            write_random_lpips_weights(folder, net)
            shutil.copy(heads, folder / perceptual.HEAD_FILES[net])
            folders[net] = folder
        return folders[net]

    return get


def _metric_with_real_heads(weights_dirs, net: str) -> tuple[LPIPS, dict[str, torch.Tensor]]:
    shipped = torch.load(_torchmetrics_heads(net), map_location="cpu", weights_only=True)
    return LPIPS(net, weights_dir=weights_dirs(net)), shipped


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_structure_and_taps_follow_the_lpips_v01_layout(weights_dirs, net):
    """Catches: a trunk layer at another index than torchvision's (its checkpoint would not load or would
    load into the wrong layer), a conv of another width, kernel, stride or padding, a tap before the ReLU or
    after the pool (other values or sizes), heads with a bias or under other names or shapes than the
    shipped files, and head values not loaded exactly from the file."""
    metric, shipped = _metric_with_real_heads(weights_dirs, net)
    convs = VGG16_CONVS if net == "vgg" else ALEX_CONVS
    conv_modules = {i: m for i, m in enumerate(metric.features) if isinstance(m, nn.Conv2d)}
    assert set(conv_modules) == set(convs)
    for i, spec in convs.items():
        m = conv_modules[i]
        got = (m.in_channels, m.out_channels) if net == "vgg" else (
            m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        assert got == spec, f"features.{i}"
        if net == "vgg":
            assert m.kernel_size == (3, 3) and m.padding == (1, 1) and m.stride == (1, 1)
        assert isinstance(metric.features[i + 1], nn.ReLU)
    if net == "vgg":
        assert [i for i, m in enumerate(metric.features) if isinstance(m, nn.MaxPool2d)] == list(VGG16_POOLS)
    relus = VGG16_TAP_RELUS if net == "vgg" else ALEX_TAP_RELUS
    assert tuple(metric.taps) == tuple(i + 1 for i in relus)  # each tap ends just after its ReLU

    size = 32 if net == "vgg" else 64
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats = metric.layer_features(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(c, s, s) for c, s in zip(CHANNELS[net], TAP_SIDES[net])]
    assert all((f >= 0).all() for f in feats)  # post-ReLU activations

    # heads: exactly the shipped files' names, shapes and values; no bias
    heads = {k: v for k, v in metric.state_dict().items() if k.startswith("lin")}
    assert {k: tuple(v.shape) for k, v in heads.items()} == {
        f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(CHANNELS[net])}
    assert set(heads) == set(shipped)
    for k in shipped:
        assert torch.equal(heads[k], shipped[k]), k


def test_scaling_layer_uses_the_lpips_constants(weights_dirs):
    """With an identity trunk, every tap is the scaled input (x - shift) / scale with lpips' constants.
    Catches: other constants, a missing or inverted scaling, inputs taken in [0, 1] instead of [-1, 1]."""
    metric, _ = _metric_with_real_heads(weights_dirs, "alex")
    metric.features = nn.Sequential(*[nn.Identity() for _ in range(len(metric.features))])
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float32) * 2 - 1
    expect = (x.double().numpy() - LPIPS_SHIFT[None, :, None, None]) / LPIPS_SCALE[None, :, None, None]
    for f in metric.layer_features(x):
        np.testing.assert_allclose(f.double().numpy(), expect, rtol=1e-6, atol=1e-6)


def _lpips_by_hand(fx: list[np.ndarray], fy: list[np.ndarray], heads: list[np.ndarray]) -> np.ndarray:
    """lpips v0.1: per layer, unit-normalise over channels (eps 1e-10 added to the norm), squared
    difference, 1x1 conv with the head weights (weighted channel sum), spatial mean; sum over layers."""
    total = np.zeros(fx[0].shape[0])
    for a, b, w in zip(fx, fy, heads):
        na = a / (np.sqrt((a**2).sum(axis=1, keepdims=True)) + 1e-10)
        nb = b / (np.sqrt((b**2).sum(axis=1, keepdims=True)) + 1e-10)
        weighted = np.einsum("bchw,c->bhw", (na - nb) ** 2, w.reshape(-1))
        total += weighted.mean(axis=(1, 2))
    return total


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_distance_equals_a_hand_computation_with_the_shipped_heads(weights_dirs, net, monkeypatch):
    """Known trunk features (a stub trunk) and the shipped v0.1 heads: the distance equals the numpy
    computation. Catches: no or wrong normalisation (e.g. over space instead of channels), an absolute
    instead of squared difference, heads applied to the wrong layer, a spatial sum instead of a mean,
    layers averaged instead of summed, and x and y halves mixed up within the batch."""
    metric, shipped = _metric_with_real_heads(weights_dirs, net)
    rng = np.random.default_rng(7)
    sides = [(3, 2), (2, 2), (2, 1), (1, 2), (1, 1)]
    fx = [rng.random((2, c, h, w)) * 3 for c, (h, w) in zip(CHANNELS[net], sides)]
    fy = [rng.random((2, c, h, w)) for c, (h, w) in zip(CHANNELS[net], sides)]
    monkeypatch.setattr(
        metric, "layer_features",
        lambda xy: [torch.from_numpy(np.concatenate([a, b])).float() for a, b in zip(fx, fy)])
    heads = [shipped[f"lin{k}.model.1.weight"].double().numpy() for k in range(5)]
    expect = _lpips_by_hand([a.astype(np.float32).astype(np.float64) for a in fx],
                            [b.astype(np.float32).astype(np.float64) for b in fy], heads)
    images = torch.zeros(2, 3, 8, 8)  # ignored by the stub trunk
    got = metric(images, images).double().numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    assert (expect > 0).all() and abs(expect[0] - expect[1]) > 1e-3 * expect.max()  # distinct per image
