"""Codebook search speed and memory: gq_search vs the plain broadcast and one unblocked GEMM + argmax.

For K = 2^16 codewords and each d in {1, 4, 8, 16} and N rows (256, 512, 4096, 65536) it measures, in one
run: the best time (of at least ``repeats`` runs and of as many as fill one second, see ``best_time``) of
``gq_search`` (rule ``log_ratio``, beta 1), its GFLOP/s (the 2 N K 2d multiply-adds of its score GEMM),
its peak extra memory; the same for the plain
(N, K, d) broadcast (float32, at the N where it fits) and for one unblocked (N, K) GEMM + argmax (where the
N x K scores fit); for d = 1 also the GEMM path that the bisection replaces; and the machine's SGEMM GFLOP/s
on a 4096^3 matmul as the roof.

Peak extra memory is measured, not estimated: the process's peak resident set (Linux ``VmHWM``) is reset
before each call (``/proc/self/clear_refs``) and compared with the resident set before it, with glibc's
mmap threshold fixed at 64 KiB so that freed large buffers leave the resident set (otherwise a reused free
heap would hide them). The analytic working memory of the blocked search (:func:`plan_search`) is reported
beside it. Where ``/proc`` is unavailable the measured column says ``n/a``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from gaussquant.quantizers.codebooks import gaussian_codebook
from gaussquant.quantizers.search import (
    _query_log_ratio,
    _features_log_ratio,
    _search_gemm,
    gq_search,
    plan_search,
    reference_search,
)

logger = logging.getLogger(__name__)

MiB = 2**20
PLAIN_CHUNK_BYTES = 512 * MiB  # the plain broadcast runs in row chunks whose (n, K, d) tensor fits this
PLAIN_MAX_ROWS = 512  # beyond this the plain broadcast takes minutes; its time grows linearly in N
UNBLOCKED_MAX_BYTES = 1024 * MiB  # one (N, K) float32 score matrix at most


@dataclass
class Row:
    d: int
    n: int
    gq_s: float
    gq_gflops: float | None
    gq_peak_mib: float | None
    gq_plan_mib: float
    gemm_path_s: float | None = None  # d = 1 only: the GEMM path the bisection replaces
    plain_s: float | None = None
    plain_peak_mib: float | None = None
    unblocked_s: float | None = None
    unblocked_peak_mib: float | None = None


# -- measurement helpers ---------------------------------------------------------------------------------
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, so freed large blocks are unmapped
        return libc
    except OSError:
        return None


_LIBC = _libc()


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def peak_extra_bytes(fn: Callable[[], object]) -> float | None:
    """Peak resident memory above the starting resident set while ``fn`` runs, in bytes (None if unknown)."""
    try:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = _rss_kib("VmRSS")
    except OSError:
        return None
    fn()
    return (_rss_kib("VmHWM") - before) * 1024.0


MIN_TIMED_SECONDS = 1.0  # each time is the best of at least `repeats` runs and of as many as fill this


def best_time(
    fn: Callable[[], object], repeats: int, min_total: float = MIN_TIMED_SECONDS, max_runs: int = 100
) -> float:
    """Best wall time of ``fn`` over at least ``repeats`` runs, continued until ``min_total`` seconds are spent.

    The same rule for every method: a call that takes longer than ``min_total`` runs ``repeats`` times, a
    short one runs until the time is filled, so short calls are not judged on one noisy moment of a shared
    machine while long ones already average over it.
    """
    best, spent, runs = float("inf"), 0.0, 0
    while runs < repeats or (spent < min_total and runs < max_runs):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return best


def sgemm_gflops(size: int = 4096, repeats: int = 3) -> float:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    torch.mm(a, b)
    return 2 * size**3 / best_time(lambda: torch.mm(a, b), repeats) / 1e9


def _plain(mean, std, codebook) -> torch.Tensor:
    k, d = codebook.shape
    chunk = max(1, PLAIN_CHUNK_BYTES // (k * d * 4))
    return torch.cat([reference_search(mean[i : i + chunk], std[i : i + chunk], codebook, dtype=torch.float32)
                      for i in range(0, mean.shape[0], chunk)])


def _unblocked(mean, std, codebook) -> torch.Tensor:
    query = _query_log_ratio(mean, std, 1.0, torch.float32)
    return (query @ _features_log_ratio(codebook).t()).argmax(dim=1)


def _mib(x: float | None) -> float | None:
    return None if x is None else x / MiB


# -- the benchmark ---------------------------------------------------------------------------------------
def measure(d: int, n: int, codebook: torch.Tensor, repeats: int, seed: int,
            min_seconds: float = MIN_TIMED_SECONDS) -> Row:
    g = torch.Generator().manual_seed(seed + 1000 * d + n)
    mean = torch.randn(n, d, generator=g)
    std = torch.exp(torch.empty(n, d).uniform_(-2.0, 0.0, generator=g))
    k = codebook.shape[0]
    search = lambda: gq_search(mean, std, codebook)  # noqa: E731
    peak = peak_extra_bytes(search)
    t = best_time(search, repeats, min_seconds)
    plan = plan_search(n, k, 2 * d)
    plan_bytes = plan.working_bytes + n * (2 * d * 4 + 8)  # + the (N, 2d) query and the (N,) output
    row = Row(d, n, t, None if d == 1 else 2 * n * k * 2 * d / t / 1e9, _mib(peak), plan_bytes / MiB)
    if d == 1:
        row.gemm_path_s = best_time(lambda: _search_gemm(mean, std, codebook, 1.0, None), repeats, min_seconds)
    if n <= PLAIN_MAX_ROWS:
        row.plain_peak_mib = _mib(peak_extra_bytes(lambda: _plain(mean, std, codebook)))
        row.plain_s = best_time(lambda: _plain(mean, std, codebook), 1, min_seconds)  # runs take seconds: 1 repeat
    if n * k * 4 <= UNBLOCKED_MAX_BYTES:
        row.unblocked_peak_mib = _mib(peak_extra_bytes(lambda: _unblocked(mean, std, codebook)))
        row.unblocked_s = best_time(lambda: _unblocked(mean, std, codebook), repeats, min_seconds)
    logger.info("d=%d N=%d: gq %.4f s", d, n, t)
    return row


def machine() -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
        info["load_before"] = os.getloadavg()
    except (OSError, AttributeError):
        pass
    return info


def run(
    codebook_size: int = 2**16,
    dims: tuple[int, ...] = (1, 4, 8, 16),
    rows: tuple[int, ...] = (256, 512, 4096, 65536),
    repeats: int = 3,
    seed: int = 0,
    min_seconds: float = MIN_TIMED_SECONDS,
) -> dict:
    """Run the benchmark; returns {"machine", "sgemm_gflops", "rows": [Row as dict], "targets"}."""
    info = machine()
    roof = sgemm_gflops()
    results = []
    for d in dims:
        codebook = gaussian_codebook(codebook_size, d)
        gq_search(torch.zeros(8, d), torch.ones(8, d), codebook)  # warm-up
        for n in rows:
            results.append(measure(d, n, codebook, repeats, seed, min_seconds))
    info["load_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"machine": info, "codebook_size": codebook_size, "sgemm_gflops": roof,
            "rows": [asdict(r) for r in results], "targets": targets(results, roof)}


def targets(rows: list[Row], roof: float) -> dict:
    """The issue's four targets, evaluated on the rows that were measured (None where not measured)."""
    by = {(r.d, r.n): r for r in rows}
    out: dict[str, float | None] = {}
    r = by.get((16, 512))
    out["speedup_vs_plain_d16_n512"] = r.plain_s / r.gq_s if r and r.plain_s else None
    big = [x for x in rows if x.d == 16 and x.n >= 4096]
    out["min_fraction_of_sgemm_d16_n4096plus"] = min(x.gq_gflops / roof for x in big) if big else None
    out["gq_over_unblocked_time_d16_n4096"] = (
        by[(16, 4096)].gq_s / by[(16, 4096)].unblocked_s if (16, 4096) in by and by[(16, 4096)].unblocked_s else None
    )
    peaks = [x.gq_peak_mib for x in rows if x.n == max(y.n for y in rows) and x.gq_peak_mib is not None]
    out["max_gq_peak_mib_at_largest_n"] = max(peaks) if peaks else None
    ones = [x for x in rows if x.d == 1 and x.gemm_path_s]
    out["d1_speedup_vs_gemm_path_at_largest_n"] = (
        max(ones, key=lambda x: x.n).gemm_path_s / max(ones, key=lambda x: x.n).gq_s if ones else None
    )
    return out


def format_table(result: dict) -> str:
    def f(x, spec):
        return "-" if x is None else format(x, spec)

    lines = [
        f"K = {result['codebook_size']}, SGEMM roof {result['sgemm_gflops']:.1f} GFLOP/s, machine: "
        + json.dumps(result["machine"]),
        "",
        "| d | N | gq_search s | GFLOP/s | % roof | peak MiB (plan) | d=1 GEMM path s | plain s | plain peak MiB "
        "| plain / gq | unblocked s | unblocked peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    roof = result["sgemm_gflops"]
    for r in result["rows"]:
        pct = None if r["gq_gflops"] is None else 100 * r["gq_gflops"] / roof
        ratio = None if r["plain_s"] is None else r["plain_s"] / r["gq_s"]
        lines.append(
            f"| {r['d']} | {r['n']} | {r['gq_s']:.4f} | {f(r['gq_gflops'], '.1f')} | {f(pct, '.0f')} "
            f"| {f(r['gq_peak_mib'], '.1f')} ({r['gq_plan_mib']:.1f}) | {f(r['gemm_path_s'], '.4f')} "
            f"| {f(r['plain_s'], '.3f')} | {f(r['plain_peak_mib'], '.0f')} | {f(ratio, '.0f')} "
            f"| {f(r['unblocked_s'], '.4f')} | {f(r['unblocked_peak_mib'], '.0f')} |"
        )
    lines += ["", "targets: " + json.dumps({k: (None if v is None else round(v, 3)) for k, v in result["targets"].items()})]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="reduced grid: d in {1, 16}, N up to 4096, at least 2 repeats")
    parser.add_argument("--codebook-size", type=int, default=2**16, help="K (default 65536)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="minimum timed runs per measurement; short calls repeat until 1 s is filled (best is kept)")
    parser.add_argument("--json", default=None, help="also write the raw results to this JSON file")


def main(args: argparse.Namespace) -> int:
    kwargs = {"codebook_size": args.codebook_size, "repeats": args.repeats}
    if args.quick:
        kwargs.update(dims=(1, 16), rows=(256, 512, 4096), repeats=min(args.repeats, 2))
    result = run(**kwargs)
    sys.stdout.write(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
