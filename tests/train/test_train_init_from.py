"""``gaussquant train --init-from MODEL``: weights only, fresh optimiser, the bottleneck may change."""

import dataclasses
import logging

import pytest
import torch
from conftest import tiny_overrides

from gaussquant.cli import main as cli_main
from gaussquant.models.autoencoder import Autoencoder
from gaussquant.quantizers.build import GQConfig
from gaussquant.train.trainer import Trainer, run


@pytest.fixture
def vanilla_run(tiny_config, tmp_path):
    """A vanilla Gaussian VAE (fixed KL weight) trained for 2 steps: the model to fine-tune."""
    result = run(tiny_config("unet-tiny-vanilla", out=tmp_path / "vanilla", steps=2, ckpt_every=2))
    return result.out


def test_vanilla_vae_fine_tuned_with_tdc_starts_from_its_weights(vanilla_run, tiny_config, tmp_path, caplog):
    source = Autoencoder.from_pretrained(vanilla_run)
    cfg = tiny_config("unet-tiny-gq", out=tmp_path / "tdc", steps=1, ema_decay=0.9, init_from=str(vanilla_run))
    with caplog.at_level(logging.INFO, logger="gaussquant.train.setup"):
        trainer = Trainer(cfg)
    model = trainer.c.model_module
    assert model.config.bottleneck.target_bits == 8.0 and source.config.bottleneck.kl_weight == 1.0
    new = {"bottleneck.rate_controller.multiplier", "bottleneck.rate_controller.multiplier_max",
           "bottleneck.rate_controller.multiplier_min"}
    for name, tensor in model.state_dict().items():
        if name in new:
            assert float(tensor) == 1.0  # the TDC multipliers start fresh
        else:
            assert torch.equal(tensor, source.state_dict()[name]), name
    assert trainer.step == 0 and not trainer.c.optimizer.state  # a fresh optimiser
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trainer.c.ema.state_dict().items())
    text = caplog.text
    assert f"init-from {vanilla_run}: loaded {len(source.state_dict())} tensors, new 3" in text
    assert "bottleneck: 3 new (bottleneck.rate_controller.multiplier" in text and "encoder:" in text
    assert trainer.fit().step == 1
    assert Autoencoder.from_pretrained(cfg.out).metadata["train"]["init_from"] == str(vanilla_run)


def tiny_cli_args(out, **extra) -> list[str]:
    return [arg for item in tiny_overrides(out, **extra) for arg in ("--set", item)]


def test_cli_init_from_and_its_errors(vanilla_run, tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="gaussquant.train.setup"):
        code = cli_main(["train", "--preset", "unet-tiny-gq", "--init-from", str(vanilla_run),
                         *tiny_cli_args(tmp_path / "cli", steps=1)])
    assert code == 0 and "loaded" in caplog.text and "new 3" in caplog.text
    capsys.readouterr()
    code = cli_main(["train", "--preset", "vit-tiny-gq", "--init-from", str(vanilla_run),
                     *tiny_cli_args(tmp_path / "vit", steps=1)])
    assert code == 1 and "unet-tiny model, but this run trains vit-tiny" in capsys.readouterr().err


def test_a_converted_gq_codebook_is_never_copied(vanilla_run, tiny_config, tmp_path):
    from gaussquant.convert import to_gaussian_quant

    gq = to_gaussian_quant(Autoencoder.from_pretrained(vanilla_run), 64, seed=1)
    gq.save_pretrained(tmp_path / "gq")
    cfg = tiny_config("unet-tiny-gq", out=tmp_path / "ft", steps=1, init_from=str(tmp_path / "gq"))
    cfg = dataclasses.replace(cfg, bottleneck=GQConfig(latent_channels=4, codebook_size=64, codebook_dim=4, seed=2,
                                                       target_bits=6.0, straight_through=True))
    model = Trainer(cfg).c.model_module
    assert model.config.bottleneck.seed == 2
    assert not torch.equal(model.bottleneck.codebook, gq.bottleneck.codebook)  # its own spec's codebook
    assert all(torch.equal(v, gq.state_dict()[k]) for k, v in model.state_dict().items() if k.startswith("encoder."))


def test_tdc_multipliers_carry_over_to_a_gq_fine_tune_with_a_rate_target(tiny_config, tmp_path):
    tdc = run(tiny_config("unet-tiny-gq", out=tmp_path / "tdc", steps=3, ckpt_every=3)).out
    source = Autoencoder.from_pretrained(tdc).state_dict()
    names = [n for n in source if n.startswith("bottleneck.rate_controller.")]
    assert names and any(float(source[n]) != 1.0 for n in names)  # 3 TDC steps moved them off their start

    def fine_tune(target_bits: float, out: str) -> dict:
        cfg = tiny_config("unet-tiny-gq", out=tmp_path / out, steps=1, init_from=str(tdc))
        cfg = dataclasses.replace(cfg, bottleneck=GQConfig(latent_channels=4, codebook_size=256, codebook_dim=4,
                                                           target_bits=target_bits, straight_through=True))
        return Trainer(cfg).c.model_module.state_dict()

    for target in (8.0, 7.5):  # the source's target (8 bits per group) and a nearby one
        tuned = fine_tune(target, f"t{target}")
        assert all(torch.equal(tuned[n], source[n]) for n in names)
    cfg = tiny_config("unet-tiny-gq", out=tmp_path / "no-tdc", steps=1, init_from=str(tdc))
    cfg = dataclasses.replace(cfg, bottleneck=GQConfig(latent_channels=4, codebook_size=256, codebook_dim=4))
    assert not any(n.startswith("bottleneck.rate_controller.") for n in Trainer(cfg).c.model_module.state_dict())


def test_freeze_encoder_trains_the_decoder_on_gq_codewords_and_keeps_every_token(vanilla_run, tiny_config, tmp_path):
    cfg = tiny_config("unet-tiny-gq", out=tmp_path / "dec", steps=3, init_from=str(vanilla_run),
                      freeze="[encoder]", **{"optim.lr": 0.01})
    cfg = dataclasses.replace(cfg, bottleneck=GQConfig(latent_channels=4, codebook_size=64, codebook_dim=4))
    assert cfg.freeze == ["encoder"]
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.c.model_module.state_dict().items()}
    trainer.fit()
    after = trainer.c.model_module.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("encoder."))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("decoder."))
    assert not any(p.requires_grad for p in trainer.c.model_module.encoder.parameters())


@pytest.mark.parametrize("freeze", ["[encoder, bottleneck, decoder]", "[vae]"])
def test_freeze_refuses_unknown_modules_and_freezing_everything(tiny_config, freeze):
    with pytest.raises(ValueError, match="freeze takes some of encoder, bottleneck, decoder"):
        tiny_config("unet-tiny-gq", freeze=freeze)
