"""Windowed encode/decode (gaussquant/tiling.py): exact on a spatially local model, the whole image's token
grid, much better than one pass for the bundled model on a held-out photo, recorded in token files and used
by `gaussquant decode`, clear errors for sizes that do not fit the model."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gaussquant.cli import main as cli_main
from gaussquant.convert import to_gaussian_quant
from gaussquant.data.transforms import to_uint8
from gaussquant.demo.bundled import load_bundled
from gaussquant.eval.metrics import psnr_uint8
from gaussquant.models.autoencoder import Autoencoder
from gaussquant.models.presets import ModelConfig
from gaussquant.quantizers.build import VQConfig, build_bottleneck
from gaussquant.tiling import (
    AUTO,
    Tiling,
    _spans,
    _tiled,
    make_tiling,
    recommended_tiling,
    resolve_tiling,
    tiled_detokenize,
    tiled_encoder,
    tiled_tokenize,
)
from gaussquant.tokens import TokenWriter, load_tokens


class _PixelEncoder(nn.Module):
    """f x f pixels -> one latent vector by a linear map: no normalisation, no reach across tokens."""

    downsample_factor, in_channels = 4, 3

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.net = nn.Sequential(nn.PixelUnshuffle(4), nn.Conv2d(48, out_channels, 1))

    def forward(self, x):
        return self.net(x)


class _PixelDecoder(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.net = nn.Sequential(nn.Conv2d(in_channels, 48, 1), nn.Tanh(), nn.PixelShuffle(4))

    def forward(self, z):
        return self.net(z)


@pytest.fixture(scope="module")
def local_model():
    torch.manual_seed(0)  # weights of a test model
    bottleneck = build_bottleneck(VQConfig(latent_channels=8, codebook_size=64, codebook_dim=4, seed=0))
    return Autoencoder(_PixelEncoder(8), bottleneck, _PixelDecoder(8)).eval()


@pytest.fixture(scope="module")
def bundled_gq():
    model, _ = load_bundled()
    return model, to_gaussian_quant(model, 256)


def test_spans_cover_every_position_once():
    for length, core, margin in [(100, 48, 8), (48, 48, 8), (20, 48, 8), (64, 16, 4)]:
        spans = _spans(length, core, margin)
        covered = [i for _, _, a, b in spans for i in range(a, b)]
        assert covered == list(range(length))
        assert all(0 <= w0 <= a and b <= w1 <= length for w0, w1, a, b in spans)


@pytest.mark.parametrize("scale", [1.0, 4.0, 0.25])
def test_cross_fade_weights_sum_to_one(scale):
    # a position-wise fn (identity, or nearest resampling by the scale) is reproduced exactly by the blend
    # iff the weights of every output position sum to 1
    x = torch.randn(2, 3, 40, 56)

    def fn(t):
        if scale == 1.0:
            return t
        if scale > 1:
            return t.repeat_interleave(int(scale), -2).repeat_interleave(int(scale), -1)
        return t[..., ::4, ::4]

    y = _tiled(fn, x, 16, 4, scale)
    assert torch.allclose(y, fn(x), atol=1e-5)


def test_tiled_equals_untiled_on_a_model_without_spatial_normalisation(local_model):
    x = torch.rand(2, 3, 128, 192) * 2 - 1  # a multiple of the window
    tiling = Tiling(64, 8)
    indices = tiled_tokenize(local_model, x, tiling)
    assert torch.equal(indices, local_model.tokenize(x))
    assert torch.allclose(tiled_detokenize(local_model, indices, tiling), local_model.detokenize(indices), atol=1e-5)


def test_token_grid_is_the_whole_images_and_one_window_is_the_plain_model(bundled_gq):
    model, gq = bundled_gq
    x = torch.rand(1, 3, 100, 120) * 2 - 1
    indices = tiled_tokenize(gq, x, Tiling(64, 8))
    assert indices.shape == gq.tokenize(x).shape == (1, 2, 25, 30)
    assert tiled_detokenize(gq, indices, Tiling(32, 4)).shape == (1, 3, 100, 120)
    small = x[..., :48, :64]
    assert torch.equal(tiled_tokenize(gq, small, Tiling(64, 8)), gq.tokenize(small))
    assert torch.allclose(tiled_encoder(model, small, 48, 8), model.encoder(small), atol=1e-6)


def test_windows_beat_one_pass_on_a_held_out_photo(bundled_gq):
    from gaussquant.data.default_photos import whole_held_out_photos

    _, gq = bundled_gq
    name, x = whole_held_out_photos(256, 4, eval_photos=("grace_hopper",))[0]
    x = x[None]
    tiling = Tiling(64, 8)
    windowed = tiled_detokenize(gq, tiled_tokenize(gq, x, tiling), tiling).clamp(-1, 1)
    one_pass = gq.detokenize(gq.tokenize(x)).clamp(-1, 1)
    psnr_windowed, psnr_one_pass = float(psnr_uint8(x, windowed)), float(psnr_uint8(x, one_pass))
    assert psnr_windowed > psnr_one_pass + 3.0, (name, psnr_windowed, psnr_one_pass)


def test_sizes_that_do_not_fit_the_model_are_clear_errors(bundled_gq):
    _, gq = bundled_gq
    with pytest.raises(ValueError, match="multiples of the model's downsampling factor 4"):
        make_tiling(30, None, 4)
    with pytest.raises(ValueError, match="multiples of the model's downsampling factor 4"):
        make_tiling(64, 6, 4)
    with pytest.raises(ValueError, match="leave no core"):
        make_tiling(64, 32, 4)
    with pytest.raises(ValueError, match="needs --tile"):
        make_tiling(None, 8, 4)
    assert make_tiling(64, None, 4) == Tiling(64, 8) and make_tiling(0, None, 4) is None
    with pytest.raises(ValueError, match="multiples of the model's downsampling factor"):
        tiled_tokenize(gq, torch.zeros(1, 3, 64, 64), Tiling(62, 8))
    with pytest.raises(ValueError, match="positive multiple of the downsampling factor 4"):
        ModelConfig(arch="unet-tiny", image_size=48, tile=30)
    with pytest.raises(ValueError, match="UNet"):
        ModelConfig(arch="vit-tiny", image_size=32, tile=64)


def test_resolution_order_explicit_then_file_then_model(bundled_gq):
    model, gq = bundled_gq
    assert recommended_tiling(gq) is None or recommended_tiling(gq).window % 4 == 0
    tiled = dataclasses.replace(gq.model_config, tile=64)
    gq64 = to_gaussian_quant(model, 256)
    gq64.model_config = tiled
    assert recommended_tiling(gq64) == Tiling(64, 8) and resolve_tiling(gq64, AUTO) == Tiling(64, 8)
    assert resolve_tiling(gq64, AUTO, (32, 4)) == Tiling(32, 4)
    assert resolve_tiling(gq64, AUTO, (0, 0)) is None
    assert resolve_tiling(gq64, None, (32, 4)) is None
    assert resolve_tiling(gq64, Tiling(96, 16), (32, 4)) == Tiling(96, 16)


def test_token_files_record_tiling(tmp_path):
    idx = torch.randint(0, 5, (1, 2, 3, 4))
    for tiling in [(64, 8), (0, 0), None]:
        path = tmp_path / f"t{tiling}.npz"
        with TokenWriter(path, num_images=1, codebook_size=5, image_size=(12, 16), model_fingerprint="f",
                         tiling=tiling) as writer:
            writer.write(idx, ["a"])
            writer.close()
        assert load_tokens(path).tiling == tiling


def test_cli_encode_records_the_models_tile_and_decode_uses_it(tmp_path, bundled_gq, capsys):
    model, _ = bundled_gq
    gq = to_gaussian_quant(model, 256)
    gq.model_config = dataclasses.replace(gq.model_config, tile=64)
    model_dir = gq.save_pretrained(tmp_path / "model", model_card=False)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # smooth random images, larger than one window
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((96, 96), Image.Resampling.BICUBIC).save(images / f"img{i}.png")
    base = ["--image-size", "96", "--device", "cpu"]
    assert cli_main(["encode", str(model_dir), str(images), "--out", str(tmp_path / "t.npz"), *base]) == 0
    tokens = load_tokens(tmp_path / "t.npz")
    assert tokens.tiling == (64, 8) and tokens.grid == (24, 24)
    x = torch.stack([torch.from_numpy(np.array(Image.open(images / f"img{i}.png"))).permute(2, 0, 1)
                     for i in range(2)]).float() / 127.5 - 1
    assert torch.equal(tokens.batch(0, 2), tiled_tokenize(gq, x, Tiling(64, 8)))
    assert cli_main(["encode", str(model_dir), str(images), "--out", str(tmp_path / "one.npz"), *base,
                     "--tile", "none"]) == 0
    assert load_tokens(tmp_path / "one.npz").tiling == (0, 0)
    assert cli_main(["decode", str(model_dir), str(tmp_path / "t.npz"), "--out", str(tmp_path / "rec"),
                     "--device", "cpu"]) == 0
    assert cli_main(["decode", str(model_dir), str(tmp_path / "t.npz"), "--out", str(tmp_path / "flat"),
                     "--device", "cpu", "--tile", "none"]) == 0
    expected = tiled_detokenize(gq, tokens.batch(0, 1), Tiling(64, 8))
    expected = to_uint8(expected)[0].permute(1, 2, 0).numpy()
    decoded = np.asarray(Image.open(tmp_path / "rec" / "img0.png"))
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(decoded, np.asarray(Image.open(tmp_path / "flat" / "img0.png")))
    capsys.readouterr()
    assert cli_main(["encode", str(model_dir), str(images), "--out", str(tmp_path / "bad.npz"), *base,
                     "--tile", "30"]) == 1
    assert "multiples of the model's downsampling factor 4" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()
