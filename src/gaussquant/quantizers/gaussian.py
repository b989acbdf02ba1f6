"""The training-time Gaussian VAE bottleneck and the Target Divergence Constraint (docs/method.md sections 2-3).

:class:`GaussianBottleneck` turns an encoder output with 2C channels (mean, logvar) into a latent for the
decoder: the reparameterised sample ``mean + std * eps`` in train mode, the mean in eval mode. It reports
the KL of every group of d channels in bits, shape (B, ..., G), and a rate loss that is either

- TDC (:class:`RateController`): lambda * (1/B) * sum over tokens and groups of (w * kl), with the per-group
  weight w in {lambda_min, 1, lambda_max} depending on where kl lies relative to the band
  [T - tau, T + tau] around the target T = log2 K bits; or
- "vanilla" (the ablation): kl_weight * (1/B) * sum over tokens and groups of kl.

``controller="adaptive"`` selects :class:`AdaptiveRateController` instead: the same lambda on the mean, but
inside the band weight 1 and outside it a weight that grows with the distance to the band
(``1 + rho_above * excess / tau`` above, ``1 - rho_below * deficit / tau`` below, negative far below so that
a starved group is pushed up), and every multiplier moves by ``factor ** e`` with ``e`` growing with the
violation (the reference moves by ``factor ** +-1`` whatever the violation).

The multipliers are registered buffers (checkpointed) and change only when the trainer calls
``update_rate_controller(kl_bits)`` once per generator step, never inside ``forward`` (so discriminator
steps and evaluation leave them alone). Updates use statistics of the global batch (all-reduced when
torch.distributed is initialised) and never synchronise with the host.

Noise: without a ``generator`` the sample uses PyTorch's global RNG, which the trainer seeds; pass a local
``torch.Generator`` to ``forward`` for a reproducible sample independent of it.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gaussquant.distributed import distributed_ready
from gaussquant.quantizers.base import BottleneckOutput, Bottleneck, check_latent
from gaussquant.quantizers.grouping import check_grouping
from gaussquant.quantizers.posterior import DiagonalGaussian

__all__ = ["RateController", "AdaptiveRateController", "GaussianBottleneck", "kl_stats", "band_stats",
           "posterior_stats", "CONTROLLERS"]

CONTROLLERS = ("reference", "adaptive")

MULTIPLIER_MAX_CLAMP = (1.0, 1e3)
MULTIPLIER_MIN_CLAMP = (1e-3, 1.0)


def _check_kl(kl_bits: Tensor) -> None:
    if not isinstance(kl_bits, Tensor) or kl_bits.dim() < 2 or kl_bits.numel() == 0:
        raise ValueError(
            "kl_bits must be a non-empty (B, ..., G) tensor of per-group KLs in bits; "
            f"got {tuple(kl_bits.shape) if isinstance(kl_bits, Tensor) else type(kl_bits).__name__}"
        )


def kl_stats(kl_bits: Tensor) -> dict[str, Tensor]:
    """Detached mean / min / max of per-group KL in bits (local batch), for logging."""
    kl = kl_bits.detach()
    return {"kl_bits_mean": kl.mean(), "kl_bits_min": kl.min(), "kl_bits_max": kl.max()}


def band_stats(kl_bits: Tensor, target_bits: float, tolerance_bits: float) -> dict[str, Tensor]:
    """Where the group KLs ``(B, ..., G)`` lie against the band T +- tau (local batch, detached, no sync).

    ``kl_in_band`` / ``kl_above_band`` / ``kl_below_band``: fractions of group tokens (sum to 1);
    ``kl_bits_p99``: 99th percentile of the group-token KL; ``kl_group_mean_max``: the largest over the G
    groups of the group's mean KL over the batch.
    """
    kl = kl_bits.detach().float()
    above = (kl > target_bits + tolerance_bits).float().mean()
    below = (kl < target_bits - tolerance_bits).float().mean()
    flat = kl.reshape(-1)
    if flat.numel() > 1_000_000:  # torch.quantile has an input size limit; a strided subsample suffices
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    return {"kl_in_band": 1.0 - above - below, "kl_above_band": above, "kl_below_band": below,
            "kl_bits_p99": torch.quantile(flat, 0.99),
            "kl_group_mean_max": kl.reshape(-1, kl.shape[-1]).mean(dim=0).max()}


def posterior_stats(posterior: DiagonalGaussian) -> dict[str, Tensor]:
    """The aggregate posterior against the prior N(0, 1) (local batch, detached, no sync).

    ``posterior_mean_mean`` (prior: 0) and ``posterior_mean_std`` (spread of the posterior means over all
    tokens and channels), ``posterior_std_mean`` (mean posterior std) and ``aggregate_var`` =
    ``var(mean) + mean(std^2)``, the variance of the aggregate posterior (prior: 1).
    """
    mean, std = posterior.mean.detach().float(), posterior.std.detach().float()
    spread = mean.std() if mean.numel() > 1 else torch.zeros((), device=mean.device)
    return {"posterior_mean_mean": mean.mean(), "posterior_mean_std": spread, "posterior_std_mean": std.mean(),
            "aggregate_var": spread.pow(2) + std.pow(2).mean()}


def _global_band_stats(kl_bits: Tensor, low_edge: float, high_edge: float, dtype: torch.dtype
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Mean, max, min, fraction above ``high_edge`` and below ``low_edge`` of the global batch (0-d tensors).

    One SUM all-reduce carries (sum, count, above, below); MAX and MIN carry the extremes. No host sync.
    """
    kl = kl_bits.detach().to(dtype)
    total = torch.stack([kl.sum(), torch.full((), float(kl.numel()), dtype=dtype, device=kl.device),
                         (kl > high_edge).sum().to(dtype), (kl < low_edge).sum().to(dtype)])
    high, low = kl.max(), kl.min()
    if distributed_ready():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return total[0] / total[1], high, low, total[2] / total[1], total[3] / total[1]


class RateController(nn.Module):
    """TDC multipliers lambda, lambda_max, lambda_min (docs/method.md section 3), all starting at 1.

    Args:
        target_bits: T, the target KL per group in bits (log2 K for a codebook of size K); > 0.
        tolerance_bits: tau, half-width of the band around T; >= 0.
        factor: f > 1, the multiplicative step of each update.
        multiplier_clamp: range of lambda (the reference leaves it unbounded; we clamp to keep it finite).
            lambda_max is clamped to [1, 1e3] and lambda_min to [1e-3, 1] as in the method.
    """

    def __init__(
        self,
        target_bits: float,
        tolerance_bits: float = 0.5,
        factor: float = 1.01,
        multiplier_clamp: tuple[float, float] = (1e-6, 1e6),
    ) -> None:
        super().__init__()
        if not (math.isfinite(target_bits) and target_bits > 0):
            raise ValueError(f"target_bits must be a positive number of bits; got {target_bits}")
        if not (math.isfinite(tolerance_bits) and tolerance_bits >= 0):
            raise ValueError(f"tolerance_bits must be >= 0; got {tolerance_bits}")
        if not (math.isfinite(factor) and factor > 1):
            raise ValueError(f"factor must be > 1; got {factor}")
        low, high = multiplier_clamp
        if not (0 < low <= 1 <= high):
            raise ValueError(f"multiplier_clamp must satisfy 0 < low <= 1 <= high; got {multiplier_clamp}")
        self.target_bits = float(target_bits)
        self.tolerance_bits = float(tolerance_bits)
        self.factor = float(factor)
        self.multiplier_clamp = (float(low), float(high))
        self.register_buffer("multiplier", torch.ones(()))
        self.register_buffer("multiplier_max", torch.ones(()))
        self.register_buffer("multiplier_min", torch.ones(()))

    def extra_repr(self) -> str:
        return f"target_bits={self.target_bits:g}, tolerance_bits={self.tolerance_bits:g}, factor={self.factor:g}"

    def _global_stats(self, kl_bits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, max and min of kl_bits over the global batch (all ranks), as 0-d tensors."""
        t, tau = self.target_bits, self.tolerance_bits
        return _global_band_stats(kl_bits, t - tau, t + tau, self.multiplier.dtype)[:3]

    @torch.no_grad()
    def update(self, kl_bits: Tensor) -> None:
        """One TDC step from the generator step's per-group KLs ``(B, ..., G)`` in bits; no host sync.

        A non-finite KL (a diverging run) leaves every multiplier unchanged.
        """
        _check_kl(kl_bits)
        mean, high, low = self._global_stats(kl_bits)
        up, down = self.factor, 1.0 / self.factor
        t, tau = self.target_bits, self.tolerance_bits
        one = torch.ones((), dtype=self.multiplier.dtype, device=self.multiplier.device)
        # why: a NaN/inf KL compares False everywhere and would push every multiplier down; hold them instead
        finite = torch.isfinite(mean) & torch.isfinite(high) & torch.isfinite(low)
        up, down = torch.where(finite, one * up, one), torch.where(finite, one * down, one)
        self.multiplier.mul_(torch.where(mean > t, up, down)).clamp_(*self.multiplier_clamp)
        self.multiplier_max.mul_(torch.where(high > t + tau, up, down)).clamp_(*MULTIPLIER_MAX_CLAMP)
        self.multiplier_min.mul_(torch.where(low < t - tau, down, up)).clamp_(*MULTIPLIER_MIN_CLAMP)

    def weights(self, kl_bits: Tensor) -> Tensor:
        """Per-group weight w (no gradient): lambda_max above the band, 1 inside, lambda_min below."""
        kl = kl_bits.detach()
        t, tau = self.target_bits, self.tolerance_bits
        w_max = self.multiplier_max.to(kl.dtype)
        w_min = self.multiplier_min.to(kl.dtype)
        inside = torch.ones((), dtype=kl.dtype, device=kl.device)
        return torch.where(kl > t + tau, w_max, torch.where(kl < t - tau, w_min, inside))

    def loss(self, kl_bits: Tensor) -> Tensor:
        """lambda * batch mean of each image's sum of weighted group KLs: a scalar in bits per image."""
        _check_kl(kl_bits)
        weighted = (self.weights(kl_bits) * kl_bits).flatten(1).sum(dim=1).mean()
        # a copy, so that an update() between this call and backward() cannot invalidate the graph
        return self.multiplier.to(kl_bits.dtype, copy=True) * weighted

    def stats(self) -> dict[str, Tensor]:
        return {
            "multiplier": self.multiplier.detach().clone(),
            "multiplier_max": self.multiplier_max.detach().clone(),
            "multiplier_min": self.multiplier_min.detach().clone(),
        }


class AdaptiveRateController(nn.Module):
    """TDC with band penalties that grow with the violation and steps that grow with it too.

    Weight of a group token with KL ``k`` (no gradient), ``T`` the target and ``tau`` the tolerance::

        w = 1 + rho_above * max(k - (T + tau), 0) / tau - rho_below * max((T - tau) - k, 0) / tau

    so the pull towards the band is proportional to the distance from it (the gradient of a quadratic
    penalty), and far below the band ``w`` turns negative: the rate loss then rewards KL until the token
    enters the band (the reference's weights are all positive and can only push a token down). The loss is
    ``lambda * (1/B) * sum of w * k``, as for :class:`RateController`.

    Updates (once per generator step, from all-reduced statistics of the global batch, no host sync), each
    a multiplicative step ``factor ** e`` whose exponent grows with the violation:

    - lambda: ``e = clip((mean - T) / tau, -max_gain, max_gain)`` (the reference: ``e = sign(mean - T)``);
    - rho_above: ``e = clip((f_above - goal) / goal, -1, max_gain)``, ``f_above`` the fraction of group
      tokens above the band and ``goal`` = ``out_of_band_goal`` (0.2); rho_below likewise below the band.

    Args:
        target_bits, tolerance_bits, factor, multiplier_clamp: as for :class:`RateController`.
        out_of_band_goal: fraction of group tokens allowed on each side of the band (0 < goal < 0.5).
        max_gain: largest exponent of one step (4: at most ``factor ** 4`` per step).
        penalty_clamp: range of rho_above and rho_below (start at 1).
    """

    def __init__(
        self,
        target_bits: float,
        tolerance_bits: float = 0.5,
        factor: float = 1.01,
        multiplier_clamp: tuple[float, float] = (1e-6, 1e6),
        out_of_band_goal: float = 0.2,
        max_gain: float = 4.0,
        penalty_clamp: tuple[float, float] = (1e-3, 1e2),
    ) -> None:
        super().__init__()
        RateController(target_bits, tolerance_bits, factor, multiplier_clamp)  # the same argument checks
        if not (0 < out_of_band_goal < 0.5) or not (max_gain >= 1) or not (0 < penalty_clamp[0] <= 1 <= penalty_clamp[1]):
            raise ValueError("need 0 < out_of_band_goal < 0.5, max_gain >= 1 and 0 < penalty_clamp[0] <= 1 <= "
                             f"penalty_clamp[1]; got {out_of_band_goal}, {max_gain}, {penalty_clamp}")
        if tolerance_bits <= 0:
            raise ValueError(f"the adaptive controller needs tolerance_bits > 0 (it scales the penalty); got {tolerance_bits}")
        self.target_bits, self.tolerance_bits, self.factor = float(target_bits), float(tolerance_bits), float(factor)
        self.multiplier_clamp = (float(multiplier_clamp[0]), float(multiplier_clamp[1]))
        self.penalty_clamp = (float(penalty_clamp[0]), float(penalty_clamp[1]))
        self.out_of_band_goal, self.max_gain = float(out_of_band_goal), float(max_gain)
        self.register_buffer("multiplier", torch.ones(()))
        self.register_buffer("penalty_above", torch.ones(()))
        self.register_buffer("penalty_below", torch.ones(()))

    def extra_repr(self) -> str:
        return (f"target_bits={self.target_bits:g}, tolerance_bits={self.tolerance_bits:g}, factor={self.factor:g}, "
                f"out_of_band_goal={self.out_of_band_goal:g}, max_gain={self.max_gain:g}")

    @torch.no_grad()
    def update(self, kl_bits: Tensor) -> None:
        """One step from the generator step's per-group KLs ``(B, ..., G)`` in bits; no host sync.

        A non-finite KL (a diverging run) leaves every multiplier unchanged.
        """
        _check_kl(kl_bits)
        t, tau, goal, gain = self.target_bits, self.tolerance_bits, self.out_of_band_goal, self.max_gain
        mean, _, _, above, below = _global_band_stats(kl_bits, t - tau, t + tau, self.multiplier.dtype)
        # as RateController.update: a NaN/inf KL (a diverging run) leaves every multiplier unchanged
        log_f = torch.where(torch.isfinite(mean), math.log(self.factor), 0.0)
        mean = torch.nan_to_num(mean, nan=t, posinf=t, neginf=t)
        self.multiplier.mul_(torch.exp(log_f * ((mean - t) / tau).clamp(-gain, gain))).clamp_(*self.multiplier_clamp)
        self.penalty_above.mul_(torch.exp(log_f * ((above - goal) / goal).clamp(-1.0, gain))).clamp_(*self.penalty_clamp)
        self.penalty_below.mul_(torch.exp(log_f * ((below - goal) / goal).clamp(-1.0, gain))).clamp_(*self.penalty_clamp)

    def weights(self, kl_bits: Tensor) -> Tensor:
        """Per-group weight w (no gradient; see the class docstring), same shape as ``kl_bits``."""
        kl = kl_bits.detach()
        t, tau = self.target_bits, self.tolerance_bits
        excess = (kl - (t + tau)).clamp_min(0.0) / tau
        deficit = ((t - tau) - kl).clamp_min(0.0) / tau
        return 1.0 + self.penalty_above.to(kl.dtype) * excess - self.penalty_below.to(kl.dtype) * deficit

    def loss(self, kl_bits: Tensor) -> Tensor:
        """lambda * batch mean of each image's sum of weighted group KLs: a scalar in bits per image."""
        _check_kl(kl_bits)
        weighted = (self.weights(kl_bits) * kl_bits).flatten(1).sum(dim=1).mean()
        return self.multiplier.to(kl_bits.dtype, copy=True) * weighted  # a copy, as RateController.loss

    def stats(self) -> dict[str, Tensor]:
        return {
            "multiplier": self.multiplier.detach().clone(),
            "penalty_above": self.penalty_above.detach().clone(),
            "penalty_below": self.penalty_below.detach().clone(),
        }


class GaussianBottleneck(Bottleneck):
    """Gaussian VAE bottleneck with per-group KL and a TDC or fixed-weight rate loss.

    Args:
        latent_channels: C, the channels the decoder receives; the encoder must emit 2C (mean, logvar).
        codebook_dim: d, channels per group (the codebook dimension of the later GQ conversion); divides C.
        target_bits: TDC target T per group in bits (log2 K). Exactly one of target_bits / kl_weight.
        kl_weight: fixed weight of the KL in bits (the "vanilla" ablation, no TDC).
        grouping: ``contiguous`` or ``strided`` (docs/method.md section 2).
        tolerance_bits, factor, multiplier_clamp: passed to the rate controller.
        controller: ``reference`` (:class:`RateController`, the paper's; the default) or ``adaptive``
            (:class:`AdaptiveRateController`).
    """

    def __init__(
        self,
        latent_channels: int,
        codebook_dim: int,
        *,
        target_bits: float | None = None,
        kl_weight: float | None = None,
        grouping: str = "contiguous",
        tolerance_bits: float = 0.5,
        factor: float = 1.01,
        multiplier_clamp: tuple[float, float] = (1e-6, 1e6),
        controller: str = "reference",
    ) -> None:
        super().__init__()
        if controller not in CONTROLLERS:
            raise ValueError(f"controller must be one of {CONTROLLERS}; got {controller!r}")
        self.num_groups = check_grouping(latent_channels, codebook_dim, grouping)
        if (target_bits is None) == (kl_weight is None):
            raise ValueError(
                "give exactly one of target_bits (TDC, e.g. log2 of the codebook size) or kl_weight "
                f"(vanilla fixed-weight KL); got target_bits={target_bits}, kl_weight={kl_weight}"
            )
        if kl_weight is not None and not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"kl_weight must be >= 0; got {kl_weight}")
        self.latent_channels = latent_channels
        self.in_channels = 2 * latent_channels
        self.codebook_dim = codebook_dim
        self.grouping = grouping
        self.kl_weight = None if kl_weight is None else float(kl_weight)
        self.controller = controller
        self.rate_controller: RateController | AdaptiveRateController | None = None
        if target_bits is not None:
            cls = AdaptiveRateController if controller == "adaptive" else RateController
            self.rate_controller = cls(target_bits, tolerance_bits, factor, multiplier_clamp)

    def extra_repr(self) -> str:
        mode = f"tdc ({self.controller})" if self.rate_controller is not None else f"vanilla kl_weight={self.kl_weight:g}"
        return (
            f"latent_channels={self.latent_channels}, codebook_dim={self.codebook_dim}, "
            f"num_groups={self.num_groups}, grouping={self.grouping}, {mode}"
        )

    def rate_loss(self, kl_bits: Tensor) -> Tensor:
        """The unweighted rate term in bits per image (TDC-weighted or kl_weight * KL)."""
        if self.rate_controller is not None:
            return self.rate_controller.loss(kl_bits)
        return self.kl_weight * kl_bits.flatten(1).sum(dim=1).mean()

    def update_rate_controller(self, kl_bits: Tensor) -> None:
        """One TDC step (call once per generator step with ``output.kl_bits``); a no-op for vanilla."""
        if self.rate_controller is not None:
            self.rate_controller.update(kl_bits)

    def forward(self, h: Tensor, generator: torch.Generator | None = None) -> BottleneckOutput:
        """``h``: (B, 2C, H, W) or (B, L, 2C) -> z_hat (B, C, H, W) or (B, L, C), kl_bits (B, H, W, G) / (B, L, G).

        ``z_hat`` is the reparameterised sample in train mode and the mean in eval mode.
        """
        check_latent(h, self.in_channels, type(self).__name__)
        posterior = DiagonalGaussian.from_moments(h)
        z_hat = posterior.sample(generator) if self.training else posterior.mode()
        kl_bits = posterior.group_kl_bits(self.codebook_dim, self.grouping)
        stats = {**kl_stats(kl_bits), **posterior_stats(posterior)}
        if self.rate_controller is not None:
            rc = self.rate_controller
            stats.update(**band_stats(kl_bits, rc.target_bits, rc.tolerance_bits), **rc.stats())
        return BottleneckOutput(
            z_hat=z_hat,
            indices=None,
            losses={"rate": self.rate_loss(kl_bits)},
            stats=stats,
            posterior=posterior,
            kl_bits=kl_bits,
        )
