"""gaussquant demo at a toy size: bundled model, three K, whole-photo token files, a 2-step live run, report."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from gaussquant.cli import main as cli_main
from gaussquant.data.transforms import to_uint8
from gaussquant.demo import generation
from gaussquant.demo.bundled import bundled_dir, load_bundled
from gaussquant.demo.report import format_summary
from gaussquant.demo.run import _WarningLog, codebook_sizes, run
from gaussquant.eval.metrics import psnr_uint8
from gaussquant.tiling import tiled_decode
from gaussquant.tokens import load_tokens


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # a toy generation step: few crops, 3 prior steps
        patch.setattr(generation, "TRAIN_CROPS", 64)
        patch.setattr(generation, "HELD_OUT_CROPS", 16)
        return run(tmp_path_factory.mktemp("demo") / "out", live_steps=2, max_side=64, threads=1, prior_steps=3)


def test_metrics_keep_psnr_and_continuous_psnr_at_top_level(demo):
    r = json.loads((demo.out / "metrics.json").read_text())
    assert isinstance(r["psnr"], float) and isinstance(r["continuous"]["psnr"], float)
    assert set(r["per_photo"]) == {"chelsea", "china", "grace_hopper"}
    assert r["codebook_size"] == 256 and r["num_groups"] == 2 and r["bits_per_token"] == 16
    assert r["bpp"] == pytest.approx(1.0)
    assert [p["codebook_size"] for p in r["rate_quality"]] == [128, 256, 512]
    assert [p["bpp"] for p in r["rate_quality"]] == sorted(p["bpp"] for p in r["rate_quality"])
    assert r["live"]["steps"] == 2 and r["psnr"] == pytest.approx(np.mean([p["psnr"] for p in r["per_photo"].values()]))


def test_gq_numbers_come_from_the_token_files(demo):
    model_dir = demo.model_dir
    from gaussquant.demo.bundled import load_model_dir

    gq, _ = load_model_dir(model_dir)
    assert gq.model_config.tile == 64  # the saved model recommends the demo's windows
    for photo in demo.photos:
        tokens = load_tokens(photo.token_file)
        assert tokens.num_images == 1 and tuple(tokens.image_size) == tuple(photo.original.shape[-2:])
        assert tokens.tiling == (64, 8)
        z = gq.bottleneck.dequantize(tokens.batch(0, 1))
        x_hat = tiled_decode(gq, z, 48, 8).clamp(-1, 1)
        assert float(psnr_uint8(photo.original[None], x_hat)) == pytest.approx(photo.gq[256].psnr, abs=1e-4)
    # `gaussquant decode` of a demo token file gives the demo's picture
    photo = demo.photos[0]
    out = demo.out / "decoded"
    assert cli_main(["decode", str(model_dir), str(photo.token_file), "--out", str(out), "--device", "cpu"]) == 0
    png = np.array(Image.open(out / f"{photo.name}.png")).astype(int)
    assert np.abs(png - to_uint8(photo.gq[256].image[None])[0].permute(1, 2, 0).numpy()).max() <= 1


def test_report_shows_photos_live_training_warnings_and_protocol(demo):
    text = demo.report.read_text()
    for name in ("photos.png", "rate_quality.png", "kl_histogram.png", "live_kl.png", "live_vs_bundled.png"):
        assert (demo.out / name).is_file() and name in text
    assert "## Live" in text and "## Warnings printed during the run" in text
    # the 2-step live model is far off its KL target: the terminal warning is also in the report
    assert any("live model" in w for w in demo.warnings)
    assert all(w.split(": ", 1)[-1][:40] in text for w in demo.warnings)
    protocol = text.split("## Protocol")[1]
    assert "None" not in protocol and "unet-tiny UNet Gaussian VAE" in protocol and "parameters" in protocol
    summary = format_summary(demo)
    assert "PSNR (dB), mean of the held-out photos" in summary and "live model (2 steps" in summary


def test_bundled_model_is_installed_small_and_on_target():
    path = bundled_dir()
    assert (path / "model.safetensors").stat().st_size < 4_000_000
    model, meta = load_bundled()
    assert next(model.parameters()).dtype == torch.float32 and meta["weights_dtype"] == "float16"
    assert meta["bottleneck"]["target_bits"] == 8.0 and codebook_sizes(8.0, 8.0) == (256, [128, 256, 512])


def test_generation_step_trains_a_prior_samples_it_and_reports_its_nll(demo):
    from gaussquant.demo.bundled import load_model_dir
    from gaussquant.prior.generate import sample_tokens
    from gaussquant.prior.store import load_prior

    r = json.loads((demo.out / "metrics.json").read_text())
    p = r["prior"]
    assert p["steps"] == 3 and p["train_crops"] == 64 and p["held_out_crops"] == 16 and p["crop_size"] == 32
    assert p["rate_bits_per_token"] == 16 and p["token_grid"] == [8, 8]
    # three steps from a uniform start: the held-out NLL is still close to the rate, and nowhere near 0
    assert 0.5 * 16 < p["held_out_bits_per_token"] < 1.5 * 16
    assert p["fraction_of_rate"] == pytest.approx(p["held_out_bits_per_token"] / 16)
    assert 0 < p["unigram_bits_per_token"] <= 16 + 1e-6
    # the report's samples are the prior's draws at the fixed seed, decoded with the demo's GQ model
    prior = load_prior(demo.out / p["run"])
    gq, _ = load_model_dir(demo.model_dir)
    indices, _ = sample_tokens(prior, p["num_samples"], seed=0)
    assert demo.prior.samples.shape == (p["num_samples"], 3, 32, 32)
    assert torch.allclose(gq.detokenize(indices).clamp(-1, 1), demo.prior.samples, atol=1e-5)
    text = demo.report.read_text()
    assert "## Generated samples" in text and "samples.png" in text and (demo.out / "samples.png").is_file()
    assert "not objects: expect texture patches" in text and f"{p['held_out_bits_per_token']:.2f} bits per token" in text
    assert "tiny prior (3 steps" in format_summary(demo)
    assert r["timings"]["prior_s"] > 0


def test_warning_log_collects_log_and_python_warnings():
    handler = _WarningLog()
    logger = logging.getLogger("gaussquant.test_demo")
    logger.addHandler(handler)
    try:
        logger.warning("off target by %d bits", 3)
        logger.info("not collected")
    finally:
        logger.removeHandler(handler)
    assert handler.messages == ["WARNING gaussquant.test_demo: off target by 3 bits"]


def test_demo_cli_rejects_bad_arguments(tmp_path, capsys):
    assert cli_main(["demo", "--out", str(tmp_path / "d"), "--live-steps", "0"]) == 1
    assert "--live-steps must be >= 1" in capsys.readouterr().err
    assert cli_main(["demo", "--out", str(tmp_path / "d"), "--budget-minutes", "0"]) == 1
