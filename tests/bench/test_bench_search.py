"""The search benchmark runs end to end on a small grid and reports every column and target."""

import pytest
import torch

from gaussquant.bench import search as bench_search
from gaussquant.quantizers.codebooks import gaussian_codebook


def test_search_benchmark_small_grid():
    result = bench_search.run(codebook_size=512, dims=(1, 4, 16), rows=(8, 512), repeats=1, min_seconds=0.0)
    rows = {(r["d"], r["n"]): r for r in result["rows"]}
    assert set(rows) == {(d, n) for d in (1, 4, 16) for n in (8, 512)}
    assert rows[(1, 8)]["gemm_path_s"] is not None and rows[(4, 8)]["gemm_path_s"] is None
    assert all(r["gq_s"] > 0 and r["plain_s"] > 0 and r["unblocked_s"] > 0 for r in result["rows"])
    assert rows[(16, 512)]["gq_gflops"] > 0 and result["sgemm_gflops"] > 0
    assert result["targets"]["speedup_vs_plain_d16_n512"] > 0
    table = bench_search.format_table(result)
    assert table.count("\n| 16 |") == 2 and "targets:" in table


def test_best_time_repeats_short_calls_until_the_time_is_filled():
    calls = []
    bench_search.best_time(lambda: calls.append(1), repeats=2, min_total=0.0)
    assert len(calls) == 2
    calls.clear()
    bench_search.best_time(lambda: calls.append(1), repeats=2, min_total=0.01, max_runs=7)
    assert len(calls) == 7


def _recording(monkeypatch):
    """Wrap the benchmarked search paths so every call's input (the mean tensor) and output are kept."""
    calls: dict[int, list[tuple[str, torch.Tensor]]] = {}
    inputs: list[torch.Tensor] = []  # kept alive so that no two inputs share an id

    def wrap(name, fn):
        def recorded(mean, *args, **kwargs):
            out = fn(mean, *args, **kwargs)
            if not any(m is mean for m in inputs):
                inputs.append(mean)
            calls.setdefault(id(mean), []).append((name, out.clone()))
            return out

        return recorded

    for name in ("gq_search", "_plain", "_unblocked", "_search_gemm"):
        monkeypatch.setattr(bench_search, name, wrap(name, getattr(bench_search, name)))
    return calls


def test_benchmarked_paths_find_the_same_codewords_on_the_benchmarked_input(monkeypatch):
    """Every path the benchmark times (gq_search, the plain broadcast, the unblocked GEMM + argmax and, for
    d = 1, the GEMM path) returns the same indices on the very inputs it was timed on, so the speed-ups
    compare equal work. Catches: a fast path that is fast because it is wrong (e.g. a sign error in the
    score), and a benchmark that feeds the paths different inputs."""
    calls = _recording(monkeypatch)
    for d in (1, 4, 16):
        codebook = gaussian_codebook(512, d)
        for n in (8, 512):
            bench_search.measure(d, n, codebook, repeats=1, seed=0, min_seconds=0.0)
    assert len(calls) == 6  # one benchmarked input per (d, n)
    for results in calls.values():
        names = {name for name, _ in results}
        assert {"gq_search", "_plain", "_unblocked"} <= names
        first = results[0][1]
        for name, indices in results:
            assert torch.equal(indices, first), f"{name} returned other indices than {results[0][0]}"


def test_measured_search_memory_is_within_the_plan():
    """The measured peak extra memory of gq_search stays within the planned working memory (plus 1 MiB for
    page and allocator granularity), on an input where holding all N x K scores would need 64 MiB, and the
    measurement sees that 64 MiB for the unblocked path (so it could see a breach). Catches: a search that
    materialises full score matrices or ignores the plan's block sizes, and a plan column that understates
    the memory."""
    row = bench_search.measure(16, 4096, gaussian_codebook(4096, 16), repeats=1, seed=0, min_seconds=0.0)
    if row.gq_peak_mib is None:
        pytest.skip("peak memory is measured through /proc (Linux only)")
    assert row.gq_peak_mib <= row.gq_plan_mib + 1.0, (row.gq_peak_mib, row.gq_plan_mib)
    full_scores_mib = 4096 * 4096 * 4 / 2**20  # 64 MiB
    assert row.unblocked_peak_mib >= 0.9 * full_scores_mib > row.gq_plan_mib + 1.0
