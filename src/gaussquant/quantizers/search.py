"""Memory-bounded codebook search for Gaussian Quant (docs/method.md section 4).

Rules, for a posterior N(mu, diag sigma^2) of one group and codewords c_k in R^d:

- ``log_ratio`` (reference default, beta = 1):
  k* = argmin_k sum_i (c_ki - mu_i)^2 / sigma_i^2 - beta * c_ki^2, the codeword with the largest
  importance weight q(c|x) / p(c)^beta;
- ``nearest`` (the paper's Eq. 3): k* = argmin_k ||c_k - mu||^2.

Both are the argmax of a quadratic score, score_k = sum_i a_i c_ki^2 + b_i c_ki, with
a = (beta - 1/sigma^2) / 2, b = mu / sigma^2 (log_ratio) or a = -1/2, b = mu (nearest). The fast path
computes the scores as GEMMs of codeword features [c^2, c] (K, 2d) against the query rows [a, b] (N, 2d)
(for ``nearest`` the cheaper [c, -||c||^2 / 2] against [mu, 1]), block by block over rows and codewords.
Each score block is reduced at once to the maxima of its runs of 64 codewords; afterwards only the first
run holding a row's maximum is scored again, to find the codeword (see ``_blocked_argmax``). It never
holds N x K x d values nor all N x K scores; the block sizes follow ``max_memory_bytes``. For d = 1 the
argmax is the codeword nearest to mu / (1 - beta sigma^2) (when that denominator is positive; otherwise an
extreme codeword), found by bisection in a sorted copy of the codebook: O(log K) per row.

Ties go to the lowest index everywhere (the first run holding the maximum, then the first maximum within
it). Half-precision inputs are computed in float32, float64 inputs in float64. On CUDA, TF32 matmuls
(``torch.backends.cuda.matmul.allow_tf32``) would round the scores to 10-bit mantissas and change tokens;
the search then logs a warning once.

Written by hand because no library offers a blocked argmax over a quadratic score.
"""

from __future__ import annotations

import logging
import weakref

import torch
from torch import Tensor

from .reference import reference_scores, reference_search
from .search_plan import DEFAULT_MAX_MEMORY_BYTES, SearchPlan, plan_search

__all__ = [
    "RULES",
    "DEFAULT_MAX_MEMORY_BYTES",
    "SearchPlan",
    "plan_search",
    "gq_search",
    "nearest_search",
    "reference_scores",
    "reference_search",
]

logger = logging.getLogger(__name__)

RULES = ("log_ratio", "nearest")
_warned_tf32 = False


# Per-codebook preparations (codeword features, sorted distinct values for d = 1), reused across calls with
# the same codebook tensor: keyed by id, valid only while a weak reference still points at that very tensor,
# its in-place version counter is unchanged and its values still equal a snapshot taken when the entry was
# built (a write through ``.data`` or a NumPy view bumps no version counter). A freed, reused or modified
# tensor therefore never hits. An entry is dropped as soon as its codebook is freed; at most _PREPARED_MAX
# are kept. The finiteness of the codebook is checked on every call, not cached.
_PREPARED: dict[tuple[int, str], tuple[weakref.ref, int, object]] = {}
_PREPARED_MAX = 8


def _prepared(codebook: Tensor, what: str, build):
    key = (id(codebook), what)
    hit = _PREPARED.get(key)
    if hit is not None and hit[0]() is codebook and hit[1] == codebook._version:
        snapshot, value = hit[2]
        if torch.equal(snapshot, codebook):
            return value
    value = build()
    if hit is None or hit[0]() is not codebook:  # a new codebook: forget its entries when it is freed
        weakref.finalize(codebook, _forget, key)
    if key not in _PREPARED and len(_PREPARED) >= _PREPARED_MAX:
        _PREPARED.pop(next(iter(_PREPARED)))
    _PREPARED[key] = (weakref.ref(codebook), codebook._version, (codebook.detach().clone(), value))
    return value


def _forget(key: tuple[int, str]) -> None:
    hit = _PREPARED.get(key)
    if hit is not None and hit[0]() is None:
        del _PREPARED[key]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_codebook(codebook: Tensor, d: int | None = None) -> None:
    if not isinstance(codebook, Tensor) or not codebook.is_floating_point() or codebook.dim() != 2:
        raise ValueError(f"codebook must be a floating-point (K, d) tensor; got {_describe(codebook)}")
    if codebook.shape[0] < 2:
        raise ValueError(f"codebook must have K >= 2 codewords; got K = {codebook.shape[0]}")
    if d is not None and codebook.shape[1] != d:
        raise ValueError(
            f"codeword dimension {codebook.shape[1]} differs from the query dimension {d}: "
            f"codebook {tuple(codebook.shape)}; queries must be (N, {codebook.shape[1]})"
        )
    if not bool(torch.isfinite(codebook).all()):
        raise ValueError("codebook contains NaN or infinite values")


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _check_queries(mean: Tensor, std: Tensor | None, codebook: Tensor) -> None:
    if not isinstance(mean, Tensor) or not mean.is_floating_point() or mean.dim() != 2:
        raise ValueError(f"mean must be a floating-point (N, d) tensor; got {_describe(mean)}")
    if std is not None:
        if not isinstance(std, Tensor) or not std.is_floating_point() or std.shape != mean.shape:
            raise ValueError(
                f"std must be a floating-point tensor shaped like mean {tuple(mean.shape)}; got {_describe(std)}"
            )
    if codebook.device != mean.device:
        raise ValueError(f"codebook is on {codebook.device} but the queries are on {mean.device}")
    _check_codebook(codebook, mean.shape[1])
    if mean.shape[0] == 0:
        return
    # One host sync for all value checks; diagnose only when something is wrong.
    ok = torch.isfinite(mean).all()
    if std is not None:
        ok = ok & torch.isfinite(std).all() & (std > 0).all()
    if not bool(ok):
        if not bool(torch.isfinite(mean).all()):
            raise ValueError("mean contains NaN or infinite values (check the encoder output / posterior)")
        raise ValueError("std must be finite and > 0; it contains NaN, infinite, zero or negative values")


def _warn_tf32(device: torch.device) -> None:
    global _warned_tf32
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 and not _warned_tf32:
        _warned_tf32 = True
        logger.warning(
            "TF32 matmuls are enabled; the codebook search rounds its scores to TF32 and may choose "
            "different tokens. Set torch.backends.cuda.matmul.allow_tf32 = False for exact search."
        )


def _blocked_argmax(
    query: Tensor, codes: Tensor, plan: SearchPlan, feature_fn, features: Tensor | None = None
) -> Tensor:
    """Index of the highest score ``feature_fn(codes) @ query_row`` for each row of ``query`` (N, q).

    ``codes`` is the (K, d) codebook in the compute dtype; ``feature_fn`` maps codewords (..., d) to their
    score features (..., q), elementwise, so a codeword's features are the same bits whichever way it is
    reached; ``features``, when given, is ``feature_fn(codes)`` already built. Two passes per block of
    rows, with no host synchronisation:

    1. For each block of codewords, one GEMM ``features (Kb, q) @ query_block^T (q, R)`` gives a score block,
       codewords along its long side, and a fast vectorised max over each run of ``sub_block`` codewords
       stores the sub-block maxima (K / sub_block, R). No score block outlives its pass.
    2. The first sub-block holding each row's maximum (argmax takes the first) is re-scored, for its
       ``sub_block`` codewords only, and its first maximum is the answer. Ties therefore go to the lowest
       index; pass 2 costs 1 / (number of sub-blocks) of pass 1.

    This replaces a running argmax: an argmax costs about 14 times a max on CPU, and here only the winning
    sub-blocks need one. The re-scoring is a batched matmul whose float rounding may differ from the GEMM's
    in the last bit, so among codewords whose scores agree to within rounding either may be returned (the
    tolerance the reference tests allow); exact ties still go to the lowest index.
    """
    n, k = query.shape[0], codes.shape[0]
    sub, code_block, row_block = plan.sub_block, plan.code_block, plan.row_block
    dev, dtype = query.device, query.dtype
    out = torch.empty(n, dtype=torch.long, device=dev)
    # Every buffer is allocated once per call and reused by each row block.
    maxima = torch.empty(-(-k // sub), row_block, dtype=dtype, device=dev)
    scores = torch.empty(code_block, row_block, dtype=dtype, device=dev)
    cand = torch.empty(row_block, sub, dtype=torch.long, device=dev)
    cand_feats = torch.empty(row_block * sub, query.shape[1], dtype=dtype, device=dev)
    cand_scores = torch.empty(row_block, sub, 1, dtype=dtype, device=dev)
    offsets = torch.arange(sub, device=dev)
    starts = range(0, k, code_block)
    if features is None and plan.prebuild:
        features = feature_fn(codes)
    for r0 in range(0, n, row_block):
        q = query[r0 : r0 + row_block]
        rows = q.shape[0]
        q_t = q.t().contiguous()
        m = maxima[:, :rows]
        for k0 in starts:
            feats = features[k0 : k0 + code_block] if features is not None else feature_fn(codes[k0 : k0 + code_block])
            width = feats.shape[0]
            s = scores[:width, :rows]
            torch.mm(feats, q_t, out=s)
            full = width - width % sub
            if full:
                torch.amax(s[:full].view(full // sub, sub, rows), dim=1, out=m[k0 // sub : (k0 + full) // sub])
            if full < width:  # a partial last sub-block (only in the last codeword block)
                torch.amax(s[full:], dim=0, out=m[(k0 + full) // sub])
        # Pass 2: re-score the first sub-block holding each row's maximum (argmax takes the first).
        c = cand[:rows]
        torch.add(offsets, m.argmax(dim=0)[:, None], alpha=sub, out=c)
        valid = c < k
        c.clamp_(max=k - 1)
        f = cand_feats[: rows * sub]
        if features is not None:
            torch.index_select(features, 0, c.view(-1), out=f)
        else:
            f.copy_(feature_fn(codes.index_select(0, c.view(-1))))
        cs = cand_scores[:rows]
        torch.bmm(f.view(rows, sub, -1), q[:, :, None], out=cs)
        cs = cs.squeeze(2).masked_fill_(~valid, float("-inf"))
        out[r0 : r0 + rows] = c.gather(1, cs.argmax(dim=1, keepdim=True)).squeeze(1)
    return out


# Below this std, 1 / sigma^2 and the scores could overflow (float32: 1e-19 gives inf); such rows are
# computed in the scaled form of _query_log_ratio instead.
_TINY_STD = {torch.float32: 1e-12, torch.float64: 1e-120}


def _query_log_ratio(mean: Tensor, std: Tensor, beta: float, dtype: torch.dtype) -> Tensor:
    """Rows [a, b] with a = (beta - 1/sigma^2) / 2 and b = mu / sigma^2, shape (N, 2d).

    A row whose smallest std s is tiny is multiplied by s^2 (a positive factor per row, so its argmax is the
    same): a = (beta s^2 - (s/sigma)^2) / 2, b = mu (s/sigma)^2, where s/sigma <= 1 cannot overflow.
    """
    sd, mu = std.to(dtype), mean.to(dtype)
    inv_var = sd.square().reciprocal()
    query = torch.cat([(beta - inv_var) * 0.5, mu * inv_var], dim=1)
    smallest = sd.amin(dim=1, keepdim=True)  # (N, 1)
    tiny = smallest < _TINY_STD.get(dtype, 1e-12)
    ratio = (smallest / sd).square()  # (s / sigma)^2 in (0, 1]
    scaled = torch.cat([(beta * smallest.square() - ratio) * 0.5, mu * ratio], dim=1)
    return torch.where(tiny, scaled, query)


def _features_log_ratio(codes: Tensor) -> Tensor:
    """[c^2, c] for codewords (..., d) -> (..., 2d)."""
    return torch.cat([codes.square(), codes], dim=-1)


def _query_nearest(z: Tensor, dtype: torch.dtype) -> Tensor:
    """Rows [z, 1], shape (N, d + 1): z . c - ||c||^2 / 2 is the nearest-neighbour score."""
    z = z.to(dtype)
    return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)


def _features_nearest(codes: Tensor) -> Tensor:
    """[c, -||c||^2 / 2] for codewords (..., d) -> (..., d + 1)."""
    return torch.cat([codes, codes.square().sum(dim=-1, keepdim=True) * -0.5], dim=-1)


def _distinct_sorted(codebook: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Distinct values of a (K, 1) codebook, ascending, and the lowest index holding each."""
    k = codebook.shape[0]
    values, inverse = torch.unique(codebook[:, 0].to(dtype), sorted=True, return_inverse=True)
    order = torch.arange(k, device=codebook.device)
    first = torch.full((values.shape[0],), k, dtype=torch.long, device=codebook.device)
    return values, first.scatter_reduce(0, inverse, order, reduce="amin")


def _search_1d(center: Tensor, concave: Tensor, a: Tensor | None, b: Tensor | None, codebook: Tensor) -> Tensor:
    """d = 1: the codeword nearest to ``center`` where the score is concave, else the better extreme.

    The score a c^2 + b c with a < 0 equals a (c - center)^2 + const, center = -b / (2a), so its argmax is the
    codeword nearest to center; with a >= 0 (log_ratio with beta sigma^2 >= 1) it is convex or linear in c
    and the argmax is the smallest or the largest codeword. Works on distinct sorted values, each carrying
    the lowest index holding it, so ties go to the lowest index.
    """
    values, first = _prepared(codebook, f"sorted-{center.dtype}", lambda: _distinct_sorted(codebook, center.dtype))
    last = values.shape[0] - 1
    pos = torch.searchsorted(values, center.contiguous())  # values[pos-1] < center <= values[pos]
    lo, hi = (pos - 1).clamp(0, last), pos.clamp(0, last)
    d_lo, d_hi = (center - values[lo]).abs(), (values[hi] - center).abs()
    lower_first = torch.where(first[lo] <= first[hi], lo, hi)
    pick = torch.where(d_lo < d_hi, lo, torch.where(d_hi < d_lo, hi, lower_first))
    idx = first[pick]
    if a is None or b is None:
        return idx
    s_min = a * values[0].square() + b * values[0]
    s_max = a * values[last].square() + b * values[last]
    tie = torch.minimum(first[0], first[last]).expand_as(idx)
    ext = torch.where(s_min > s_max, first[0], torch.where(s_max > s_min, first[last], tie))
    flat = (a == 0) & (b == 0)  # every codeword scores 0: the lowest index overall
    ext = torch.where(flat, torch.zeros_like(ext), ext)
    return torch.where(concave, idx, ext)


def _exact_dtype(device: torch.device) -> torch.dtype:
    # float64 for the O(N log K) scalar path: cheap, and it removes rounding from the choice (not on MPS).
    return torch.float32 if device.type == "mps" else torch.float64


def gq_search(
    mean: Tensor,
    std: Tensor | None,
    codebook: Tensor,
    *,
    rule: str = "log_ratio",
    beta: float = 1.0,
    max_memory_bytes: int | None = None,
) -> Tensor:
    """Index of the best codeword for each posterior row (docs/method.md section 4).

    Args:
        mean: (N, d) posterior means of N groups, any float dtype, N >= 0.
        std: (N, d) posterior standard deviations, > 0 (unused and may be None for ``rule="nearest"``).
        codebook: (K, d) codewords, K >= 2, on the same device.
        rule: ``"log_ratio"`` (argmax q(c|x) / p(c)^beta) or ``"nearest"`` (argmin ||c - mean||^2).
        beta: prior exponent of ``log_ratio``, finite and >= 0 (0 = Mahalanobis nearest neighbour).
        max_memory_bytes: bound on the working memory of the blocked search (default 64 MiB); see
            :func:`plan_search`.

    Returns:
        (N,) int64 indices in [0, K); ties go to the lowest index.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}")
    if rule == "log_ratio":
        if std is None:
            raise ValueError("rule='log_ratio' needs std; pass the posterior standard deviations")
        beta = float(beta)
        if not (beta >= 0.0 and beta != float("inf")):
            raise ValueError(f"beta must be finite and >= 0; got {beta}")
    else:
        std = None
    _check_queries(mean, std, codebook)
    n, d = mean.shape
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=mean.device)
    if d == 1:
        return _search_scalar(mean, std, codebook, beta)
    return _search_gemm(mean, std, codebook, beta, max_memory_bytes)


def _search_scalar(mean: Tensor, std: Tensor | None, codebook: Tensor, beta: float) -> Tensor:
    """d = 1 by bisection (validated inputs; ``std=None`` means rule ``nearest``)."""
    dtype = _exact_dtype(mean.device)
    mu = mean[:, 0].to(dtype)
    if std is None:
        return _search_1d(mu, torch.ones_like(mu, dtype=torch.bool), None, None, codebook)
    var = std[:, 0].to(dtype).square()
    denom = 1.0 - beta * var
    concave = denom > 0
    center = torch.where(concave, mu / torch.where(concave, denom, torch.ones_like(denom)), torch.zeros_like(mu))
    return _search_1d(center, concave, (beta - var.reciprocal()) * 0.5, mu / var, codebook)


@torch.no_grad()
def _search_gemm(
    mean: Tensor, std: Tensor | None, codebook: Tensor, beta: float, max_memory_bytes: int | None
) -> Tensor:
    """Blocked two-pass GEMM argmax for any d (validated inputs; ``std=None`` means rule ``nearest``)."""
    n = mean.shape[0]
    dtype = _compute_dtype(mean, codebook if std is None else std, codebook)
    _warn_tf32(mean.device)
    if std is None:
        query, feature_fn, rule = _query_nearest(mean, dtype), _features_nearest, "nearest"
    else:
        query, feature_fn, rule = _query_log_ratio(mean, std, beta, dtype), _features_log_ratio, "log_ratio"
    itemsize = torch.finfo(dtype).bits // 8
    plan = plan_search(n, codebook.shape[0], query.shape[1], itemsize, max_memory_bytes)
    codes = codebook.detach().to(dtype)
    features = None
    if plan.prebuild:  # the (K, q) features, kept with the codebook's other preparations
        features = _prepared(codebook, f"features-{rule}-{dtype}", lambda: feature_fn(codes))
    # Autocast would run the GEMM in half precision and change tokens: the search is always fp32/fp64.
    with torch.autocast(device_type=mean.device.type, enabled=False):
        return _blocked_argmax(query, codes, plan, feature_fn, features)


def nearest_search(z: Tensor, codebook: Tensor, *, max_memory_bytes: int | None = None) -> Tensor:
    """Index of the squared-Euclidean nearest codeword for each row of ``z`` (N, d); ties to the lowest.

    The same blocked two-pass GEMM search as :func:`gq_search` (which it calls with ``rule="nearest"``);
    used by the VQ baseline. Returns (N,) int64 in [0, K).
    """
    return gq_search(z, None, codebook, rule="nearest", max_memory_bytes=max_memory_bytes)
