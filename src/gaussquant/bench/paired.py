"""Paired differences over seeds with a Student-t confidence interval, and the verdict they support.

For one (arch, rate, baseline) the benchmark trains GQ and the baseline with the same seeds (same data
order, same initial weights where the architectures agree), so the per-seed difference ``d_s = GQ_s -
baseline_s`` removes what the seed does to both. With ``n`` seeds, mean ``d``, sample std ``s``:
``CI = d +- t_{(1 + c) / 2, n - 1} * s / sqrt(n)``. Verdict: "GQ ahead" when the whole interval is above 0,
"behind" when it is below 0, else "within noise" (always so with one seed: no interval).

The t quantile is computed here from the closed-form CDF of Student's t with an integer number of degrees
of freedom (Abramowitz and Stegun 26.7.3-4) and bisection: seeds are whole numbers, and the library does
not depend on scipy for one function (the tests check it against scipy).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

VERDICTS = ("GQ ahead", "behind", "within noise")


def t_two_sided_cdf(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df >= 1`` degrees of freedom (``t >= 0``)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c  # cos + (2/3) cos^3 + (2*4)/(3*5) cos^5 + ...
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return (2.0 / math.pi) * (theta + s * total) if df > 1 else 2.0 * theta / math.pi
    total, term = 0.0, 1.0  # 1 + (1/2) cos^2 + (1*3)/(2*4) cos^4 + ...
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The ``t`` with ``P(|T| <= t) = confidence`` (the two-sided critical value), by bisection."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while t_two_sided_cdf(high, df) < confidence:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if t_two_sided_cdf(mid, df) < confidence else (low, mid)
    return 0.5 * (low + high)


def paired_interval(differences: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """``{"n", "mean", "std", "half_width", "low", "high", "verdict"}`` of per-seed differences."""
    n = len(differences)
    if n == 0:
        raise ValueError("no paired differences")
    mean = statistics.fmean(differences)
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "half_width": None, "low": None, "high": None,
                "verdict": "within noise"}
    std = statistics.stdev(differences)
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "GQ ahead" if low > 0 else "behind" if high < 0 else "within noise"
    return {"n": n, "mean": mean, "std": std, "half_width": half, "low": low, "high": high, "verdict": verdict}


def paired_rows(rows: list[dict[str, Any]], metric: str = "psnr", confidence: float = 0.95,
                higher_is_better: bool = True) -> list[dict[str, Any]]:
    """One entry per (arch, rate, baseline): GQ minus baseline over the seeds both have (sign flipped for a
    lower-is-better metric, so that a positive difference always favours GQ)."""
    table: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            table.setdefault((r["arch"], r["rate"], r["method"]), {})[r["seed"]] = float(r[metric])
    out = []
    for (arch, rate, method), values in sorted(table.items()):
        gq = table.get((arch, rate, "gq"))
        if method == "gq" or gq is None:
            continue
        seeds = sorted(set(gq) & set(values))
        if not seeds:
            continue
        sign = 1.0 if higher_is_better else -1.0
        diffs = [sign * (gq[s] - values[s]) for s in seeds]
        out.append({"arch": arch, "rate": rate, "baseline": method, "metric": metric, "seeds": seeds,
                    "differences": diffs, "confidence": confidence, **paired_interval(diffs, confidence)})
    return out
