"""BSQ: binary spherical quantization (Zhao, Xiong, Kraehenbuehl 2024, section 3; docs/method.md section 6).

A token's L channels are l2-normalised, ``u = z / ||z||``, and quantized to the nearest corner of the
hypercube on the unit sphere, ``q = sign(u) / sqrt(L)`` (straight-through gradient to u). Indices: the sign
bits, most-significant first, packed ``codebook_bits`` at a time (G = L / codebook_bits indices per token,
K = 2^codebook_bits); bits per token = L exactly, however they are packed.

Entropy penalty (BSQ eq. 8-10): the soft assignment over the 2^L corners, ``p(c | u) ~ exp(-inv_temperature
* ||u - c||^2)``, factorises over channels into ``p(bit_i = +1) = sigmoid(4 * inv_temperature * u_i / sqrt(L))``.
- per-sample entropy (exact, analytic): mean over tokens of sum_i H(p_i);
- codebook entropy (BSQ's group approximation): the channels are split into sub-groups of
  ``entropy_group_size``; for each, the exact entropy of the batch-average distribution over its 2^size
  sub-codes; summed over sub-groups (an upper bound of the joint codebook entropy);
- ``losses["entropy"] = entropy_weight * (gamma0 * per_sample - gamma * codebook)`` (weights 0.1, 1, 1).
Inverse temperature: 100 by default, the GQ reference's BSQ baseline (temperature 0.01). At 1.0 (the
project's earlier default, one option away: ``inv_temperature=1.0``) and L = 16, a unit-norm u has
|4 u_i / sqrt(L)| ~ 0.25, so p_i stays near 1/2 and the per-sample entropy near its maximum (0.686 of
0.693 nats per bit): the regulariser barely acts. At 100 the soft assignment is nearly hard.
The batch-average distribution is all-reduced across ranks so every rank optimises the same term.

Written by hand, not wrapped: vector-quantize-pytorch's ``LFQ(spherical=True)`` quantizes identically (l2
normalise, sign, scale by 1/sqrt(L); tested against it here), but its entropy term takes a softmax over the full
2^L codebook: a (tokens x 2^L) matrix, 4.3 GB in float32 for 16 images of 32x32 tokens at L = 16, impossible at
L = 32 or 64. BSQ's factorised form is exact for the per-sample term and costs O(tokens x L); with
``entropy_group_size = L`` the codebook term equals the library's exactly (also tested).
The GQ reference's own BSQ averages (rather than sums) the per-channel entropies and pools all bits into one
Bernoulli for the codebook term; that reduction is not reproduced (it only constrains the overall bit balance).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from gaussquant.distributed import distributed_ready
from gaussquant.quantizers.base import (
    BottleneckOutput,
    DiscreteBottleneck,
    channels_back,
    channels_last,
    check_indices,
    check_latent,
    indices_last,
    indices_layout,
)
from gaussquant.quantizers.code_stats import code_statistics

MAX_INDEX_BITS = 62  # int64 indices
MAX_ENTROPY_GROUP = 12  # the codebook term materialises (tokens x 2^size) per sub-group


def _bits_msb_first(n: int, device: torch.device) -> Tensor:
    """All 2^n codes as {-1, +1} rows, ``(2^n, n)``, most-significant bit first."""
    codes = torch.arange(2**n, device=device)
    shifts = torch.arange(n - 1, -1, -1, device=device)
    return ((codes[:, None] >> shifts) & 1).float() * 2 - 1


def binary_entropy(p: Tensor) -> Tensor:
    """H(p) in nats of a Bernoulli(p), elementwise, 0 at p in {0, 1}."""
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def binary_entropy_from_logits(x: Tensor) -> Tensor:
    """H(sigmoid(x)) in nats, elementwise: ``p softplus(-x) + (1 - p) softplus(x)``.

    Same values as ``binary_entropy(sigmoid(x))`` but with a finite gradient everywhere: at a large inverse
    temperature sigmoid saturates to exactly 0 or 1 in float32, where ``xlogy``'s gradient is inf x 0 = NaN.
    """
    p = torch.sigmoid(x)
    return p * F.softplus(-x) + (1 - p) * F.softplus(x)


def bsq_entropy_terms(u: Tensor, inv_temperature: float, group_size: int) -> tuple[Tensor, Tensor]:
    """Per-sample and codebook entropies (nats) of BSQ's soft assignment.

    Args:
        u: ``(N, L)`` l2-normalised latents (float32).
        inv_temperature: inverse temperature of the soft assignment.
        group_size: sub-group size for the codebook term (must divide L).
    Returns:
        (per_sample, codebook): scalars; per_sample = mean_n sum_i H(p_ni), codebook = sum over sub-groups of
        H(mean_n p_n(sub-code)).
    """
    n, dim = u.shape
    logits = 4.0 * inv_temperature * u / math.sqrt(dim)  # p(bit = +1) = sigmoid(logits)
    per_sample = binary_entropy_from_logits(logits).sum(-1).mean()
    # soft assignment of each sub-group to its 2^size sub-codes: product of its channels' bit probabilities
    codes = _bits_msb_first(group_size, u.device)  # (S, size)
    logp_plus = F.logsigmoid(logits).unflatten(-1, (-1, group_size))
    logp_minus = F.logsigmoid(-logits).unflatten(-1, (-1, group_size))
    plus = (codes > 0).float()
    log_q = logp_plus @ plus.T + logp_minus @ (1 - plus).T  # (N, groups, S)
    avg = log_q.exp().mean(0)
    if distributed_ready():
        avg = torch.distributed.nn.functional.all_reduce(avg) / dist.get_world_size()
    # clamped log: a sub-code no token reaches has avg = 0 exactly, where xlogy's gradient would be NaN
    codebook = -(avg * avg.clamp_min(1e-30).log()).sum()
    return per_sample, codebook


def _default_group(dim: int) -> int:
    return max(g for g in range(1, min(dim, 8) + 1) if dim % g == 0)


class BinarySphericalQuantizer(DiscreteBottleneck):
    """BSQ over L = latent_channels binary channels.

    Args:
        latent_channels: L, bits per token.
        codebook_bits: bits packed per index (divides L; default min(L, 16)); G = L / codebook_bits.
        entropy_weight: weight of the whole penalty (0.1).
        gamma0, gamma: per-sample and codebook entropy weights inside the penalty (1, 1).
        inv_temperature: inverse temperature of the soft assignment (100: the GQ reference's 0.01).
        entropy_group_size: sub-group size of the codebook-entropy approximation (divides L, <= 12;
            default: the largest divisor of L up to 8).
    """

    def __init__(
        self,
        latent_channels: int,
        codebook_bits: int | None = None,
        *,
        entropy_weight: float = 0.1,
        gamma0: float = 1.0,
        gamma: float = 1.0,
        inv_temperature: float = 100.0,
        entropy_group_size: int | None = None,
    ) -> None:
        super().__init__()
        bits = min(latent_channels, 16) if codebook_bits is None else codebook_bits
        group = _default_group(latent_channels) if entropy_group_size is None else entropy_group_size
        if latent_channels < 1 or not 1 <= bits <= MAX_INDEX_BITS or latent_channels % bits:
            raise ValueError(f"codebook_bits {bits} must be in [1, {MAX_INDEX_BITS}] and divide "
                             f"latent_channels {latent_channels}")
        if not 1 <= group <= MAX_ENTROPY_GROUP or latent_channels % group:
            raise ValueError(f"entropy_group_size {group} must be in [1, {MAX_ENTROPY_GROUP}] and divide "
                             f"latent_channels {latent_channels}")
        self.in_channels = self.latent_channels = latent_channels
        self.codebook_bits, self.num_groups, self.codebook_size = bits, latent_channels // bits, 2**bits
        self.entropy_weight, self.gamma0, self.gamma = entropy_weight, gamma0, gamma
        self.inv_temperature, self.entropy_group_size = inv_temperature, group

    def _unit(self, h: Tensor) -> Tensor:
        check_latent(h, self.latent_channels, type(self).__name__)
        return F.normalize(channels_last(h).float(), dim=-1)

    def _pack(self, u: Tensor) -> Tensor:
        bits = (u > 0).long().unflatten(-1, (self.num_groups, self.codebook_bits))
        weights = 2 ** torch.arange(self.codebook_bits - 1, -1, -1, device=u.device)
        return (bits * weights).sum(-1)

    def forward(self, h: Tensor) -> BottleneckOutput:
        """``h`` ``(B, L, H, W)`` or ``(B, N, L)`` -> z_hat in {-1/sqrt(L), +1/sqrt(L)}, same layout, float32."""
        scale = 1.0 / math.sqrt(self.latent_channels)
        with torch.autocast(device_type=h.device.type, enabled=False):
            u = self._unit(h)
            q = torch.where(u > 0, scale, -scale)
            z_hat = q + (u - u.detach())  # value exactly q, gradient identity to u
            losses = {}
            if self.training:
                per_sample, codebook = bsq_entropy_terms(u.reshape(-1, self.latent_channels),
                                                         self.inv_temperature, self.entropy_group_size)
                losses["entropy"] = self.entropy_weight * (self.gamma0 * per_sample - self.gamma * codebook)
            else:
                losses["entropy"] = u.new_zeros(())
        indices = indices_layout(self._pack(u), h.dim())
        stats = code_statistics(indices, self.codebook_size) if self.codebook_bits <= 20 else {}
        return BottleneckOutput(z_hat=channels_back(z_hat, h.dim()), indices=indices, losses=losses,
                                stats=stats)

    @torch.no_grad()
    def quantize(self, h: Tensor) -> Tensor:
        with torch.autocast(device_type=h.device.type, enabled=False):
            return indices_layout(self._pack(self._unit(h)), h.dim())

    @torch.no_grad()
    def dequantize(self, indices: Tensor) -> Tensor:
        check_indices(indices, self.codebook_size, self.num_groups)
        last = indices_last(indices).long()
        shifts = torch.arange(self.codebook_bits - 1, -1, -1, device=last.device)
        bits = (last[..., None] >> shifts) & 1  # (..., G, bits)
        scale = 1.0 / math.sqrt(self.latent_channels)
        q = torch.where(bits.flatten(-2) > 0, scale, -scale).float()
        return channels_back(q, indices.dim())

    def extra_repr(self) -> str:
        return (f"latent_channels={self.latent_channels}, codebook_bits={self.codebook_bits}, "
                f"entropy_weight={self.entropy_weight}, inv_temperature={self.inv_temperature}")
