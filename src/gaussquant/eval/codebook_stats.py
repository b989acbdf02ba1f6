"""Codebook usage, index entropy and perplexity over a whole evaluation set.

Counts every index of every group over the whole set (int64 ``bincount``; never per batch), and the
distinct whole tokens (all G groups of one position together). The formulas live in
:mod:`gaussquant.quantizers.code_stats` (the one home of codebook statistics); per group ``g``:

- ``usage_g`` = fraction of the K codes used at least once; ``usage_vs_reachable_g`` = codes used /
  min(tokens, K), so that a set with fewer tokens than codes is judged against what it could reach;
- ``entropy_bits_g`` = plug-in ``-sum_k p_g(k) log2 p_g(k)``; ``entropy_mm_bits_g`` = the Miller-Madow
  correction of it (plug-in + (m - 1) / (2 N ln 2), m codes seen): the plug-in estimate is biased low when
  the tokens are not many more than K, and both are reported so the reader sees the size of the bias;
- ``perplexity_g`` = ``2 ** entropy_bits_g``.

The reported scalars are the means over groups. The joint entropy of a whole token (bits per token, beside
the rate ``G log2 K``) comes from the counts of distinct G-tuples; with G = 1 it equals the group entropy.
Counts are summed over ranks by ``all_reduce`` (the joint table is gathered, it has no fixed size).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from gaussquant.eval.streaming import StreamingSums, distributed_ready
from gaussquant.quantizers.base import check_indices, indices_last
from gaussquant.quantizers.code_stats import (entropy_bits, joint_token_counts, merge_token_counts,
                                              miller_madow_bits, usage, usage_vs_reachable)

BIAS_NOTE_RATIO = 10  # below 10 tokens per code the plug-in entropy's bias is worth stating


class CodebookUsage(StreamingSums):
    """Per-group index histograms of a discrete bottleneck, and the table of distinct whole tokens.

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
        self.joint_rows = torch.zeros(0, self.num_groups, dtype=torch.int64)
        self.joint_counts = torch.zeros(0, dtype=torch.int64)

    def update(self, indices: Tensor) -> None:
        """Count indices ``(B, G, H, W)`` or ``(B, L, G)`` (int, values in [0, K))."""
        check_indices(indices, self.codebook_size, self.num_groups)
        flat = indices_last(indices).reshape(-1, self.num_groups).to(self.device, torch.int64)  # (N, G)
        # one bincount over (group, code) pairs: group g's codes are shifted by g * K
        offsets = torch.arange(self.num_groups, device=self.device) * self.codebook_size
        counts = torch.bincount((flat + offsets).reshape(-1), minlength=self.num_groups * self.codebook_size)
        self.accumulate("counts", counts.view(self.num_groups, self.codebook_size))
        if self.num_groups > 1:  # with one group the joint table is the group histogram itself
            rows, n = joint_token_counts(flat.cpu())
            self.joint_rows, self.joint_counts = merge_token_counts(self.joint_rows, self.joint_counts, rows, n)

    def reset(self) -> None:
        super().reset()
        self.joint_rows, self.joint_counts = self.joint_rows[:0], self.joint_counts[:0]

    def merge(self, other: "StreamingSums") -> None:
        super().merge(other)
        self.joint_rows, self.joint_counts = merge_token_counts(self.joint_rows, self.joint_counts,
                                                                other.joint_rows, other.joint_counts)

    def all_reduce(self) -> None:
        """Sum the histograms over ranks and gather the joint tables (collective; no-op without a group)."""
        super().all_reduce()
        if not distributed_ready() or self.num_groups == 1:
            return
        tables: list = [None] * dist.get_world_size()
        dist.all_gather_object(tables, (self.joint_rows, self.joint_counts))
        rows, counts = tables[0]
        for other_rows, other_counts in tables[1:]:
            rows, counts = merge_token_counts(rows, counts, other_rows, other_counts)
        self.joint_rows, self.joint_counts = rows, counts

    @property
    def counts(self) -> Tensor:
        """``(G, K)`` int64 counts."""
        return self.sum("counts")

    @property
    def count(self) -> int:
        """Tokens counted per group."""
        return int(self.counts[0].sum())

    def per_group(self) -> dict[str, list[float]]:
        """``usage``, ``usage_vs_reachable``, ``entropy_bits``, ``entropy_mm_bits``, ``perplexity`` per group."""
        counts = self.counts.cpu()
        if bool((counts.sum(dim=1) == 0).any()):
            raise ValueError("CodebookUsage.compute() before any update: no index was counted")
        entropy = entropy_bits(counts)
        return {
            "usage": usage(counts).tolist(),
            "usage_vs_reachable": usage_vs_reachable(counts).tolist(),
            "entropy_bits": entropy.tolist(),
            "entropy_mm_bits": miller_madow_bits(counts).tolist(),
            "perplexity": torch.exp2(entropy).tolist(),
        }

    def joint(self) -> dict[str, float | int]:
        """Joint entropy of whole tokens in bits (plug-in and Miller-Madow) and the distinct tokens seen."""
        counts = self.joint_counts if self.num_groups > 1 else self.counts[0].cpu()
        return {"joint_entropy_bits": float(entropy_bits(counts)),
                "joint_entropy_mm_bits": float(miller_madow_bits(counts)),
                "distinct_tokens": int((counts > 0).sum())}

    def compute(self) -> dict[str, object]:
        """Group means (``codebook_usage``, ``codebook_usage_vs_reachable``, ``index_entropy_bits``,
        ``index_entropy_bits_mm``, ``perplexity``), per-group lists, ``max_entropy_bits`` (log2 K),
        ``num_tokens`` (tokens per group), ``reachable_codes`` (min(tokens, K)), the joint entropy of whole
        tokens (``joint_entropy_bits``, ``joint_entropy_mm_bits``, ``distinct_tokens``) beside the rate
        ``bits_per_token_rate`` (G log2 K), and ``entropy_estimator`` (which estimate, and its bias)."""
        groups = self.per_group()
        g, k, n = self.num_groups, self.codebook_size, self.count
        rate = g * math.log2(k)
        note = (f"plug-in entropy from exact counts of {n} tokens for K = {k}; the Miller-Madow estimate "
                "(index_entropy_bits_mm) adds (codes seen - 1) / (2 N ln 2)")
        if n < BIAS_NOTE_RATIO * k:
            note += (f"; with fewer than {BIAS_NOTE_RATIO} tokens per code the plug-in is biased low: read the "
                     "Miller-Madow value, and usage against min(tokens, K)")
        return {
            "codebook_usage": sum(groups["usage"]) / g,
            "codebook_usage_vs_reachable": sum(groups["usage_vs_reachable"]) / g,
            "index_entropy_bits": sum(groups["entropy_bits"]) / g,
            "index_entropy_bits_mm": sum(groups["entropy_mm_bits"]) / g,
            "perplexity": sum(groups["perplexity"]) / g,
            "max_entropy_bits": math.log2(k),
            "usage": groups["usage"],
            "codebook_usage_per_group": groups["usage"],
            "codebook_usage_vs_reachable_per_group": groups["usage_vs_reachable"],
            "index_entropy_bits_per_group": groups["entropy_bits"],
            "index_entropy_bits_mm_per_group": groups["entropy_mm_bits"],
            "perplexity_per_group": groups["perplexity"],
            "num_tokens": n,
            "reachable_codes": min(n, k),
            **self.joint(),
            "bits_per_token_rate": rate,
            "max_joint_entropy_bits": min(rate, math.log2(n)) if n > 0 else 0.0,
            "entropy_estimator": note,
        }
