"""bench tdc-convergence: curves from metrics.jsonl, the first step in band, targets met (no training)."""

import json

from gaussquant.bench.tdc_convergence import first_step_in_band, format_table, meets, read_curves


def test_curves_first_step_and_targets(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 10 * i, "stats/kl_in_band": v, "stats/kl_bits_max": 20 - i} for i, v in
             enumerate([0.1, 0.6, 0.4, 0.5, 0.7, 0.9], start=1)]
    path.write_text("\n".join(json.dumps(line) for line in [{"step": 5, "loss": 1.0}] + lines) + "\n")
    curves = read_curves(path)
    assert curves["step"] == [10, 20, 30, 40, 50, 60] and curves["stats/kl_bits_max"][0] == 19
    assert first_step_in_band(curves) == 40  # 0.5, 0.7, 0.9: three logged steps at >= 0.5 from step 40
    assert first_step_in_band(curves, level=0.95) is None
    row = {"arch": "unet", "controller": "adaptive", "bits": 8, "steps": 60, "in_band": 0.55, "kl_mean": 8.1,
           "kl_p99": 12.0, "kl_max": 17.0, "psnr": 18.0, "continuous_psnr": 18.1, "gap_db": 0.1, "usage": 0.97,
           "entropy_frac": 0.85, "first_step_half_in_band": 40}
    assert meets(row) == {"in_band": True, "max<=2T": False, "gap": True, "usage": True, "entropy": False}
    assert "3/5 (in_band, gap, usage)" in format_table([row])
