"""The paper presets reproduce the GQ reference's training loop, in this trainer's terms (issue 11).

Reference facts (its configs and trainer): Adam with default betas; base learning rate 1e-4 (GQ, FSQ),
4e-4 (VQ), 4e-5 (LFQ, BSQ); disc_start 20001 counted over alternating generator and discriminator batches
(= generator step 10001 here); the TDC multipliers updated on every forward, twice per generator step
(factor 1.01 twice = 1.01^2 per generator step here); batch 16 per GPU (8 for VQ).
"""

from __future__ import annotations

import pytest

from gaussquant.train.config import OptimConfig, load_config, preset_names

PAPER = [name for name in preset_names() if "-paper-" in name]
LR = {"gq": 1e-4, "fsq": 1e-4, "vq": 4e-4, "lfq": 4e-5, "bsq": 4e-5}


def test_there_are_fourteen_paper_presets():
    assert len(PAPER) == 14


@pytest.mark.parametrize("name", PAPER)
def test_optimiser_and_discriminator_schedule(name):
    cfg = load_config(name)
    method = name.split("-")[2]
    assert cfg.optim.name == "adam" and cfg.optim.betas == (0.9, 0.999)
    assert cfg.optim.lr == LR[method]
    assert cfg.loss.gan.disc_start == 10001  # the reference's 20001 batches, half of them generator steps
    assert cfg.batch_size == (8 if method == "vq" else 16)


def test_optimiser_default_betas_are_adams():
    assert OptimConfig().betas == (0.9, 0.999)


@pytest.mark.parametrize("name", [n for n in PAPER if "-gq-" in n])
def test_tdc_factor_per_generator_step_and_strided_groups(name):
    b = load_config(name).bottleneck
    assert b.factor == pytest.approx(1.01**2) and b.factor == 1.0201
    assert b.grouping == "strided" and b.tolerance_bits == 0.5 and b.target_bits == 16.0
    assert b.codebook_dim == {"0.25bpp": 16, "0.5bpp": 8, "1.0bpp": 4}[name.split("-")[-1]]


def test_baseline_presets_use_the_reference_settings():
    for arch in ("unet", "vit"):
        vq = load_config(f"{arch}-paper-vq-0.25bpp").bottleneck
        assert vq.legacy is True and vq.grouping == "strided" and vq.beta == 0.25
        assert load_config(f"{arch}-paper-bsq-0.25bpp").bottleneck.inv_temperature == 100.0
        lfq = load_config(f"{arch}-paper-lfq-0.25bpp").bottleneck
        assert lfq.codebook_entropy == "pooled" and lfq.inv_temperature == 100.0
        assert (lfq.entropy_weight, lfq.commitment_weight) == (0.1, 0.025)


@pytest.mark.parametrize("arch", ["unet", "vit"])
def test_tiny_baseline_presets_are_the_rate_matched_configs(arch):
    from gaussquant.quantizers.rates import rate_matched_configs

    configs = rate_matched_configs(8, latent_channels=4)
    for method in ("vq", "fsq", "lfq", "bsq"):
        assert load_config(f"{arch}-tiny-{method}").bottleneck == configs[method], method
