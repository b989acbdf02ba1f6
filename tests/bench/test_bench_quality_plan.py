"""bench quality: the grid plan (rate matching, shared trainings) and the TDC factor reaching the bottleneck."""

import pytest

from gaussquant.bench.quality import METHODS, QualityConfig, plan
from gaussquant.quantizers.build import GaussianConfig, build_bottleneck
from gaussquant.quantizers.rates import config_bits_per_token


def test_gaussian_config_factor_reaches_rate_controller():
    b = build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=8.0, factor=1.05))
    assert b.rate_controller.factor == pytest.approx(1.05)
    assert build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=8.0)).rate_controller.factor == 1.01


def test_plan_shares_trainings_and_matches_rates():
    cfg = QualityConfig(archs=("unet",), rates=(8, 12), seeds=(0,), methods=METHODS)
    units = plan(cfg)
    names = sorted(u.name for u in units)
    # the vanilla VAE serves TokenBridge at both rates; everything else is trained per rate
    assert names.count("vanilla") == 1
    assert len(units) == 1 + 2 * 6
    vanilla = next(u for u in units if u.name == "vanilla")
    assert vanilla.uses == [("tokenbridge", 8), ("tokenbridge", 12)]
    for unit in units:
        for method, bits in unit.uses:
            if method in ("vq", "lfq", "bsq"):
                assert config_bits_per_token(unit.bottleneck) == bits
            if method == "fsq":
                assert abs(config_bits_per_token(unit.bottleneck) - bits) < 0.2  # FSQ levels: exact, not 2^B
            if method == "gq":
                assert unit.bottleneck.target_bits == bits and unit.bottleneck.codebook_dim == 4
            if method == "tokenbridge_tdc":
                assert unit.bottleneck.codebook_dim == 1 and unit.bottleneck.target_bits == bits / 4


def test_bad_grid_is_an_error():
    with pytest.raises(ValueError, match="unknown"):
        QualityConfig(methods=("gq", "nope"))
    with pytest.raises(ValueError, match="divisible"):
        QualityConfig(rates=(10,))


def test_baselines_run_at_the_reference_settings_and_rows_name_them():
    from gaussquant.bench.quality import TOKENBRIDGE_INPUT, method_settings

    cfg = QualityConfig(archs=("unet",), rates=(8,), seeds=(0,), methods=METHODS)
    units = {method: u for u in plan(cfg) for method, _ in u.uses}
    vq, bsq, lfq = units["vq"].bottleneck, units["bsq"].bottleneck, units["lfq"].bottleneck
    assert vq.legacy is True and vq.grouping == "strided"
    assert bsq.inv_temperature == 100.0
    assert lfq.codebook_entropy == "pooled"
    assert TOKENBRIDGE_INPUT == "sample"
    # the settings are in the run directory name (a run trained otherwise is never reused) and in each row
    assert units["vq"].name == "vq-legacy-strided-8"
    assert units["bsq"].name == "bsq-t0.01-8" and units["lfq"].name == "lfq-pooled-8"
    assert method_settings("vq", vq) == "beta 0.25 on the codebook term, strided groups"
    assert method_settings("bsq", bsq) == "temperature 0.01"
    assert method_settings("lfq", lfq) == "pooled codebook entropy, temperature 0.01"
    assert method_settings("tokenbridge", units["tokenbridge"].bottleneck) == "posterior sample, fitted range"
