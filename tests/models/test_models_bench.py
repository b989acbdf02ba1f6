"""The models benchmark: one in-process measurement (no worker) and its table."""

from gaussquant.bench.models import ModelBenchRow, _measure, format_table


def test_measure_and_table():
    row = _measure("vit-tiny", image_size=8, batch_size=1, steps=1, seed=0, threads=None)
    assert isinstance(row, ModelBenchRow) and row.arch == "vit-tiny"
    assert row.images_per_s > 0 and row.peak_rss_mib > 0 and row.step_peak_mib >= 0
    table = format_table([row])
    assert "load average" in table and "| vit-tiny | 8 | 1 |" in table
