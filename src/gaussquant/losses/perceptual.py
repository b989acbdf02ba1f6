"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"),
v0.1, with VGG16 or AlexNet trunks; shared by the training loss and the metric.

Written by hand because the ``lpips`` package pulls torchvision (see docs/install.md). The trunks mirror
torchvision's ``features`` modules layer for layer so that their state dicts load unchanged
(``features.N.weight``). LPIPS(x, y) = sum over layers l of the spatial mean of
``|| w_l * (f_l(x) / ||f_l(x)|| - f_l(y) / ||f_l(y)||) ||^2`` (unit-normalised over channels, squared
difference, 1x1 linear head without bias). Inputs in [-1, 1] are first shifted/scaled by LPIPS' fixed
constants (shift ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``).

Weights are never downloaded. Each file is looked up, in order, in ``weights_dir`` (argument), then the
folder named by ``$GAUSSQUANT_WEIGHTS_DIR``, then ``torch.hub.get_dir()/checkpoints``:

================  =====================================  ================================================
net               trunk (torchvision ImageNet weights)   linear heads (the lpips project's v0.1 weights)
================  =====================================  ================================================
``vgg``           ``vgg16-397923af.pth``                 ``lpips_v0.1_vgg.pth`` (= ``lpips/weights/v0.1/vgg.pth``)
``alex``          ``alexnet-owt-7be5be79.pth``           ``lpips_v0.1_alex.pth`` (= ``lpips/weights/v0.1/alex.pth``)
================  =====================================  ================================================

Files are read with ``torch.load(weights_only=True)``; only the ``features.*`` keys of a trunk file are
used (the classifier is not part of LPIPS), and those and the heads load strictly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS_ENV = "GAUSSQUANT_WEIGHTS_DIR"
TRUNK_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
HEAD_FILES = {"vgg": "lpips_v0.1_vgg.pth", "alex": "lpips_v0.1_alex.pth"}
# torchvision layer plans: ints are 3x3 conv widths, "M" a 2x2 max pool (VGG16 configuration "D")
_VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# LPIPS taps: index (into ``features``) just after the ReLU of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_VGG16_TAPS = (4, 9, 16, 23, 30)
_VGG16_CHANNELS = (64, 128, 256, 512, 512)
# AlexNet: after relu1..relu5
_ALEX_TAPS = (2, 5, 8, 10, 12)
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file is not on disk (we never download)."""


def weight_search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for weight files, in order: argument, ``$GAUSSQUANT_WEIGHTS_DIR``, hub cache."""
    dirs = [Path(weights_dir)] if weights_dir else []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_weight_file(name: str, weights_dir: str | Path | None = None, purpose: str = "") -> Path:
    """Path of weight file ``name`` in the first search folder holding it, else MissingWeightsError."""
    dirs = weight_search_dirs(weights_dir)
    for folder in dirs:
        if (folder / name).is_file():
            return folder / name
    raise MissingWeightsError(
        f"{purpose or 'weight file'} {name!r} not found: place it in ${WEIGHTS_ENV} or in "
        f"{dirs[-1]} (searched: {', '.join(str(d) for d in dirs)})"
    )


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_PLAN:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )  # fmt: skip


class _Head(nn.Module):
    """LPIPS' ``lin{k}``: ``model.0`` is a (parameter-free) dropout, ``model.1`` a bias-free 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _architecture(net: str) -> tuple[nn.Sequential, tuple[int, ...], tuple[int, ...]]:
    if net == "vgg":
        return _vgg16_features(), _VGG16_TAPS, _VGG16_CHANNELS
    if net == "alex":
        return _alexnet_features(), _ALEX_TAPS, _ALEX_CHANNELS
    raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")


def _load_state(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated/foreign file: say which one
        raise ValueError(f"cannot read weight file {str(path)!r}: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"weight file {str(path)!r} does not hold a state dict")
    return state


class LPIPS(nn.Module):
    """LPIPS v0.1 distance; frozen, always in eval mode, differentiable w.r.t. its inputs.

    Args:
        net: ``"vgg"`` (the usual training loss) or ``"alex"`` (the usual evaluation metric).
        weights_dir: a folder searched before ``$GAUSSQUANT_WEIGHTS_DIR`` and the hub cache.

    Raises:
        MissingWeightsError: a trunk or head file is not found (message names the file and the folder).
    """

    def __init__(self, net: str = "vgg", weights_dir: str | Path | None = None) -> None:
        super().__init__()
        trunk = find_weight_file(TRUNK_FILES[net], weights_dir, f"LPIPS-{net} trunk (torchvision)")
        heads = find_weight_file(HEAD_FILES[net], weights_dir, f"LPIPS-{net} linear heads (lpips v0.1 {net}.pth)")
        # why meta: every parameter is replaced by the loaded one, so skip the random initialisation
        with torch.device("meta"):
            features, taps, channels = _architecture(net)
            self.features = features
            for k, width in enumerate(channels):
                self.add_module(f"lin{k}", _Head(width))
        self.net = net
        self.taps = taps
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self._load(trunk, heads)
        self.requires_grad_(False)
        self.eval()

    def _load(self, trunk: Path, heads: Path) -> None:
        trunk_state = {k: v for k, v in _load_state(trunk).items() if k.startswith("features.")}
        head_state = _load_state(heads)
        state = {**trunk_state, **head_state}
        missing, unexpected = self.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise ValueError(
                f"LPIPS-{self.net} weights do not match the architecture: missing {missing}, "
                f"unexpected {unexpected} (files {str(trunk)!r}, {str(heads)!r})"
            )

    def train(self, mode: bool = True) -> "LPIPS":
        # why: a frozen metric network; dropout in the heads stays off even inside a training model
        return super().train(False)

    def layer_features(self, x: Tensor) -> list[Tensor]:
        """The five tapped activations of images ``x`` (B, 3, H, W) in [-1, 1]."""
        h = (x - self.shift) / self.scale
        outputs, start = [], 0
        for stop in self.taps:
            h = self.features[start:stop](h)
            outputs.append(h)
            start = stop
        return outputs

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-image LPIPS distance ``(B,)`` between images ``x`` and ``y`` ``(B, 3, H, W)`` in [-1, 1]."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (B, 3, H, W) batches of equal shape, got {x.shape}, {y.shape}")
        batch = x.shape[0]
        feats = self.layer_features(torch.cat([x, y]))
        total = x.new_zeros(batch, dtype=torch.float32)
        for k, f in enumerate(feats):
            f = f.float()
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            diff = (f[:batch] - f[batch:]).pow(2)
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return total


def lpips_available(net: str = "vgg", weights_dir: str | Path | None = None) -> tuple[bool, str]:
    """``(True, "")`` when both LPIPS-``net`` files are on disk, else ``(False, one sentence)``."""
    _architecture(net)
    try:
        find_weight_file(TRUNK_FILES[net], weights_dir, f"LPIPS-{net} trunk (torchvision)")
        find_weight_file(HEAD_FILES[net], weights_dir, f"LPIPS-{net} linear heads (lpips v0.1 {net}.pth)")
    except MissingWeightsError as error:
        return False, str(error)
    return True, ""
