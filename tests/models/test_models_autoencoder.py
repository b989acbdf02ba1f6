"""Autoencoder over every preset and both latent layouts, with test-local bottlenecks of the protocol:
an identity (continuous), a toy Gaussian (posterior), and a rounding quantizer (discrete)."""

import pytest
import torch
from torch import Tensor

from gaussquant.models.autoencoder import Autoencoder, AutoencoderOutput
from gaussquant.models.unet import UNetDecoder, UNetEncoder
from gaussquant.models.presets import ARCH_PRESETS, ModelConfig, build_autoencoder
from gaussquant.quantizers.base import (
    Bottleneck,
    BottleneckOutput,
    DiscreteBottleneck,
    channels_back,
    channels_last,
    indices_last,
    indices_layout,
)
from gaussquant.quantizers.posterior import DiagonalGaussian


class IdentityBottleneck(Bottleneck):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.in_channels = self.latent_channels = channels

    def forward(self, h: Tensor) -> BottleneckOutput:
        return BottleneckOutput(z_hat=h)


class ToyGaussian(Bottleneck):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.in_channels, self.latent_channels = 2 * channels, channels

    def forward(self, h: Tensor) -> BottleneckOutput:
        posterior = DiagonalGaussian.from_moments(h)
        z = posterior.sample(torch.Generator().manual_seed(0)) if self.training else posterior.mode()
        rate = posterior.kl_bits().sum() / h.shape[0]
        return BottleneckOutput(z_hat=z, losses={"rate": rate}, posterior=posterior)


class RoundingQuantizer(DiscreteBottleneck):
    """Each channel is one group with K = 5 levels {-2..2} (FSQ-like, straight-through)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.in_channels = self.latent_channels = self.num_groups = channels
        self.codebook_size = 5

    def _levels(self, h: Tensor) -> Tensor:
        return 2 * torch.tanh(h)

    def forward(self, h: Tensor) -> BottleneckOutput:
        y = self._levels(h)
        z = y + (y.round() - y).detach()
        return BottleneckOutput(z_hat=z, indices=self.quantize(h))

    def quantize(self, h: Tensor) -> Tensor:
        idx = (self._levels(channels_last(h)).round() + 2).long()
        return indices_layout(idx, h.dim())

    def dequantize(self, indices: Tensor) -> Tensor:
        return channels_back(indices_last(indices).float() - 2, indices.dim())


BOTTLENECKS = {"identity": IdentityBottleneck, "gaussian": ToyGaussian, "rounding": RoundingQuantizer}
SMALL_SIZE = {"unet-tiny": 8, "unet-small": 16, "vit-tiny": 8, "vit-small": 16}


def _images(b: int, size: int, seed: int = 0, channels: int = 3) -> Tensor:
    return torch.rand(b, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _model(arch: str, kind: str, size: int | None = None, seed: int = 0, **cfg) -> Autoencoder:
    size = size or SMALL_SIZE[arch]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model_cfg = ModelConfig(arch=arch, image_size=size, **cfg)
        return build_autoencoder(model_cfg, BOTTLENECKS[kind](model_cfg.z_channels))


# every CPU preset once, each latent layout with a continuous and a discrete bottleneck
SHAPE_CASES = [("unet-tiny", "gaussian"), ("unet-small", "rounding"), ("vit-tiny", "rounding"), ("vit-small", "gaussian")]


@pytest.mark.parametrize(("arch", "kind"), SHAPE_CASES)
def test_shapes_every_cpu_preset_and_layout(arch, kind):
    size = SMALL_SIZE[arch]
    model = _model(arch, kind).eval()
    f, z = model.downsample_factor, ARCH_PRESETS[arch].z_channels
    t = size // f
    expected = (2, z, t, t) if arch.startswith("unet") else (2, t * t, z)
    with torch.no_grad():
        out = model(_images(2, size))
        assert isinstance(out, AutoencoderOutput) and out.x_hat.shape == (2, 3, size, size)
        assert out.bottleneck.z_hat.shape == expected
        if kind == "rounding":
            idx = model.tokenize(_images(2, size))
            assert idx.dtype == torch.int64 and idx.shape == expected  # G = z groups of one channel
        else:
            assert out.bottleneck.posterior.mean.shape == expected


def _attention_unet(channels: int) -> Autoencoder:
    """A small UNet with level attention and middle attention, to cover every block type cheaply."""
    kw = dict(base_channels=32, channel_mults=[1, 2], num_res_blocks=1, attn_resolutions=[4], resolution=8,
              mid_attention=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        enc, dec = UNetEncoder(out_channels=2 * channels, **kw), UNetDecoder(in_channels=channels, **kw)
    return Autoencoder(enc, ToyGaussian(channels), dec)


@pytest.mark.parametrize("arch", ["unet-tiny", "unet-attention", "vit-tiny"])
def test_gradient_reaches_every_parameter(arch):
    model = (_attention_unet(4) if arch == "unet-attention" else _model(arch, "gaussian")).train()
    out = model(_images(2, 8))
    loss = (out.x_hat - _images(2, 8, seed=1)).abs().mean() + 1e-3 * out.bottleneck.losses["rate"]
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


@pytest.mark.parametrize("arch", ["unet-tiny", "vit-tiny"])
def test_deterministic_under_fixed_seed(arch):
    a, b = _model(arch, "gaussian", seed=3).eval(), _model(arch, "gaussian", seed=3).eval()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = _images(2, 8)
    assert torch.equal(a(x).x_hat, b(x).x_hat)
    c = _model(arch, "gaussian", seed=4).eval()
    assert not torch.equal(a(x).x_hat, c(x).x_hat)


@pytest.mark.parametrize("arch", ["unet-tiny", "vit-tiny"])
def test_tokenize_detokenize_round_trip_equals_eval_forward(arch):
    model = _model(arch, "rounding").eval()
    x = _images(2, 8)
    idx = model.tokenize(x)
    assert int(idx.min()) >= 0 and int(idx.max()) < 5
    torch.testing.assert_close(model.detokenize(idx), model(x).x_hat)


def test_decode_posterior_mean_is_decoder_of_mean():
    model = _model("unet-tiny", "gaussian").train()
    x = _images(1, 8)
    mean = model.bottleneck(model.encoder(x)).posterior.mean
    torch.testing.assert_close(model.decode_posterior_mean(x), model.decode(mean))
    with pytest.raises(TypeError, match="no posterior"):
        _model("unet-tiny", "identity").decode_posterior_mean(x)


def test_continuous_bottleneck_cannot_tokenize():
    model = _model("vit-tiny", "gaussian")
    with pytest.raises(TypeError, match="needs a discrete bottleneck"):
        model.tokenize(_images(1, 8))
    with pytest.raises(TypeError, match="needs a discrete bottleneck"):
        model.detokenize(torch.zeros(1, 4, 8, dtype=torch.long))


def test_input_errors_name_the_problem():
    model = _model("unet-tiny", "identity")
    with pytest.raises(ValueError, match="multiples of the downsampling factor 4"):
        model(_images(1, 10))
    with pytest.raises(ValueError, match="grayscale"):
        model(_images(1, 8, channels=1))
    with pytest.raises(TypeError, match="float tensor"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        model(_images(1, 8, channels=4))


def test_grayscale_converted_when_configured():
    model = _model("unet-tiny", "identity", convert_grayscale=True).eval()
    gray = _images(1, 8, channels=1)
    torch.testing.assert_close(model(gray).x_hat, model(gray.expand(-1, 3, -1, -1)).x_hat)


def test_channel_mismatch_between_parts_is_an_error():
    cfg = ModelConfig(arch="unet-tiny", image_size=8)
    model = build_autoencoder(cfg, IdentityBottleneck(8))
    with pytest.raises(ValueError, match="bottleneck takes 16"):
        Autoencoder(model.encoder, ToyGaussian(8), model.decoder)


def test_last_layer_weight_is_decoder_output_layer():
    unet = _model("unet-tiny", "identity")
    assert unet.last_layer_weight is unet.decoder.conv_out.weight
    vit = _model("vit-tiny", "identity")
    assert vit.last_layer_weight is vit.decoder.conv_out.weight
    assert vit.downsample_factor == 4 and _model("unet-small", "identity").downsample_factor == 8
    assert unet.last_layer_weight.requires_grad
