"""Silent wrong results made loud: NaN weights, non-finite decodes, [0, 255] / [0, 1] input, --image-size 0."""

import logging

import pytest
import torch

from gaussquant.decode import decode_tokens
from gaussquant.encode import encode_folder
from gaussquant.models import autoencoder
from test_tokens_roundtrip import SIZE, image_dir, tiny_vq  # noqa: F401 (fixture)


def test_decode_with_nan_decoder_weights_is_an_error_and_writes_nothing(image_dir, tmp_path):  # noqa: F811
    model = tiny_vq(0)
    path = encode_folder(model, image_dir, tmp_path / "t.npz", image_size=SIZE)
    with torch.no_grad():
        model.decoder.last_layer_weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="weights hold NaN or infinite values .*decoder"):
        decode_tokens(model, path, tmp_path / "png")
    assert not (tmp_path / "png").exists()
    with pytest.raises(ValueError, match="weights hold NaN"):
        encode_folder(model, image_dir, tmp_path / "t2.npz", image_size=SIZE)
    assert not list(tmp_path.glob("t2.npz*"))


def test_a_decode_that_overflows_is_not_written_as_black_images(image_dir, tmp_path):  # noqa: F811
    model = tiny_vq(0)
    with torch.no_grad():
        model.decoder.last_layer_weight.fill_(3e38)  # finite weights, infinite or NaN pixels
    path = encode_folder(model, image_dir, tmp_path / "t.npz", image_size=SIZE)
    with pytest.raises(ValueError, match="NaN or infinite pixels; 0 images were written"):
        decode_tokens(model, path, tmp_path / "png")
    assert not list(tmp_path.rglob("*.png"))


def test_tokenize_refuses_0_255_and_warns_on_0_1(caplog, monkeypatch):
    model = tiny_vq(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1
    with pytest.raises(ValueError, match=r"\[0, 255\] pixels\? use x / 127.5 - 1"):
        model.tokenize((x + 1) * 127.5)
    monkeypatch.setattr(autoencoder, "_warned_unit_range", False)
    caplog.set_level(logging.WARNING)
    model.tokenize(x)
    assert "[0, 1]" not in caplog.text
    model.tokenize((x + 1) / 2)
    assert "map them with x * 2 - 1" in caplog.text


def test_image_size_zero_is_an_error(image_dir, tmp_path, capsys):  # noqa: F811
    from gaussquant.cli import main
    from gaussquant.models.presets import ModelConfig
    from gaussquant.pretrained import save_pretrained
    from gaussquant.quantizers.build import VQConfig

    save_pretrained(tiny_vq(0), tmp_path / "m", model_config=ModelConfig(arch="unet-tiny", image_size=SIZE),
                    bottleneck_config=VQConfig(latent_channels=8, codebook_size=300, codebook_dim=4, seed=0))
    argv = ["encode", str(tmp_path / "m"), str(image_dir), "--out", str(tmp_path / "t.npz"), "--device", "cpu"]
    assert main(argv + ["--image-size", "0"]) == 1
    assert "--image-size must be a positive number" in capsys.readouterr().err
    assert not list(tmp_path.glob("t.npz*"))
    with pytest.raises(ValueError, match="positive"):
        encode_folder(tiny_vq(0), image_dir, tmp_path / "t.npz", image_size=0)
