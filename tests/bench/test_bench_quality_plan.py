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
