"""Will a Gaussian VAE convert well to a GQ VQ-VAE of codebook size K? (method.md sections 2, 5).

The report measures, on a sample of images, the KL of each latent group in bits (method.md section 2:
``kl_bits = 0.5 * (mean^2 + std^2 - 1 - logvar) / ln 2`` summed over the group's d dimensions) and compares
it with the codebook's rate log2 K. The paper's sizing rule is round(log2 K) = round(group KL); a mean
group KL outside log2 K +- 0.5 triggers a warning that names the K which would fit, 2^round(mean KL).

Predicted large-error probability. Section 5 gives, for one dimension (d = 1), K i.i.d. N(0, 1) codewords
and the ``nearest`` rule, the exact probability that the chosen codeword is at least one posterior std away
from the mean: ``P = (1 - P_q)^K`` with ``P_q = Phi(mu + sigma) - Phi(mu - sigma)``. For d > 1 we apply it
per dimension with the approximation that dimension i of a group receives the share of the codebook's rate
proportional to its share of the group's KL: ``K_i = K ** (kl_i / kl_group)`` (``1/d`` each when the group's
KL is 0). This is exact for d = 1, keeps each dimension's rate surplus ``log K_i - R_i`` the same fraction of
its rate as the group's, and reports 0.5-ish at a matched rate and near 1 when K is far too small. The report
gives the mean over all dimensions of all group tokens ("per dimension") and the mean over group tokens of
the probability that at least one of its dimensions errs (treating dimensions as independent).
It is a guide, not a guarantee: the default ``log_ratio`` rule and the Sobol codebook differ from the
theorem's assumptions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from gaussquant.quantizers.base import channels_last

BAND_BITS = 0.5  # method.md section 3: the TDC tolerance tau; the sizing band of the report
_SQRT2 = math.sqrt(2.0)


def group_dims(per_dim: Tensor, codebook_dim: int, grouping: str) -> Tensor:
    """Per-dimension values ``(N, C)`` (channels last) -> ``(N, G, d)`` with method.md section 2's grouping.

    ``contiguous``: group g is channels [g*d, (g+1)*d); ``strided``: channels {g, g+G, g+2G, ...}.
    """
    n, channels = per_dim.shape
    if codebook_dim < 1 or channels % codebook_dim:
        raise ValueError(f"codebook_dim {codebook_dim} must divide the latent channels ({channels})")
    groups = channels // codebook_dim
    if grouping == "contiguous":
        return per_dim.reshape(n, groups, codebook_dim)
    if grouping == "strided":
        return per_dim.reshape(n, codebook_dim, groups).transpose(1, 2)
    raise ValueError(f"grouping must be 'contiguous' or 'strided'; got {grouping!r}")


def box_probability(mean: Tensor, std: Tensor) -> Tensor:
    """``P_q = Phi(mu + sigma) - Phi(mu - sigma)`` under N(0, 1), in float64, accurate in the tails.

    Uses the symmetry in mu and the erfc form so that far-out posteriors (|mu| >> 1) do not cancel to 0.
    """
    m, s = mean.double().abs(), std.double()
    return 0.5 * (torch.erfc((m - s) / _SQRT2) - torch.erfc((m + s) / _SQRT2))


def large_error_probability(mean: Tensor, std: Tensor, codebook_size: float) -> Tensor:
    """Section 5's exact ``(1 - P_q)^K`` elementwise (K may be a tensor of per-dimension sizes), float64."""
    p_q = box_probability(mean, std).clamp(max=1.0)
    k = torch.as_tensor(codebook_size, dtype=torch.float64, device=p_q.device)
    return torch.exp(k * torch.log1p(-p_q))


def predicted_large_error(mean: Tensor, std: Tensor, kl_bits: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Per-dimension and per-group large-error probabilities for grouped posteriors.

    Args:
        mean, std, kl_bits: ``(N, G, d)`` posterior means, stds and per-dimension KL bits of group tokens.
        codebook_size: K >= 2.

    Returns:
        ``(p_dim, p_group)``: ``(N, G, d)`` per-dimension probabilities with ``K_i = K ** (kl_i / kl_group)``
        and ``(N, G)`` probabilities that at least one dimension of the group errs (independence assumed).
    """
    kl = kl_bits.double().clamp(min=0.0)
    total = kl.sum(-1, keepdim=True)
    d = kl.shape[-1]
    share = torch.where(total > 0, kl / total.clamp(min=1e-300), torch.full_like(kl, 1.0 / d))
    k_i = torch.exp(share * math.log(codebook_size))
    p_dim = large_error_probability(mean, std, k_i)
    p_group = 1.0 - torch.exp(torch.log1p(-p_dim.clamp(max=1.0 - 1e-16)).sum(-1))
    return p_dim, p_group


@dataclass
class ConvertibilityReport:
    """Group-KL statistics of a sample of images against a codebook of size K (see the module docstring)."""

    codebook_size: int
    codebook_dim: int
    num_groups: int
    grouping: str
    num_images: int
    num_group_tokens: int
    kl_bits_mean: float
    kl_bits_min: float
    kl_bits_max: float
    kl_bits_per_group: list[float]
    histogram_counts: list[int]
    histogram_edges: list[float]
    fraction_in_band: float
    large_error_probability: float
    large_error_probability_group: float
    suggested_codebook_size: int
    warning: str | None

    @property
    def log2_k(self) -> float:
        return math.log2(self.codebook_size)

    def to_dict(self) -> dict:
        return {**asdict(self), "log2_k": self.log2_k}

    def to_text(self, width: int = 40) -> str:
        """A plain-text report with an ASCII histogram; the bin holding log2 K is marked ``<- log2 K``."""
        lines = [
            f"Convertibility to GQ: K = {self.codebook_size} (log2 K = {self.log2_k:.3f} bits), "
            f"d = {self.codebook_dim}, G = {self.num_groups} ({self.grouping})",
            f"sample: {self.num_images} images, {self.num_group_tokens} group tokens",
            f"group KL (bits): mean {self.kl_bits_mean:.3f}, min {self.kl_bits_min:.3f}, "
            f"max {self.kl_bits_max:.3f}; per group: "
            + ", ".join(f"{v:.2f}" for v in self.kl_bits_per_group),
            f"within log2 K +- {BAND_BITS}: {100 * self.fraction_in_band:.1f}% of group tokens",
            f"predicted P(|z_hat - mu| >= sigma) (method.md section 5): {self.large_error_probability:.3f} "
            f"per dimension, {self.large_error_probability_group:.3f} per group (any dimension)",
            "histogram of group KL (bits):",
        ]
        peak = max(self.histogram_counts) or 1
        edges = self.histogram_edges
        for i, count in enumerate(self.histogram_counts):
            bar = "#" * max(1 if count else 0, round(width * count / peak))
            mark = "  <- log2 K" if edges[i] <= self.log2_k < edges[i + 1] else ""
            lines.append(f"  [{edges[i]:7.2f}, {edges[i + 1]:7.2f}) {count:9d} {bar}{mark}")
        if self.warning:
            lines.append("WARNING: " + self.warning)
        return "\n".join(lines)


def suggested_codebook_size(mean_kl_bits: float) -> int:
    """2^round(mean group KL), at least 2 (the paper's sizing rule)."""
    return 2 ** max(1, round(mean_kl_bits))


def sizing_warning(mean_kl_bits: float, codebook_size: int) -> str | None:
    """A sentence when the mean group KL is outside log2 K +- 0.5, else None."""
    log2_k = math.log2(codebook_size)
    if abs(mean_kl_bits - log2_k) <= BAND_BITS:
        return None
    k = suggested_codebook_size(mean_kl_bits)
    side = "above" if mean_kl_bits > log2_k else "below"
    return (
        f"the mean group KL {mean_kl_bits:.2f} bits is {side} log2 K +- {BAND_BITS} = "
        f"[{log2_k - BAND_BITS:.2f}, {log2_k + BAND_BITS:.2f}]; codebook_size {k} (2^{round(math.log2(k))}) "
        f"would fit this model, or retrain it with TDC at target log2 K = {log2_k:.2f} bits"
    )


def histogram(values: Tensor, bin_bits: float = 0.5, max_bins: int = 40) -> tuple[list[int], list[float]]:
    """Counts and edges of ``values``: bins of ``bin_bits`` (a multiple of it when more than ``max_bins``)."""
    lo, hi = float(values.min()), float(values.max())
    width = bin_bits
    start = math.floor(lo / width) * width
    bins = math.floor((hi - start) / width) + 1  # the last bin holds the maximum strictly inside
    if bins > max_bins:
        width *= math.ceil(bins / max_bins)
        start = math.floor(lo / width) * width
        bins = math.floor((hi - start) / width) + 1
    edges = [start + i * width for i in range(bins + 1)]
    counts = torch.histc(values.double(), bins=bins, min=edges[0], max=edges[-1])
    return [int(c) for c in counts], edges


class KLAccumulator:
    """Collect grouped posterior statistics batch by batch, then summarise into a report."""

    def __init__(self, codebook_size: int, codebook_dim: int, grouping: str = "contiguous") -> None:
        if int(codebook_size) < 2:
            raise ValueError(f"codebook_size must be >= 2; got {codebook_size}")
        self.codebook_size, self.codebook_dim, self.grouping = int(codebook_size), int(codebook_dim), grouping
        self.num_images = 0
        self._kl: list[Tensor] = []  # (n, G) group KL bits, float32 (a sample: small)
        self._p_dim_sum = 0.0
        self._p_dim_count = 0
        self._p_group_sum = 0.0

    def update(self, mean: Tensor, logvar: Tensor) -> None:
        """Add a batch of posteriors, ``(B, C, H, W)`` or ``(B, L, C)`` each (logvar clamped as section 2)."""
        from gaussquant.quantizers.posterior import DiagonalGaussian

        post = DiagonalGaussian(mean.detach().float(), logvar.detach().float())
        flat = [channels_last(t).reshape(-1, mean.shape[1 if mean.dim() == 4 else -1])
                for t in (post.mean, post.std, post.kl_bits())]
        mu, std, kl = (group_dims(t, self.codebook_dim, self.grouping) for t in flat)
        p_dim, p_group = predicted_large_error(mu, std, kl, self.codebook_size)
        self._kl.append(kl.sum(-1).cpu())
        self._p_dim_sum += float(p_dim.sum())
        self._p_dim_count += p_dim.numel()
        self._p_group_sum += float(p_group.sum())
        self.num_images += mean.shape[0]

    def report(self) -> ConvertibilityReport:
        if not self._kl:
            raise ValueError("no images were measured: the convertibility report needs at least one batch")
        kl = torch.cat(self._kl)  # (N_tokens, G)
        mean_kl = float(kl.double().mean())
        counts, edges = histogram(kl.reshape(-1))
        in_band = ((kl - math.log2(self.codebook_size)).abs() <= BAND_BITS).double().mean()
        return ConvertibilityReport(
            codebook_size=self.codebook_size, codebook_dim=self.codebook_dim, num_groups=kl.shape[1],
            grouping=self.grouping, num_images=self.num_images, num_group_tokens=kl.numel(),
            kl_bits_mean=mean_kl, kl_bits_min=float(kl.min()), kl_bits_max=float(kl.max()),
            kl_bits_per_group=[float(v) for v in kl.double().mean(0)],
            histogram_counts=counts, histogram_edges=edges, fraction_in_band=float(in_band),
            large_error_probability=self._p_dim_sum / self._p_dim_count,
            large_error_probability_group=self._p_group_sum / kl.numel(),
            suggested_codebook_size=suggested_codebook_size(mean_kl),
            warning=sizing_warning(mean_kl, self.codebook_size),
        )

    def kl_bits(self) -> Tensor:
        """All collected group KLs ``(N_tokens, G)`` (for plots)."""
        return torch.cat(self._kl) if self._kl else torch.empty(0, 0)
