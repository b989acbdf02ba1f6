"""bench demo-gap: the bundled model's conversion gap on small whole photos, per K and with merged groups."""

import torch

from gaussquant.bench.demo_gap import measure
from gaussquant.cli import main
from gaussquant.demo.bundled import load_bundled


def test_bundled_model_gap_is_small_and_shrinks_with_k():
    model, _ = load_bundled()
    torch.manual_seed(0)
    with torch.no_grad():
        m = measure(model, (16, 256), (65536,), max_side=96)
    assert set(m["gq"]) == {"K=16, d=4", "K=256, d=4", "K=65536, d=8"}
    assert m["continuous"] > 18.0
    assert -1.0 < m["gq"]["K=256, d=4"] - m["continuous"] < 0.1  # a trained model at its own rate
    assert m["gq"]["K=16, d=4"] < m["gq"]["K=256, d=4"] - 1.0  # 4 bits per group instead of 8 costs dBs
    mean, low, high = m["kl_bits"]
    assert low <= mean <= high and 4.0 < mean < 12.0


def test_cli_prints_one_line_per_conversion(capsys):
    assert main(["bench", "demo-gap", "--ks", "256", "--max-side", "64", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "continuous" in out and "GQ K=256, d=4:" in out and "gap" in out
