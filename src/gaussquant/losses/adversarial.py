"""PatchGAN hinge losses and the VQGAN adaptive weight (docs/method.md section 7; Esser et al. 2021, Eq. 7).

Losses compute; the trainer decides when the discriminator starts and how steps alternate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss ``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator hinge loss ``-mean D(x_hat)``."""
    return -logits_fake.float().mean()


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, *, max_weight: float = 1e4) -> Tensor:
    """VQGAN's balance ``||grad_w nll|| / (||grad_w g_loss|| + 1e-4)`` at the decoder's last weight ``w``.

    Detached, clamped to [0, ``max_weight``]. Both losses must still hold their graphs (retain_graph is used).
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
