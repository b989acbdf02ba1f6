"""Configs, builder, rate-matched presets and rate summaries."""

from __future__ import annotations

import math

import pytest

from gaussquant.quantizers.build import (
    BOTTLENECK_CONFIGS,
    FSQConfig,
    VQConfig,
    bottleneck_config_from_dict,
    bottleneck_config_to_dict,
    build_bottleneck,
)
from gaussquant.quantizers.rates import config_bits_per_token, format_rate_table, rate_matched_configs, rate_summary

BASELINES = ("vq", "fsq", "lfq", "bsq", "tokenbridge", "gq", "gaussian", "gaussian_tokenbridge")


def test_kinds_are_registered():
    assert set(BOTTLENECK_CONFIGS) == {"gaussian", "gq", "vq", "fsq", "lfq", "bsq", "tokenbridge"}


def test_dict_round_trip_and_strict_keys():
    cfg = VQConfig(latent_channels=8, codebook_size=32, codebook_dim=4, legacy=True)
    d = bottleneck_config_to_dict(cfg)
    assert d["kind"] == "vq" and bottleneck_config_from_dict(d) == cfg
    with pytest.raises(ValueError, match="'codebook_sz'.*valid keys"):
        bottleneck_config_from_dict({"kind": "vq", "codebook_sz": 4})
    with pytest.raises(ValueError, match="kind"):
        bottleneck_config_from_dict({"codebook_size": 4})
    with pytest.raises(ValueError, match="unknown bottleneck kind"):
        bottleneck_config_from_dict({"kind": "rvq"})


@pytest.mark.parametrize(("old", "kind", "new", "value"), [
    ("group_dim", "gaussian", "codebook_dim", 4),
    ("max_search_memory_bytes", "vq", "max_memory_bytes", 1 << 20),
    ("bits", "tokenbridge", "codebook_bits", 3),
])
def test_renamed_keys_load_with_a_deprecation_warning(old, kind, new, value):
    with pytest.warns(DeprecationWarning, match=f"'{old}'.*'{new}'"):
        cfg = bottleneck_config_from_dict({"kind": kind, old: value})
    assert getattr(cfg, new) == value
    assert old not in bottleneck_config_to_dict(cfg)


@pytest.mark.parametrize("bits", [8, 12, 16, 32, 64])
def test_presets_are_rate_matched(bits):
    cfgs = rate_matched_configs(bits)
    for name, cfg in cfgs.items():
        got = config_bits_per_token(cfg)
        if name == "fsq":  # FSQ's product of levels is not a power of two
            assert abs(got - bits) < 0.2 * max(1, bits // 16)
        else:
            assert got == bits, name
    for name in BASELINES:
        if name == "vq" and bits > 16:
            continue  # building K = 2^16 codebooks is cheap but not needed to check the rate
        if name == "gq" and bits > 16:
            continue
        q = build_bottleneck(cfgs[name])
        if name.startswith("gaussian"):
            assert q.latent_channels == cfgs[name].latent_channels
            continue
        assert q.bits_per_token == pytest.approx(config_bits_per_token(cfgs[name]), abs=1e-12)


def test_reference_settings_at_16_bits():
    cfgs = rate_matched_configs(16)
    assert (cfgs["vq"].codebook_size, cfgs["vq"].codebook_dim) == (65536, 16)
    assert cfgs["fsq"].levels == [8, 8, 8, 5, 5, 5]
    assert (cfgs["lfq"].num_groups, cfgs["lfq"].codebook_bits) == (2, 8)
    assert cfgs["bsq"].latent_channels == 16
    assert (cfgs["gq"].codebook_size, cfgs["gq"].codebook_dim, cfgs["gq"].latent_channels) == (65536, 16, 16)
    assert cfgs["tokenbridge"].codebook_bits == 1


def test_rate_summary_and_table():
    r = rate_summary(FSQConfig(), 256, 8)
    assert r["tokens"] == 1024 and r["bits_per_token"] == math.log2(64000)
    assert r["bpp"] == pytest.approx(1024 * math.log2(64000) / 256**2)
    gq = rate_summary(rate_matched_configs(64)["gq"], (256, 256), 8)
    assert gq["bpp"] == 1.0  # the paper's d = 4 setting
    table = format_rate_table(rate_matched_configs(16), 256, 8)
    assert "15.9658" in table and "0.25000" in table
    with pytest.raises(ValueError, match="divisible"):
        rate_summary(FSQConfig(), 250, 8)
    with pytest.raises(ValueError, match="bits_per_token"):
        rate_matched_configs(20)
