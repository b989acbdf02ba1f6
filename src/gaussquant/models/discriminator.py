"""The PatchGAN discriminator of pix2pix / VQGAN (docs/method.md section 7: 6 layers, ndf 160, ActNorm).

Layout: a 4x4 stride-2 conv + LeakyReLU(0.2); ``n_layers - 1`` more stride-2 4x4 convs, each followed by a
norm and LeakyReLU, with channels ``base_channels * min(2^n, 8)``; one stride-1 4x4 conv + norm + LeakyReLU;
a stride-1 4x4 conv to one logit per patch. Convs followed by BatchNorm carry no bias (BatchNorm has its
own shift); with ActNorm and GroupNorm they keep it, as in the VQGAN code base. Weights start from
N(0, 0.02), norm scales from N(1, 0.02).

ActNorm (Glow) is written here because torch has none: a per-channel affine map whose shift and scale are
set, once, from the first training batch so that that batch comes out with zero mean and unit variance
per channel (moments summed over all ranks under torch.distributed); afterwards they are ordinary learned
parameters. Whether it was initialised is a registered buffer, so a loaded checkpoint never re-initialises.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gaussquant.distributed import distributed_ready

NORMS = ("actnorm", "batch", "group")


class ActNorm(nn.Module):
    """``scale * (x + loc)`` per channel with data-dependent initialisation. ``(B, C, H, W)`` -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``loc = -mean``, ``scale = 1 / (std + 1e-6)`` per channel (unbiased std) from the batch ``x``.

        Under torch.distributed the moments are summed over all ranks first, so that every rank starts
        from the same parameters (a per-rank init would make the replicas diverge for good).
        """
        # float64 sums keep the one-pass variance exact enough; MPS has no float64
        dtype = torch.float32 if x.device.type == "mps" else torch.float64
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).to(dtype)
        count = torch.full((1,), flat.shape[1], dtype=dtype, device=x.device)
        moments = torch.cat([flat.sum(dim=1), flat.pow(2).sum(dim=1), count])
        if distributed_ready():
            torch.distributed.all_reduce(moments)
        c = x.shape[1]
        n = moments[-1]
        mean = moments[:c] / n
        var = ((moments[c : 2 * c] - n * mean.pow(2)) / (n - 1).clamp_min(1)).clamp_min(0)
        self.loc.copy_(-mean.view_as(self.loc).to(self.loc.dtype))
        self.scale.copy_((1.0 / (var.sqrt() + 1e-6)).view_as(self.scale).to(self.scale.dtype))
        self.initialized.fill_(1)

    def forward(self, x: Tensor) -> Tensor:
        # the flag is read on the host once per forward until set; meta tensors (shape checks) skip init
        if self.training and not x.is_meta and int(self.initialized) == 0:
            self.initialize(x)
        return self.scale * (x + self.loc)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "actnorm":
        return ActNorm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = 32 if channels % 32 == 0 else 1
    return nn.GroupNorm(groups, channels)


class PatchDiscriminator(nn.Module):
    """Images ``(B, in_channels, H, W)`` in [-1, 1] -> logits ``(B, 1, H', W')``, one per overlapping patch.

    For H = 256: ``n_layers = 3`` gives 30x30 logits, ``n_layers = 6`` gives 2x2. Inputs must be at least
    ``2^n_layers * 3`` pixels on a side.
    """

    def __init__(
        self, *, in_channels: int = 3, base_channels: int = 64, n_layers: int = 3, norm: str = "actnorm"
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
        if n_layers < 1 or base_channels < 1:
            raise ValueError(f"n_layers and base_channels must be positive; got {n_layers}, {base_channels}")
        self.n_layers = n_layers
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(base_channels * prev, base_channels * mult, 4, stride, 1, bias=bias),
                _norm(norm, base_channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(base_channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) conv weights; N(1, 0.02) BatchNorm/GroupNorm scales, zero shifts (pix2pix init)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @property
    def min_input_size(self) -> int:
        return 2**self.n_layers * 3

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"PatchDiscriminator with n_layers={self.n_layers} needs (B, C, H, W) images with H, W >= "
                f"{self.min_input_size}; got shape {tuple(x.shape)}. Use fewer layers for small images."
            )
        return self.main(x)
