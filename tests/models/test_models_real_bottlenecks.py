"""The Autoencoder with the real GaussianBottleneck and GaussianQuantizer, in both latent layouts."""

import pytest
import torch

from gaussquant.models.autoencoder import Autoencoder
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.gaussian import GaussianBottleneck
from gaussquant.quantizers.gaussian_quant import GaussianQuantizer

ARCHS = {"unet-tiny": (2, 2, 2, 2), "vit-tiny": (2, 4, 2)}  # expected index shapes at 8 px, C=8, d=4 -> G=2


def _images(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _vae(arch: str) -> Autoencoder:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_autoencoder(ModelConfig(arch=arch, image_size=8), GaussianBottleneck(8, 4, target_bits=4.0))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_gaussian_vae_shapes_posterior_and_no_tokens(arch):
    model = _vae(arch).train()
    out = model(_images())
    assert out.x_hat.shape == (2, 3, 8, 8)
    latent = (2, 8, 2, 2) if arch == "unet-tiny" else (2, 4, 8)
    assert out.bottleneck.z_hat.shape == latent and out.bottleneck.posterior.mean.shape == latent
    assert out.bottleneck.losses["rate"].ndim == 0
    (out.x_hat.abs().mean() + out.bottleneck.losses["rate"]).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    with pytest.raises(TypeError, match="discrete"):
        model.tokenize(_images())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.decode_posterior_mean(_images()), model(_images()).x_hat)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_gq_conversion_tokenize_detokenize(arch):
    vae = _vae(arch).eval()
    gq = GaussianQuantizer.from_bottleneck(vae.bottleneck, codebook_size=16)
    model = Autoencoder(vae.encoder, gq, vae.decoder).eval()  # the explicit conversion: same weights
    x = _images()
    with torch.no_grad():
        indices = model.tokenize(x)
        assert indices.shape == ARCHS[arch] and indices.dtype == torch.int64
        assert int(indices.min()) >= 0 and int(indices.max()) < 16
        out = model(x)
        assert torch.equal(out.bottleneck.indices, indices)
        torch.testing.assert_close(model.detokenize(indices), out.x_hat)
        # the continuous reconstruction of the GQ model is the Gaussian VAE's eval reconstruction
        torch.testing.assert_close(model.decode_posterior_mean(x), vae(x).x_hat)


def test_generator_makes_the_gaussian_sample_reproducible():
    model = _vae("vit-tiny").train()
    x = _images()
    with torch.no_grad():
        a = model(x, generator=torch.Generator().manual_seed(5)).bottleneck.z_hat
        b = model(x, generator=torch.Generator().manual_seed(5)).bottleneck.z_hat
        c = model(x, generator=torch.Generator().manual_seed(6)).bottleneck.z_hat
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_paper_autoencoder_state_dict_maps_to_reference_with_prefixes():
    """In an Autoencoder the reference keys carry ``encoder.`` / ``decoder.``; nothing else is renamed."""
    import json
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "reference_unet_paper_state_dict_shapes.json"
    reference = json.loads(fixture.read_text())
    with torch.device("meta"):
        model = build_autoencoder(ModelConfig(arch="unet-paper", image_size=256), GaussianBottleneck(16, 16, target_bits=16.0))
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    for part in ("encoder", "decoder"):
        ours = {k[len(part) + 1 :]: v for k, v in shapes.items() if k.startswith(part + ".")}
        assert ours == reference[part]
    assert all(k.split(".")[0] in {"encoder", "decoder", "bottleneck"} for k in shapes)
