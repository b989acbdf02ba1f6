"""The generator objective of docs/method.md sections 3 and 7, without the adversarial term.

``loss = (l1 * |x - x_hat| + l2 * (x - x_hat)^2 + w_p * LPIPS) / exp(s) + s``  (summed per image, batch mean)
``     + rate_weight * losses["rate"]`` (TDC-weighted KL in bits per image, from the bottleneck)
``     + sum_name aux_weights[name] * losses[name]`` (VQ codebook/commitment, LFQ/BSQ entropy; weight 1 if unset)

The trainer adds the adaptive-weighted hinge GAN term after the discriminator starts (losses compute, the
trainer owns schedules).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gaussquant.losses.reconstruction import LearnedLogVariance, pixel_loss_map
from gaussquant.quantizers.base import BottleneckOutput


@dataclass
class ObjectiveOutput:
    """``loss``: scalar to minimise (no GAN term); ``nll``: the reconstruction NLL alone (for the adaptive
    weight); ``logs``: detached scalars for logging."""

    loss: Tensor
    nll: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Reconstruction NLL + weighted bottleneck losses.

    Args:
        l1_weight, l2_weight: per-pixel weights.
        perceptual: an LPIPS-like module ``(x_hat, x) -> (B, 1, 1, 1)`` or ``(B,)`` distances, or None.
        perceptual_weight: its weight (ignored when ``perceptual`` is None).
        learned_logvar: learn the output log-variance ``s`` (else fixed 0).
        rate_weight: weight of ``losses["rate"]``.
        aux_weights: weight per other bottleneck loss name (default 1).
    """

    def __init__(
        self,
        *,
        l1_weight: float = 1.0,
        l2_weight: float = 0.0,
        perceptual: nn.Module | None = None,
        perceptual_weight: float = 0.0,
        learned_logvar: bool = True,
        rate_weight: float = 0.1,
        aux_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if perceptual_weight and perceptual is None:
            raise ValueError("perceptual_weight > 0 needs a perceptual module (LPIPS)")
        self.l1_weight = l1_weight
        self.l2_weight = l2_weight
        self.perceptual = perceptual
        self.perceptual_weight = perceptual_weight
        self.nll = LearnedLogVariance(learned_logvar)
        self.rate_weight = rate_weight
        self.aux_weights = dict(aux_weights or {})
        if perceptual is not None:
            perceptual.requires_grad_(False)  # a frozen metric network, never trained

    def forward(self, x: Tensor, x_hat: Tensor, bottleneck: BottleneckOutput) -> ObjectiveOutput:
        """``x``, ``x_hat``: ``(B, 3, H, W)`` in [-1, 1]; ``bottleneck``: the bottleneck's output."""
        loss_map = pixel_loss_map(x_hat, x, l1_weight=self.l1_weight, l2_weight=self.l2_weight)
        logs: dict[str, Tensor] = {"l1": (x.float() - x_hat.float()).abs().mean().detach()}
        if self.perceptual is not None and self.perceptual_weight:
            p = self.perceptual(x_hat.float(), x.float()).reshape(x.shape[0], 1, 1, 1)
            loss_map = loss_map + self.perceptual_weight * p
            logs["lpips"] = p.mean().detach()
        nll = self.nll(loss_map)
        loss = nll
        logs["nll"] = nll.detach()
        logs["logvar"] = self.nll.logvar.detach()
        for name, term in bottleneck.losses.items():
            weight = self.rate_weight if name == "rate" else self.aux_weights.get(name, 1.0)
            loss = loss + weight * term
            logs[f"loss_{name}"] = term.detach()
        logs["loss"] = loss.detach()
        return ObjectiveOutput(loss=loss, nll=nll, logs=logs)

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the objective (the learned log-variance), for the optimiser."""
        return [p for p in self.parameters() if p.requires_grad]
