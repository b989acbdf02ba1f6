import math

import pytest
import torch

from gaussquant.train.config import config_from_dict, config_to_dict, load_config, preset_names
from gaussquant.train.ema import EMA
from gaussquant.train.optim import lr_factor


def test_every_preset_loads_and_round_trips():
    names = preset_names()
    for arch in ("unet-tiny", "vit-tiny"):
        for kind in ("gq", "vanilla", "vq", "fsq", "lfq", "bsq"):
            assert f"{arch}-{kind}" in names
    for bpp in ("0.25", "0.5", "1.0"):
        assert f"unet-paper-gq-{bpp}bpp" in names and f"vit-paper-gq-{bpp}bpp" in names
    for name in names:
        cfg = load_config(name)
        assert config_from_dict(config_to_dict(cfg)) == cfg


def test_overrides_are_coerced_by_field_type():
    cfg = load_config("unet-tiny-gq", [
        "optim.lr=3e-4", "optim.betas=[0.9,0.99]", "loss.gan.disc_start=5", "ema_decay=0.5",
        "loss.learned_logvar=false", "bottleneck.target_bits=6", "loss.aux_weights={entropy: 0.5}",
    ])
    assert cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.9, 0.99)
    assert cfg.loss.gan.disc_start == 5 and cfg.ema_decay == 0.5 and cfg.loss.learned_logvar is False
    assert cfg.bottleneck.target_bits == 6.0 and cfg.loss.aux_weights == {"entropy": 0.5}
    assert load_config("unet-tiny-gq", ["ema_decay=null"]).ema_decay is None


@pytest.mark.parametrize(
    "override, words",
    [
        ("loss.gan.foo=1", ["foo", "loss.gan"]),
        ("optim.lr=fast", ["optim.lr", "fast"]),
        ("bottleneck.nope=1", ["nope", "gaussian"]),
        ("steps=0", ["steps"]),
        ("optim.schedule=linear", ["schedule"]),
    ],
)
def test_bad_config_errors_name_the_key(override, words):
    with pytest.raises(ValueError) as err:
        load_config("unet-tiny-gq", [override])
    for word in words:
        assert word in str(err.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("no-such-preset")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: unet-tiny}\nbogus: 1\n")
    with pytest.raises(ValueError, match="unknown key 'bogus' in section '<top>'"):
        load_config(bad)


def test_lr_schedules():
    assert lr_factor(0, warmup_steps=4, total_steps=10, schedule="constant") == 0.25
    assert lr_factor(5, warmup_steps=4, total_steps=10, schedule="constant") == 1.0
    assert lr_factor(4, warmup_steps=4, total_steps=10, schedule="cosine") == 1.0
    assert math.isclose(lr_factor(7, warmup_steps=4, total_steps=10, schedule="cosine"), 0.5)
    assert lr_factor(10, warmup_steps=4, total_steps=10, schedule="cosine") == 0.0


def test_ema_matches_plain_recurrence():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    expected = model.weight.detach().clone()
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
        expected = 0.9 * expected + 0.1 * model.weight.detach()
    torch.testing.assert_close(ema.state_dict()["weight"], expected)
