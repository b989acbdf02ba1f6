"""One save/load suite over every bottleneck kind x both architectures (the diffusers model-tester pattern).

A model saved with ``model.save_pretrained(dir)`` (no config arguments) reloads with ``Autoencoder.from_pretrained``
to the same config, the same state, the same tokens and the same reconstructions.
"""

import json

import pytest
import torch

from gaussquant.convert import to_gaussian_quant
from gaussquant.models.autoencoder import Autoencoder
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.build import (
    BSQConfig,
    FSQConfig,
    GaussianConfig,
    GQConfig,
    LFQConfig,
    TokenBridgeConfig,
    VQConfig,
    build_bottleneck,
)

SIZE = 16
KINDS = {
    "tdc": GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=4.0, factor=1.5),
    "vanilla": GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=None, kl_weight=0.5),
    "gq": GQConfig(latent_channels=8, codebook_size=16, codebook_dim=4, rule="nearest", grouping="strided"),
    "vq": VQConfig(latent_channels=8, codebook_size=32, codebook_dim=4, seed=3),
    "fsq": FSQConfig(levels=[8, 5, 5], num_groups=2),
    "lfq": LFQConfig(codebook_bits=4, num_groups=2),
    "bsq": BSQConfig(latent_channels=8),
    "tokenbridge": TokenBridgeConfig(latent_channels=8, codebook_bits=2),
}
ARCHS = ("unet-tiny", "vit-tiny")


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def build(arch: str, cfg) -> Autoencoder:
    torch.manual_seed(0)
    model = build_autoencoder(ModelConfig(arch=arch, image_size=SIZE), build_bottleneck(cfg))
    if hasattr(model.bottleneck, "update_rate_controller"):  # move the TDC multipliers off their start
        model.bottleneck.update_rate_controller(torch.full((2, 4, 2), 9.0))
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_pretrained_round_trip(kind, arch, tmp_path):
    model = build(arch, KINDS[kind])
    assert model.config.bottleneck == KINDS[kind] and model.config.model == ModelConfig(arch=arch, image_size=SIZE)
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = Autoencoder.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, Autoencoder) and not loaded.training
    assert loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x).x_hat, model(x).x_hat)
        if model.bottleneck.is_discrete:
            tokens = model.tokenize(x)
            assert torch.equal(loaded.tokenize(x), tokens)
            assert torch.equal(loaded.detokenize(tokens), model.detokenize(tokens))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert ("bits_per_token" in meta) == model.bottleneck.is_discrete
    assert set(loaded.metadata) >= {"weights_sha256"}


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_nearest_model_reloads_as_nearest(arch, tmp_path):
    # the case of issue 13: convert with rule="nearest", save, reload -> still nearest, same tokens
    vae = build(arch, KINDS["tdc"])
    gq = to_gaussian_quant(vae, 16, rule="nearest", beta=0.5, seed=7, codebook_method="normal")
    cfg = gq.config.bottleneck
    assert (cfg.kind, cfg.rule, cfg.beta, cfg.seed, cfg.codebook_method, cfg.target_bits) == (
        "gq", "nearest", 0.5, 7, "normal", None)
    gq.save_pretrained(tmp_path / "gq")
    loaded = Autoencoder.from_pretrained(tmp_path / "gq")
    assert loaded.config.bottleneck.rule == "nearest" and loaded.bottleneck.rule == "nearest"
    x = images(4)
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(x), gq.tokenize(x))
        # and the rule matters here: log_ratio gives other tokens on these images
        assert not torch.equal(to_gaussian_quant(vae, 16, seed=7, codebook_method="normal").tokenize(x),
                               gq.tokenize(x))


def test_explicit_codebook_round_trip(tmp_path):
    vae = build("unet-tiny", KINDS["tdc"])
    codebook = torch.randn(12, 4, generator=torch.Generator().manual_seed(5))
    gq = to_gaussian_quant(vae, 12, codebook=codebook)
    assert gq.config.bottleneck.codebook_method == "explicit"
    gq.save_pretrained(tmp_path / "gq")
    loaded = Autoencoder.from_pretrained(tmp_path / "gq")
    assert torch.equal(loaded.bottleneck.codebook, codebook)
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(x), gq.tokenize(x))
    with pytest.raises(ValueError, match="explicit"):
        build_bottleneck(gq.config.bottleneck)  # the codebook lives in the weights only


def test_every_bottleneck_rebuilds_from_its_config():
    for cfg in KINDS.values():
        bottleneck = build_bottleneck(cfg)
        assert bottleneck.config == cfg and build_bottleneck(bottleneck.config).config == cfg


def test_models_without_a_full_config_say_so(tmp_path):
    from gaussquant.pretrained import save_pretrained
    from gaussquant.quantizers.gaussian import GaussianBottleneck

    model = build("unet-tiny", KINDS["vq"])
    with pytest.raises(ValueError, match="differs from the model's own config"):
        save_pretrained(model, tmp_path / "x", bottleneck_config=KINDS["fsq"])
    assert not (tmp_path / "x").exists()
    hand_built = Autoencoder(model.encoder, model.bottleneck, model.decoder)
    with pytest.raises(ValueError, match="no ModelConfig"):
        hand_built.save_pretrained(tmp_path / "y")
    with pytest.raises(ValueError, match="multiplier_clamp"):
        _ = GaussianBottleneck(8, 4, kl_weight=1.0, multiplier_clamp=(1e-3, 1e3)).config


def test_module_level_functions_still_work(tmp_path):
    from gaussquant.pretrained import from_pretrained, save_pretrained

    model = build("unet-tiny", KINDS["gq"])
    save_pretrained(model, tmp_path / "m", model_config=model.config.model,
                    bottleneck_config=model.config.bottleneck, extra={"note": "x"})
    loaded, meta = from_pretrained(tmp_path / "m")
    assert meta["bottleneck"]["rule"] == "nearest" and meta["note"] == "x" and meta["model"]["arch"] == "unet-tiny"
    assert loaded.config == model.config
