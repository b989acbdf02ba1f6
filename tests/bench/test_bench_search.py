"""The search benchmark runs end to end on a small grid and reports every column and target."""

from gaussquant.bench import search as bench_search


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
