"""diffusers AutoencoderKL <-> gaussquant UNet: same posterior and decoder outputs, exact weight round trip.

The diffusers side is built by diffusers itself (random weights, a few KB); those tests skip only when
diffusers is not installed (``pip install -e ".[dev]"`` installs it). The key mapping, the ModelConfig it
builds and the error messages are checked without diffusers.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gaussquant.convert import to_gaussian_quant
from gaussquant.interop.diffusers import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    diffusers_config_from_model,
    diffusers_key,
    gaussquant_key,
    load_diffusers_vae,
    model_config_from_diffusers,
    save_diffusers_vae,
)
from gaussquant.models.presets import ARCH_PRESETS, ModelConfig, UNetArch, build_autoencoder
from gaussquant.quantizers.build import GaussianConfig, build_bottleneck
from gaussquant.quantizers.gaussian import GaussianBottleneck

TOL = 1e-5

# two small layouts: SD-style (mid attention, both 1x1 convs) and one with level attention and no 1x1 convs
LAYOUTS = {
    "sd": dict(
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
    ),
    "attn-levels": dict(
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D", "AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[8, 8, 16], layers_per_block=2, latent_channels=2, norm_num_groups=8,
        sample_size=16, mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=True,
    ),
}


def _diffusers_vae(layout: str):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**LAYOUTS[layout]).eval()
    with torch.no_grad():  # move every weight off its init (GroupNorm 1/0, zero biases) so all of them count
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return vae


def _images(n: int = 2, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_loaded_vae_matches_diffusers(tmp_path, layout):
    vae = _diffusers_vae(layout)
    vae.save_pretrained(tmp_path / "vae")
    model = load_diffusers_vae(tmp_path / "vae")
    assert isinstance(model.bottleneck, GaussianBottleneck)
    x = _images()
    latent = LAYOUTS[layout]["latent_channels"]
    z = torch.randn(2, latent, 16 // model.downsample_factor, 16 // model.downsample_factor,
                    generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = vae.encode(x).latent_dist
        ours = model.encode(x).posterior
        assert ours.mean.shape == theirs.mean.shape
        torch.testing.assert_close(ours.mean, theirs.mean, atol=TOL, rtol=0)
        torch.testing.assert_close(ours.logvar, theirs.logvar, atol=TOL, rtol=0)
        torch.testing.assert_close(model.decode(z), vae.decode(z).sample, atol=TOL, rtol=0)
        # the whole continuous reconstruction (decode the posterior mean) as well
        torch.testing.assert_close(model.decode_posterior_mean(x), vae(x).sample, atol=TOL, rtol=0)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_export_round_trip_through_diffusers(tmp_path, layout):
    diffusers = pytest.importorskip("diffusers")
    vae = _diffusers_vae(layout)
    vae.save_pretrained(tmp_path / "vae")
    original = json.loads((tmp_path / "vae" / CONFIG_NAME).read_text())
    model = load_diffusers_vae(tmp_path / "vae")
    save_diffusers_vae(model, tmp_path / "out", base_config=original)
    again = diffusers.AutoencoderKL.from_pretrained(tmp_path / "out").eval()
    # the same architecture keys and the same tensors, bit for bit (quant convs are represented, not folded)
    exported = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())
    for key, value in exported.items():
        if not key.startswith("_"):
            assert original[key] == value, key
    before, after = load_file(tmp_path / "vae" / WEIGHTS_NAME), load_file(tmp_path / "out" / WEIGHTS_NAME)
    assert sorted(before) == sorted(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(again(x).sample, vae(x).sample, atol=0, rtol=0)
        torch.testing.assert_close(again.encode(x).latent_dist.logvar, vae.encode(x).latent_dist.logvar)


def test_model_config_from_diffusers_maps_every_field():
    cfg = model_config_from_diffusers(
        {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
         "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512,
         "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
    )
    assert cfg.arch == "unet-custom" and cfg.image_size == 512
    assert cfg.unet == UNetArch(base_channels=128, channel_mults=(1, 2, 4, 4), num_res_blocks=2, attn_levels=(),
                                z_channels=4, mid_attention=True, norm_groups=32, quant_conv=True,
                                post_quant_conv=True)
    # the custom arch survives the plain-dict round trip a saved config.json makes
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert ModelConfig(**data) == cfg
    # and a training config's model section can name it (YAML lists -> tuples)
    from gaussquant.train.config import config_from_dict

    train = config_from_dict({"model": data, "bottleneck": {"kind": "gaussian", "latent_channels": 4, "codebook_dim": 4}})
    assert train.model == cfg


def test_key_mapping_is_a_bijection_both_ways():
    arch = UNetArch(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2, attn_levels=(1, 2),
                    z_channels=4, mid_attention=True, norm_groups=8, quant_conv=True, post_quant_conv=True)
    cfg = ModelConfig(arch="unet-custom", image_size=32, unet=arch)
    model = build_autoencoder(cfg, build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4)))
    keys = [k for k in model.state_dict() if k.startswith(("encoder.", "decoder."))]
    theirs = [diffusers_key(k, 3) for k in keys]
    assert None not in theirs and len(set(theirs)) == len(keys)
    assert [gaussquant_key(k, 3) for k in theirs] == keys
    assert "quant_conv.weight" in theirs and "post_quant_conv.bias" in theirs
    assert "decoder.up_blocks.0.upsamplers.0.conv.weight" in theirs  # lowest resolution first in diffusers
    assert diffusers_key("bottleneck.rate_controller.multiplier", 3) is None


def test_deprecated_attention_names_load_and_paper_preset_exports(tmp_path):
    """Older VAE files name attention query/key/value/proj_attn; the unet-paper preset (level attention,
    no mid attention, no 1x1 convs) has a diffusers layout too."""
    torch.manual_seed(0)
    arch = dataclasses.replace(model_cfg_tiny_with_attention(), mid_attention=True)
    model = build_autoencoder(ModelConfig(arch="unet-custom", image_size=16, unet=arch),
                              build_bottleneck(GaussianConfig(latent_channels=8, codebook_dim=4))).eval()
    save_diffusers_vae(model, tmp_path / "vae")
    state = load_file(tmp_path / "vae" / WEIGHTS_NAME)
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, value in state.items():
        for new, before in old.items():
            key = key.replace(f".{new}.", f".{before}.")
        renamed[key] = value
    assert any(".query." in k for k in renamed)
    save_file(renamed, str(tmp_path / "vae" / WEIGHTS_NAME))
    loaded = load_diffusers_vae(tmp_path / "vae", GaussianConfig(latent_channels=8, codebook_dim=4))
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode_posterior_mean(x), model.decode_posterior_mean(x), atol=0, rtol=0)

    # a preset of the GQ reference's layout (attention at the lowest level only) maps onto the same preset
    small = build_autoencoder(ModelConfig(arch="unet-small", image_size=64),
                              build_bottleneck(GaussianConfig(latent_channels=16, codebook_dim=16)))
    config = diffusers_config_from_model(small)
    assert config["down_block_types"] == ["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"]
    assert config["up_block_types"] == ["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3
    assert not config["mid_block_add_attention"] and not config["use_quant_conv"]
    assert model_config_from_diffusers(config, image_size=64).unet == ARCH_PRESETS["unet-small"]


def model_cfg_tiny_with_attention() -> UNetArch:
    return UNetArch(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attn_levels=(1,), z_channels=8,
                    norm_groups=16, quant_conv=True, post_quant_conv=True)


def test_loaded_vae_converts_to_gq(tmp_path):
    """The point of loading: fine-tune with TDC, then convert with no training into a GQ VQ-VAE."""
    vae = _diffusers_vae("sd")
    vae.save_pretrained(tmp_path / "vae")
    model = load_diffusers_vae(tmp_path / "vae", GaussianConfig(latent_channels=4, codebook_dim=2, target_bits=6.0))
    model.train()
    out = model(_images(), generator=torch.Generator().manual_seed(0))
    assert out.bottleneck.losses["rate"].ndim == 0 and out.bottleneck.kl_bits.shape == (2, 8, 8, 2)
    gq = to_gaussian_quant(model.eval(), codebook_size=64)
    tokens = gq.tokenize(_images())
    assert tokens.shape == (2, 2, 8, 8) and int(tokens.max()) < 64
    assert gq.detokenize(tokens).shape == (2, 3, 16, 16)


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        ModelConfig(arch="unet-custom")
    with pytest.raises(ValueError, match="go together"):
        ModelConfig(arch="unet-tiny", unet=model_cfg_tiny_with_attention())
    with pytest.raises(ValueError, match="AutoencoderTiny"):
        model_config_from_diffusers({"_class_name": "AutoencoderTiny"})
    with pytest.raises(ValueError, match="attention levels differ"):
        model_config_from_diffusers({
            "block_out_channels": [32, 64], "sample_size": 16,
            "down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"],  # level 0 in the decoder
        })
    with pytest.raises(ValueError, match="multiples of the first"):
        model_config_from_diffusers({"block_out_channels": [48, 64], "sample_size": 16,
                                     "down_block_types": ["DownEncoderBlock2D"] * 2,
                                     "up_block_types": ["UpDecoderBlock2D"] * 2})
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_diffusers_vae(tmp_path)
    # a weights file from another layout: the mismatch is named, nothing is loaded silently
    model = build_autoencoder(ModelConfig(arch="unet-custom", image_size=16, unet=model_cfg_tiny_with_attention()),
                              build_bottleneck(GaussianConfig(latent_channels=8, codebook_dim=4)))
    save_diffusers_vae(model, tmp_path / "vae")
    config = json.loads((tmp_path / "vae" / CONFIG_NAME).read_text())
    config["use_post_quant_conv"] = False
    (tmp_path / "vae" / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="2 unexpected .*post_quant_conv"):
        load_diffusers_vae(tmp_path / "vae", GaussianConfig(latent_channels=8, codebook_dim=4))
    with pytest.raises(ValueError, match="latent_channels=8"):
        load_diffusers_vae(tmp_path / "vae", GaussianConfig(latent_channels=4, codebook_dim=4))
