"""A reduced ``bench quality`` end to end: 2 training steps, GQ and FSQ, one rate, one seed."""

import json

import pytest

from gaussquant.bench.quality import QualityConfig, run
from gaussquant.bench.quality_report import aggregate, format_table


def test_bench_quality_reduced(tmp_path, monkeypatch):
    cfg = QualityConfig(archs=("unet",), rates=(8,), seeds=(0,), methods=("gq", "fsq"), steps=2, eval_crops=4,
                        out=str(tmp_path / "bq"), jobs=1, fd=True)
    summary = run(cfg, progress=False)
    rows = summary["rows"]
    assert sorted(r["method"] for r in rows) == ["fsq", "gq"]
    gq = next(r for r in rows if r["method"] == "gq")
    fsq = next(r for r in rows if r["method"] == "fsq")
    assert gq["bits_per_token"] == 8 and gq["bpp"] == 8 * 64 / 32**2 and gq["codebook_size"] == 256
    assert abs(fsq["bits_per_token"] - 8) < 0.2  # FSQ [8,6,5]: log2 240
    for r in rows:
        assert r["eval_images"] == 4 and 0 <= r["usage"] <= 1 and r["psnr"] > 0 and r["fd"] is not None
        assert r["kid"] is not None and r["num_tokens"] == 4 * 64 and r["usage_vs_reachable"] >= r["usage"]
    assert gq["continuous_psnr"] is not None  # GQ keeps the continuous path for the conversion gap
    out = tmp_path / "bq"
    assert json.loads((out / "results.json").read_text())["rows"] == rows
    assert (out / "figures" / "rd_unet.png").is_file()
    paired = summary["paired"]
    assert [p["baseline"] for p in paired] == ["fsq"] and paired[0]["verdict"] == "within noise"  # one seed
    assert "FSQ" in (out / "paired.md").read_text()
    table = (out / "table.md").read_text()
    assert "GQ (TDC VAE -> GQ)" in table and "0.5000" in table
    # mean +- std over seeds: one seed -> std 0
    assert all(e["psnr_std"] == 0.0 for e in aggregate(rows))
    assert format_table(rows).count("\n") == 3

    # A second run reuses every finished unit's rows without training or evaluating again ...
    import gaussquant.bench.quality as quality

    def no_training(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(quality, "train_unit", no_training)
    again = run(cfg, progress=False)["rows"]
    assert sorted(again, key=lambda r: r["method"]) == sorted(rows, key=lambda r: r["method"])
    # ... but not when the evaluation settings change.
    changed = QualityConfig(**{**cfg.__dict__, "eval_crops": 3})
    with pytest.raises(AssertionError, match="trained again"):
        run(changed, progress=False)
