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


def test_decompose_splits_the_gap_into_sample_distance_and_tail():
    from gaussquant.bench.demo_gap import decompose
    from gaussquant.convert import to_gaussian_quant
    from gaussquant.data.default_photos import whole_held_out_photos
    from gaussquant.demo.photos import evaluate_photos, mean_psnr

    model, _ = load_bundled()
    converted = {k: to_gaussian_quant(model, k) for k in (16, 256)}
    with torch.no_grad():
        results = evaluate_photos(model, whole_held_out_photos(64, 4), converted)
        d = decompose(model, results, converted)
        none = decompose(model, results, converted, tail_margin_bits=1000.0)
    assert d["sample"] < mean_psnr(results)  # decoding a posterior sample costs dBs against the mean
    # more codewords lie closer to the posterior mean; 256 codewords at ~8 bits of KL: about a sample's distance
    assert 0.5 < d["distance"][256] < d["distance"][16]
    frac16, db16 = d["tail"][16]  # 4 bits per group against ~8 bits of KL: most groups are in the "tail"
    assert frac16 > 0.5 and db16 > mean_psnr(results, 16) + 1.0
    for k in (16, 256):  # no tail: every group keeps its codeword, exactly the GQ reconstruction
        assert none["tail"][k][0] == 0.0 and none["tail"][k][1] == mean_psnr(results, k)


def test_cli_decompose_prints_the_sample_gap(capsys):
    assert main(["bench", "demo-gap", "--ks", "256", "--max-side", "64", "--threads", "1", "--decompose"]) == 0
    out = capsys.readouterr().out
    assert "posterior sample:" in out and "codeword distance" in out and "KL tail" in out
