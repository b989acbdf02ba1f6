"""export_bundled: float16 copy of a trained VAE, optionally with the decoder of its codeword fine-tune."""

import pytest
import torch

from gaussquant.demo.bundled import export_bundled, load_model_dir
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.build import GaussianConfig, GQConfig, build_bottleneck


def _saved(tmp_path, name, bottleneck, arch="unet-tiny", seed=0):
    torch.manual_seed(seed)
    model = build_autoencoder(ModelConfig(arch=arch, image_size=16), build_bottleneck(bottleneck))
    return model, model.save_pretrained(tmp_path / name)


def test_decoder_from_takes_the_fine_tuned_decoder_and_keeps_the_vae(tmp_path):
    vae, vae_dir = _saved(tmp_path, "vae", GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=8.0))
    tuned, tuned_dir = _saved(tmp_path, "dec", GQConfig(latent_channels=8, codebook_size=256, codebook_dim=4), seed=1)
    out = export_bundled(vae_dir, tmp_path / "bundled", decoder_from=tuned_dir, tile=8)
    model, meta = load_model_dir(out)
    assert model.config.bottleneck == vae.config.bottleneck and meta["weights_dtype"] == "float16"
    assert model.config.model.tile == 8 and vae.config.model.tile is None
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    state = model.state_dict()
    for name, tensor in vae.state_dict().items():
        source = tuned.state_dict()[name] if name.startswith("decoder.") else tensor
        assert torch.equal(state[name], source.half().float() if source.is_floating_point() else source), name
    assert not torch.equal(state["decoder.conv_out.weight"], vae.state_dict()["decoder.conv_out.weight"].half().float())


def test_decoder_from_refuses_another_architecture(tmp_path):
    _, vae_dir = _saved(tmp_path, "vae", GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=8.0))
    _, vit_dir = _saved(tmp_path, "vit", GaussianConfig(latent_channels=8, codebook_dim=4), arch="vit-tiny")
    with pytest.raises(ValueError, match="give a fine-tune of the same architecture"):
        export_bundled(vae_dir, tmp_path / "bundled", decoder_from=vit_dir)
    assert not (tmp_path / "bundled").exists()
