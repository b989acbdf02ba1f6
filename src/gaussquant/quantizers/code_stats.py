"""Codebook statistics from index counts: the one implementation every module imports.

Quantizers log them per batch (:func:`code_statistics`); ``gaussquant.eval.codebook_stats`` accumulates
counts over a whole evaluation set and calls the same functions. From counts ``n_k`` (k < K) with
``N = sum n_k`` and ``m`` = number of codes seen:

- ``usage`` = m / K; ``usage_vs_reachable`` = m / min(N, K): N tokens can hit at most N codes, so a set
  of fewer than K tokens is not penalised for codes it could not have used;
- ``entropy_bits`` (plug-in) = ``-sum p_k log2 p_k`` with ``p_k = n_k / N`` (``0 log 0 = 0``);
- ``miller_madow_bits`` = plug-in + ``(m - 1) / (2 N ln 2)``: the plug-in estimate is biased low by about
  that much (Miller 1955), which matters when N is not much larger than K; both are reported;
- ``perplexity`` = ``2 ** entropy_bits``.

Joint statistics of a whole token (all G groups of one position together) use the same functions on the
counts of distinct G-tuples (:func:`joint_token_counts`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["entropy_bits", "miller_madow_bits", "usage", "usage_vs_reachable", "code_statistics",
           "joint_token_counts", "merge_token_counts"]


def entropy_bits(counts: Tensor) -> Tensor:
    """Plug-in entropy in bits of counts ``(..., K)`` along the last dim (float64; 0 for an empty row)."""
    c = counts.double()
    total = c.sum(dim=-1, keepdim=True)
    p = c / total.clamp_min(1.0)
    return -torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p)).sum(dim=-1)


def miller_madow_bits(counts: Tensor) -> Tensor:
    """Miller-Madow corrected entropy in bits: plug-in + ``(m - 1) / (2 N ln 2)`` (``m`` codes seen)."""
    c = counts.double()
    total = c.sum(dim=-1)
    seen = (c > 0).sum(dim=-1).double()
    correction = torch.where(total > 0, (seen - 1).clamp_min(0) / (2.0 * total.clamp_min(1.0) * math.log(2.0)),
                             torch.zeros_like(total))
    return entropy_bits(c) + correction


def usage(counts: Tensor) -> Tensor:
    """Fraction of the K codes seen at least once, per row of ``(..., K)`` counts (float64)."""
    return (counts > 0).double().mean(dim=-1)


def usage_vs_reachable(counts: Tensor, codebook_size: int | None = None) -> Tensor:
    """Codes seen / min(tokens, K) per row; ``codebook_size`` defaults to the last dim (sparse counts)."""
    k = counts.shape[-1] if codebook_size is None else int(codebook_size)
    seen = (counts > 0).double().sum(dim=-1)
    total = counts.double().sum(dim=-1)
    return seen / torch.minimum(total, torch.full_like(total, float(k))).clamp_min(1.0)


def code_statistics(indices: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Batch ``usage``, ``perplexity`` and ``index_entropy_bits`` of integer indices (all groups pooled), float32."""
    counts = torch.bincount(indices.reshape(-1).long(), minlength=codebook_size)
    h = entropy_bits(counts)
    return {"usage": usage(counts).float(), "perplexity": torch.exp2(h).float(), "index_entropy_bits": h.float()}


def joint_token_counts(indices_last: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct whole tokens and their counts: indices ``(..., G)`` -> ``(rows (U, G) int64, counts (U,) int64)``.

    Rows are sorted lexicographically (``torch.unique(dim=0)``), so no K^G table is ever built.
    """
    flat = indices_last.reshape(-1, indices_last.shape[-1]).long()
    rows, counts = torch.unique(flat, dim=0, return_counts=True)
    return rows, counts


def merge_token_counts(rows_a: Tensor, counts_a: Tensor, rows_b: Tensor, counts_b: Tensor) -> tuple[Tensor, Tensor]:
    """Add two ``(rows, counts)`` tables of :func:`joint_token_counts` (same G)."""
    rows, inverse = torch.unique(torch.cat([rows_a, rows_b]), dim=0, return_inverse=True)
    counts = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
    counts.scatter_add_(0, inverse, torch.cat([counts_a, counts_b]).long())
    return rows, counts
