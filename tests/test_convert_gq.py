"""Conversion of a tiny trained TDC VAE: quality when log2 K matches the KL, failure when K is far too small,
save/load through `gaussquant convert`, the GQ evaluation keys and every conversion error."""

import json

import pytest
import torch

pytest.importorskip("gaussquant.quantizers.gaussian_quant", reason="the GQ quantizer (Core) has not landed")

from gaussquant.cli import main as cli_main
from gaussquant.convert import convertibility_report, run, to_gaussian_quant
from gaussquant.data.default_photos import DefaultPhotoCrops
from gaussquant.eval.evaluate import evaluate
from gaussquant.eval.metrics import psnr_uint8
from gaussquant.models.autoencoder import Autoencoder

TARGET_BITS = 4.0  # per group (d = 4, G = 1): K = 16 matches
# Stated margins. With log2 K matching the KL, the log-ratio search picks roughly an importance sample of the
# posterior, so the quantized PSNR sits near that of decoding a posterior sample (what the decoder was trained
# on) and within MARGIN_DB of the posterior mean; measured here: mean 18.9, sample 15.8, K=16 16.8, K=2 11.0 dB.
MARGIN_DB = 3.0
SAMPLE_MARGIN_DB = 0.5
WORSE_DB = 3.0
FAST = {"lpips": False, "rfid": False, "fd_effnet": False}


class PatchEncoder(torch.nn.Conv2d):
    """A 4x4 stride-4 linear patch encoder (3 -> 2C channels): a VAE small enough to train in seconds."""

    downsample_factor, in_channels = 4, 3

    def __init__(self, latent: int) -> None:
        super().__init__(3, 2 * latent, 4, stride=4)
        self.out_channels = 2 * latent


class PatchDecoder(torch.nn.ConvTranspose2d):
    def __init__(self, latent: int) -> None:
        super().__init__(latent, 3, 4, stride=4)
        self.in_channels = latent


@pytest.fixture(scope="module")
def vae():
    """A linear-patch Gaussian VAE trained ~300 steps with TDC at 4 bits per group (d = 4, G = 1)."""
    from gaussquant.models.autoencoder import Autoencoder
    from gaussquant.quantizers.build import GaussianConfig, build_bottleneck

    torch.manual_seed(0)  # tests only
    bottleneck = build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=TARGET_BITS))
    model = Autoencoder(PatchEncoder(4), bottleneck, PatchDecoder(4))
    data = DefaultPhotoCrops("train", image_size=16, num_crops=512, seed=0)
    x_all = torch.stack([data[i] for i in range(len(data))])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = x_all[torch.randint(0, len(x_all), (32,), generator=gen)]
        out = model(x)
        loss = (out.x_hat - x).abs().sum((1, 2, 3)).mean() + 0.1 * out.bottleneck.losses["rate"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.bottleneck.update_rate_controller(out.bottleneck.kl_bits.detach())
    return model.eval()


def eval_crops():
    return DefaultPhotoCrops("eval", image_size=16, num_crops=32, seed=0, flip=False)


def test_matched_codebook_is_close_to_continuous_and_tiny_codebook_is_worse(vae):
    report = convertibility_report(vae, eval_crops(), codebook_size=16)
    assert 3.0 <= report.kl_bits_mean <= 5.5, report.to_text()  # TDC held the group KL near 4 bits
    matched = to_gaussian_quant(vae, 16)
    tiny = to_gaussian_quant(vae, 2)
    res_matched = evaluate(matched, eval_crops(), batch_size=16, metric_options=FAST)
    res_tiny = evaluate(tiny, eval_crops(), batch_size=16, metric_options=FAST)
    continuous = res_matched["continuous"]["psnr"]
    assert res_tiny["continuous"]["psnr"] == pytest.approx(continuous, abs=1e-9)  # same posterior mean
    x = torch.stack([eval_crops()[i] for i in range(32)])
    with torch.no_grad():
        sample = vae.decode(vae.encode(x).posterior.sample(torch.Generator().manual_seed(0)))
    sample_psnr = psnr_uint8(x, sample).double().mean().item()
    assert res_matched["psnr"] >= continuous - MARGIN_DB, (res_matched["psnr"], continuous)
    assert res_matched["psnr"] >= sample_psnr - SAMPLE_MARGIN_DB, (res_matched["psnr"], sample_psnr)
    assert res_tiny["psnr"] <= res_matched["psnr"] - WORSE_DB, (res_tiny["psnr"], res_matched["psnr"])
    # the prediction agrees: a far-too-small K is flagged and predicted to err more often
    small = convertibility_report(vae, eval_crops(), codebook_size=2)
    assert small.warning is not None and small.large_error_probability > report.large_error_probability
    # GQ evaluation keys: the continuous metrics and the KL summary
    assert {"psnr", "ssim", "num_images"} <= set(res_matched["continuous"])
    assert res_matched["kl_bits"]["mean"] == pytest.approx(report.kl_bits_mean, rel=1e-6)


def test_to_gaussian_quant_keeps_source_and_accepts_any_k(vae):
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    gq = to_gaussian_quant(vae, 300, rule="nearest", seed=3)
    assert gq.bottleneck.is_discrete and gq.bottleneck.codebook_size == 300 and gq.bottleneck.num_groups == 1
    x = torch.stack([eval_crops()[i] for i in range(4)])
    with torch.no_grad():
        idx = gq.tokenize(x)
        assert int(idx.max()) < 300 and idx.shape == (4, 1, 4, 4)
        assert torch.equal(gq.detokenize(idx), gq(x).x_hat)  # discrete mode == forward in eval mode
        assert torch.equal(gq.decode_posterior_mean(x), vae.decode(vae.encode(x).posterior.mean))
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    with pytest.raises(ValueError, match=">= 2"):
        to_gaussian_quant(vae, 1)
    with pytest.raises(ValueError):
        to_gaussian_quant(vae, 16, codebook_dim=3)  # does not divide 4 latent channels
    with pytest.raises(TypeError, match="Gaussian"):
        to_gaussian_quant(gq_like_vq(), 16)


def gq_like_vq():
    from gaussquant.models.presets import ModelConfig, build_autoencoder
    from gaussquant.quantizers.build import VQConfig, build_bottleneck

    return build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16),
                             build_bottleneck(VQConfig(latent_channels=4, codebook_size=8)))


def test_convert_command_saves_a_loadable_model(tmp_path, capsys):
    from gaussquant.models.presets import ModelConfig, build_autoencoder
    from gaussquant.quantizers.build import GaussianConfig, build_bottleneck

    torch.manual_seed(0)
    cfg = GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=TARGET_BITS)
    vae = build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16), build_bottleneck(cfg)).eval()
    run_dir = vae.save_pretrained(tmp_path / "vae")
    out = tmp_path / "gq"
    assert cli_main(["convert", str(run_dir), "--codebook-size", "16", "--num-images", "8",
                     "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "log2 K = 4.000" in printed and "histogram" in printed and "predicted" in printed
    loaded = Autoencoder.from_pretrained(out)
    assert loaded.config.bottleneck.kind == "gq" and loaded.config.bottleneck.codebook_size == 16
    assert loaded.metadata["conversion"]["convertibility"]["num_images"] == 8
    x = torch.stack([eval_crops()[i] for i in range(4)])
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(x), to_gaussian_quant(vae, 16).tokenize(x))
    with pytest.raises(FileExistsError, match="overwrite"):
        run(run_dir, out, codebook_size=16, num_images=4)
    _, report = run(run_dir, out, codebook_size=2, num_images=4, overwrite=True, device="cpu")
    assert report.warning is not None and f"codebook_size {report.suggested_codebook_size}" in report.warning
    json.dumps(report.to_dict())  # JSON-safe
