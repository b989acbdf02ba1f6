"""gaussquant demo, end to end at a toy size: train (2 steps), convert, tokenize, evaluate, report."""

import math

import numpy as np

from gaussquant.cli import main as cli_main
from gaussquant.demo import format_summary, run
from gaussquant.tokens import load_tokens


def test_demo_end_to_end(tmp_path):
    result = run(tmp_path / "demo", steps=2, device="cpu", photo_size=32, eval_crops=4)
    r = result.results
    assert result.steps == 2 and result.report.is_file()
    for name in ("photos.png", "reconstructions.png", "kl_histogram.png", "codebook_usage.png", "metrics.json"):
        assert (tmp_path / "demo" / name).is_file(), name
    assert (result.model_dir / "config.json").is_file()
    # rate bookkeeping: unet-tiny f = 4 at 32 px -> 8x8 tokens, 2 groups of 8 bits -> 1 bpp
    assert r["codebook_size"] == 256 and r["num_groups"] == 2
    assert r["bits_per_token"] == 16 and math.isclose(r["bpp"], 64 * 16 / 32**2)
    assert r["num_images"] == 4 and "continuous" in r
    tokens = load_tokens(result.tokens)
    assert tokens.num_images == 3 and int(np.asarray(tokens.batch(0, 3)).max()) < 256
    assert set(result.photo_psnr) == {"chelsea", "china", "grace_hopper"}
    text = result.report.read_text()
    assert text.startswith("# gaussquant demo") and "photos.png" in text and "bpp" in text
    table = format_summary(result)
    assert "PSNR (dB)" in table and "quantized (GQ)" in table


def test_demo_cli_rejects_bad_steps(tmp_path, capsys):
    assert cli_main(["demo", "--out", str(tmp_path / "d"), "--steps", "0"]) == 1
    assert "--steps must be >= 1" in capsys.readouterr().err
