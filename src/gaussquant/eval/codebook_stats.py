"""Codebook usage, index entropy and perplexity over a whole evaluation set.

Counts every index of every group over the whole set (int64 ``bincount``; never per batch). Per group
``g`` with empirical distribution ``p_g``:

- ``usage_g`` = fraction of the K codes used at least once,
- ``entropy_bits_g`` = ``-sum_k p_g(k) log2 p_g(k)`` (exact, from the counts; ``0 log 0 = 0``),
- ``perplexity_g`` = ``2 ** entropy_bits_g``.

The reported scalars are the means over groups. Counts are summed over ranks by ``all_reduce``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gaussquant.eval.streaming import StreamingSums
from gaussquant.quantizers.base import check_indices, indices_last


class CodebookUsage(StreamingSums):
    """Per-group index histograms of a discrete bottleneck.

    Args:
        codebook_size: K.
        num_groups: G.
        device: where the ``(G, K)`` int64 count table lives.
    """

    def __init__(self, codebook_size: int, num_groups: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        if codebook_size < 1 or num_groups < 1:
            raise ValueError(f"codebook_size and num_groups must be >= 1, got {codebook_size}, {num_groups}")
        self.codebook_size, self.num_groups = int(codebook_size), int(num_groups)
        self.add_sum("counts", (self.num_groups, self.codebook_size), torch.int64)

    def update(self, indices: Tensor) -> None:
        """Count indices ``(B, G, H, W)`` or ``(B, L, G)`` (int, values in [0, K))."""
        check_indices(indices, self.codebook_size, self.num_groups)
        flat = indices_last(indices).reshape(-1, self.num_groups).to(self.device, torch.int64)
        # one bincount over (group, code) pairs: group g's codes are shifted by g * K
        offsets = torch.arange(self.num_groups, device=self.device) * self.codebook_size
        counts = torch.bincount((flat + offsets).reshape(-1), minlength=self.num_groups * self.codebook_size)
        self.accumulate("counts", counts.view(self.num_groups, self.codebook_size))

    @property
    def counts(self) -> Tensor:
        """``(G, K)`` int64 counts."""
        return self.sum("counts")

    @property
    def count(self) -> int:
        """Tokens counted per group."""
        return int(self.counts[0].sum())

    def per_group(self) -> dict[str, list[float]]:
        """``usage``, ``entropy_bits`` and ``perplexity`` per group (lists of length G)."""
        counts = self.counts.double().cpu()
        totals = counts.sum(dim=1, keepdim=True)
        if bool((totals == 0).any()):
            raise ValueError("CodebookUsage.compute() before any update: no index was counted")
        usage = (counts > 0).double().mean(dim=1)
        p = counts / totals
        entropy = -(torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))).sum(dim=1)
        return {
            "usage": usage.tolist(),
            "entropy_bits": entropy.tolist(),
            "perplexity": torch.exp2(entropy).tolist(),
        }

    def compute(self) -> dict[str, float | list[float]]:
        """Group means (``codebook_usage``, ``index_entropy_bits``, ``perplexity``), per-group lists
        (``usage`` = ``codebook_usage_per_group``, ``index_entropy_bits_per_group``, ``perplexity_per_group``),
        ``max_entropy_bits`` (log2 K) and ``num_tokens`` (tokens counted per group)."""
        groups = self.per_group()
        return {
            "codebook_usage": sum(groups["usage"]) / self.num_groups,
            "index_entropy_bits": sum(groups["entropy_bits"]) / self.num_groups,
            "perplexity": sum(groups["perplexity"]) / self.num_groups,
            "max_entropy_bits": math.log2(self.codebook_size),
            "usage": groups["usage"],
            "codebook_usage_per_group": groups["usage"],
            "index_entropy_bits_per_group": groups["entropy_bits"],
            "perplexity_per_group": groups["perplexity"],
            "num_tokens": self.count,
        }
