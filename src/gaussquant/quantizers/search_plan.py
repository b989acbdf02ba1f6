"""Block sizes of the memory-bounded codebook search and the working memory they need
(docs/method.md section 4; the search itself is :mod:`gaussquant.quantizers.search`)."""

from __future__ import annotations

from dataclasses import dataclass

# Working memory the blocked search may use by default (see SearchPlan for what it counts).
DEFAULT_MAX_MEMORY_BYTES = 64 * 2**20
# Preferred block shape (tuned with benchmarks/search.py on a 2-core CPU): a (2048 codewords x 512 rows)
# score block stays in the L3 cache and its GEMM, with the codewords as the long side, runs near peak; a
# sub-block of 64 codewords keeps both the sub-block maxima (K/64 per row) and the final re-scoring
# (64 codewords per row) small.
_ROW_BLOCK = 512
_CODE_BLOCK = 2048
_SUB_BLOCK = 64


@dataclass(frozen=True)
class SearchPlan:
    """Block sizes of one search and the working memory they need, in bytes.

    ``sub_block`` divides ``code_block`` unless one code block holds the whole codebook. ``working_bytes``
    counts the score block, the sub-block maxima of one row block (K / sub_block per row), the transposed
    query block, the re-scoring of the winning sub-blocks (codewords, features, scores and indices) and the
    codeword features: the whole (K, q) matrix when ``prebuild``, else one block. It excludes the caller's
    inputs, the (N, q) query matrix (the same size as the inputs) and the (N,) output.
    """

    row_block: int
    code_block: int
    sub_block: int
    query_cols: int
    itemsize: int
    working_bytes: int
    prebuild: bool


def _plan_cost(k: int, q: int, itemsize: int, rows: int, codes: int, sub: int) -> int:
    d = q  # the codeword dimension is at most q (2d for log_ratio, d + 1 for nearest)
    n_sub = -(-k // sub)
    floats = (
        codes * rows  # score block
        + n_sub * rows  # sub-block maxima
        + q * rows  # transposed query block
        + rows * sub * (d + q + 1)  # re-scoring: gathered codewords, their features, their scores
        + codes * q  # features of one codeword block
    )
    return itemsize * floats + 8 * rows * (sub + 2)  # + int64 candidate indices, winners and results


def plan_search(n: int, k: int, query_cols: int, itemsize: int = 4, max_memory_bytes: int | None = None) -> SearchPlan:
    """Choose row, codeword and sub-block sizes whose working memory stays within ``max_memory_bytes``."""
    budget = DEFAULT_MAX_MEMORY_BYTES if max_memory_bytes is None else int(max_memory_bytes)
    q = query_cols
    rows = max(1, min(n, _ROW_BLOCK))
    sub = max(1, min(k, _SUB_BLOCK))
    codes = k if k <= _CODE_BLOCK else _CODE_BLOCK  # a multiple of sub, or the whole codebook

    def cost(r: int, c: int, g: int) -> int:
        return _plan_cost(k, q, itemsize, r, c, g)

    # Shrink the codeword block (keeping it a multiple of the sub-block), then the rows; last, move the
    # sub-block towards sqrt(K / q), where the sub-block maxima and the re-scoring together are smallest.
    while cost(rows, codes, sub) > budget:
        if codes > sub:
            codes = max(sub, (codes // 2) // sub * sub)
        elif rows > 1:
            rows = (rows + 1) // 2
        else:
            best = max(1, min(k, round((k / q) ** 0.5)))
            if best == sub:
                break
            sub = codes = best
    if cost(rows, codes, sub) > budget:
        raise ValueError(
            f"max_memory_bytes={budget} is too small for a search over K={k} codewords "
            f"({cost(rows, codes, sub)} bytes are needed at the smallest blocks); raise it"
        )
    # The whole (K, q) feature matrix is built once when it fits beside the blocks; else once per block.
    full = itemsize * q * k
    prebuild = cost(rows, codes, sub) + full <= budget
    working = cost(rows, codes, sub) + (full if prebuild else 0)
    return SearchPlan(rows, codes, sub, q, itemsize, working, prebuild)
