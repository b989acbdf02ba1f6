"""Will a Gaussian VAE convert well to a GQ VQ-VAE of codebook size K? (docs/method.md sections 2, 5).

The report measures, on a sample of images, the KL of each latent group in bits (docs/method.md section 2:
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

from gaussquant.distributed import distributed_ready
from gaussquant.quantizers.base import channels_last
from gaussquant.quantizers.grouping import to_groups

BAND_BITS = 0.5  # docs/method.md section 3: the TDC tolerance tau; the sizing band of the report
_SQRT2 = math.sqrt(2.0)


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
    target_bits: float | None = None
    tolerance_bits: float = BAND_BITS
    kl_bits_percentiles: dict[str, float] | None = None
    fraction_groups_in_band: float | None = None

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
            f"predicted P(|z_hat - mu| >= sigma) (docs/method.md section 5): {self.large_error_probability:.3f} "
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


FINE_BITS = 0.125  # streaming histogram resolution; 0.5-bit report bins are 4 fine bins
FINE_RANGE_BITS = 256.0  # group KLs above this go to an overflow bin (reported in the last bin)
NUM_FINE = int(FINE_RANGE_BITS / FINE_BITS)


def fine_counts(values: Tensor) -> Tensor:
    """int64 counts of ``values`` (bits, clamped at 0) in ``NUM_FINE`` bins of ``FINE_BITS`` + 1 overflow."""
    bins = (values.detach().double().clamp(min=0.0) / FINE_BITS).floor().clamp(max=NUM_FINE).long()
    return torch.bincount(bins.reshape(-1).cpu(), minlength=NUM_FINE + 1)


def coarse_histogram(fine: Tensor, lo: float, hi: float, bin_bits: float = 0.5, max_bins: int = 40
                     ) -> tuple[list[int], list[float]]:
    """Merge :func:`fine_counts` into bins of ``bin_bits`` (a multiple when more than ``max_bins`` are needed)
    spanning ``[lo, hi]``; the overflow count joins the last bin, whose edge is then ``hi``."""
    width = bin_bits
    first, last = math.floor(lo / width), math.floor(min(hi, FINE_RANGE_BITS - FINE_BITS) / width)
    if last - first + 1 > max_bins:
        width *= math.ceil((last - first + 1) / max_bins)
        first, last = math.floor(lo / width), math.floor(min(hi, FINE_RANGE_BITS - FINE_BITS) / width)
    per = round(width / FINE_BITS)
    counts = [int(fine[i * per:(i + 1) * per].sum()) for i in range(first, last + 1)]
    counts[-1] += int(fine[(last + 1) * per:].sum())  # the overflow bin (and nothing else: hi lies in bin `last`)
    edges = [i * width for i in range(first, last + 2)]
    edges[-1] = max(edges[-1], hi)
    return counts, edges


def fine_percentile(fine: Tensor, q: float, lo: float, hi: float) -> float:
    """The ``q``-quantile (0..1) of values counted by :func:`fine_counts`: the centre of the first fine bin
    whose cumulative count reaches ``q * N`` (resolution ``FINE_BITS`` / 2), clamped to ``[lo, hi]``."""
    cumulative = torch.cumsum(fine.double(), 0)
    total = float(cumulative[-1])
    if total <= 0:
        raise ValueError("no values were counted")
    b = int(torch.searchsorted(cumulative, torch.tensor([q * total], dtype=torch.float64)).clamp(max=NUM_FINE))
    value = hi if b >= NUM_FINE else (b + 0.5) * FINE_BITS
    return min(max(value, lo), hi)


def histogram(values: Tensor, bin_bits: float = 0.5, max_bins: int = 40) -> tuple[list[int], list[float]]:
    """Counts and edges of ``values`` (bits) in bins of ``bin_bits`` aligned to multiples of it."""
    return coarse_histogram(fine_counts(values), float(values.min()), float(values.max()), bin_bits, max_bins)


class KLAccumulator:
    """Streaming group-KL statistics and predicted large-error probabilities (constant memory).

    State is a few tensors (sums, counts, min, max, a 0.125-bit histogram) so that ranks of a
    distributed evaluation can all-reduce it (:meth:`all_reduce`).
    """

    def __init__(self, codebook_size: int, codebook_dim: int, grouping: str = "contiguous",
                 target_bits: float | None = None, tolerance_bits: float = BAND_BITS) -> None:
        """``target_bits`` (default log2 K) and ``tolerance_bits`` define the band counted as in band."""
        if int(codebook_size) < 2:
            raise ValueError(f"codebook_size must be >= 2; got {codebook_size}")
        self.codebook_size, self.codebook_dim, self.grouping = int(codebook_size), int(codebook_dim), grouping
        self.target_bits = math.log2(self.codebook_size) if target_bits is None else float(target_bits)
        self.tolerance_bits = float(tolerance_bits)
        # sums (float64): images, group tokens, kl, p_dim, dims, p_group, tokens in band; per-group kl sums
        self.sums = torch.zeros(7, dtype=torch.float64)
        self.group_sums: Tensor | None = None
        self.fine = torch.zeros(NUM_FINE + 1, dtype=torch.int64)
        self.extremes = torch.tensor([math.inf, math.inf], dtype=torch.float64)  # (min, -max)

    @property
    def num_images(self) -> int:
        return int(self.sums[0])

    def update(self, mean: Tensor, logvar: Tensor) -> None:
        """Add a batch of posteriors, ``(B, C, H, W)`` or ``(B, L, C)`` each (logvar clamped as section 2)."""
        from gaussquant.quantizers.posterior import DiagonalGaussian

        post = DiagonalGaussian(mean.detach().float(), logvar.detach().float())
        channels = mean.shape[1 if mean.dim() == 4 else -1]
        flat = [channels_last(t).reshape(-1, channels) for t in (post.mean, post.std, post.kl_bits())]
        mu, std, kl = (to_groups(t, self.codebook_dim, self.grouping) for t in flat)  # (N, G, d) each
        p_dim, p_group = predicted_large_error(mu, std, kl, self.codebook_size)
        group_kl = kl.double().sum(-1).cpu()  # (N, G)
        if self.group_sums is None:
            self.group_sums = torch.zeros(group_kl.shape[1], dtype=torch.float64)
        self.group_sums += group_kl.sum(0)
        self.sums += torch.tensor([mean.shape[0], group_kl.numel(), float(group_kl.sum()), float(p_dim.sum()),
                                   p_dim.numel(), float(p_group.sum()),
                                   float(((group_kl - self.target_bits).abs() <= self.tolerance_bits).sum())],
                                  dtype=torch.float64)
        self.fine += fine_counts(group_kl)
        self.extremes = torch.minimum(self.extremes, torch.stack([group_kl.min(), -group_kl.max()]))

    def all_reduce(self) -> None:
        """Combine the state of every rank in place (no-op without an initialised process group)."""
        import torch.distributed as dist

        if not distributed_ready() or self.group_sums is None:
            return
        for t in (self.sums, self.group_sums, self.fine):
            dist.all_reduce(t)
        dist.all_reduce(self.extremes, op=dist.ReduceOp.MIN)

    def report(self) -> ConvertibilityReport:
        if self.group_sums is None or self.sums[1] == 0:
            raise ValueError("no images were measured: the convertibility report needs at least one batch")
        images, tokens, kl_sum, p_dim_sum, dims, p_group_sum, in_band = (float(v) for v in self.sums)
        lo, hi = float(self.extremes[0]), -float(self.extremes[1])
        mean_kl = kl_sum / tokens
        counts, edges = coarse_histogram(self.fine, lo, hi)
        per_group = [float(v) / (tokens / len(self.group_sums)) for v in self.group_sums]
        groups_in_band = sum(abs(v - self.target_bits) <= self.tolerance_bits for v in per_group) / len(per_group)
        return ConvertibilityReport(
            codebook_size=self.codebook_size, codebook_dim=self.codebook_dim, num_groups=len(self.group_sums),
            grouping=self.grouping, num_images=int(images), num_group_tokens=int(tokens),
            kl_bits_mean=mean_kl, kl_bits_min=lo, kl_bits_max=hi,
            kl_bits_per_group=per_group,
            histogram_counts=counts, histogram_edges=edges, fraction_in_band=in_band / tokens,
            large_error_probability=p_dim_sum / dims, large_error_probability_group=p_group_sum / tokens,
            suggested_codebook_size=suggested_codebook_size(mean_kl), warning=sizing_warning(mean_kl, self.codebook_size),
            target_bits=self.target_bits, tolerance_bits=self.tolerance_bits,
            kl_bits_percentiles={str(q): fine_percentile(self.fine, q / 100, lo, hi) for q in (1, 50, 99)},
            fraction_groups_in_band=groups_in_band,
        )
