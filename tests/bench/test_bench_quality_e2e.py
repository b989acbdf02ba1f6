"""A reduced ``bench quality`` end to end: 2 training steps, GQ and FSQ, one rate, one seed.

FSQ is deliberately crippled (its reconstructions get N(0, 1) noise) and must come out last on PSNR and
SSIM (not on FD: over 4 images of a 2-step model, whose reconstructions are nearly constant, added noise
brings the feature statistics closer to real images' and lowers FD). GQ at K = 2 is not used as the crippled method: after 2 training steps the decoder hardly depends on
its latent, so GQ at K = 2 and K = 256 score within noise of each other (8.55 vs 8.57 dB, FD the other way
round in one run); corrupted reconstructions are worst at any training length. Catches: a PSNR whose sign
or ratio is inverted, metrics computed on the wrong pair (e.g. the input against itself), an evaluation
that does not use the model the bench built for the method, and rows attributed to the wrong method.
"""

import json

import pytest
import torch

from gaussquant.bench.quality import QualityConfig, run
from gaussquant.bench.quality_report import aggregate, format_table


def _cripple_fsq(monkeypatch):
    """FSQ's evaluated model decodes to its reconstruction plus N(0, 1) noise (seeded), clamped to [-1, 1]."""
    import gaussquant.bench.quality as quality

    build = quality._discrete_model

    def crippled(model, method, *args, **kwargs):
        m = build(model, method, *args, **kwargs)
        if method == "fsq":
            decode, noise = m.decode, torch.Generator().manual_seed(0)

            def noisy_decode(z):
                x_hat = decode(z)
                return (x_hat + torch.randn(x_hat.shape, generator=noise)).clamp(-1, 1)

            m.decode = noisy_decode
        return m

    monkeypatch.setattr(quality, "_discrete_model", crippled)


def test_bench_quality_reduced(tmp_path, monkeypatch):
    _cripple_fsq(monkeypatch)
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
    # the crippled method ranks last on the pixel metrics
    assert fsq["psnr"] < gq["psnr"] - 1.0 and fsq["ssim"] < gq["ssim"], (gq["psnr"], fsq["psnr"], gq["ssim"], fsq["ssim"])
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
    head, _, gq_line, fsq_line = format_table(rows).split("\n")
    assert "| settings |" in head and "Sobol codebook seed 42" in gq_line and "levels [" in fsq_line  # each row's settings
    assert "FD EffNet" in head and "FD EffNet" not in format_table([{**r, "fd": None} for r in rows])

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
