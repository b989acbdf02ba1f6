"""`bench generation --fd` and `--dataset fashion-mnist`: FD/KID of samples against held-out images, on the
project's own Fréchet and kernel distances, and the Fashion-MNIST track end to end on tiny IDX files."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from torch import nn

from gaussquant.bench import generation_fd
from gaussquant.bench.generation import GenerationConfig, format_table, run
from gaussquant.eval.fid import frechet_distance
from gaussquant.eval.kid import kernel_distance


class PooledPixels(nn.Module):
    """A cheap deterministic extractor: 2 x 2 average-pooled RGB, 12-d (stands in for EfficientNet)."""

    dim = 12

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def _features(n, shift, seed):
    return torch.randn(n, 12, generator=torch.Generator().manual_seed(seed)) + shift


def test_fd_and_kid_are_the_project_distances_on_the_given_features():
    real, fake = _features(200, 0.0, 0), _features(200, 1.0, 1)
    got = generation_fd.fd_and_kid(PooledPixels(), real, fake)
    r, f = real.double().numpy(), fake.double().numpy()
    want = frechet_distance(r.mean(0), np.cov(r, rowvar=False), f.mean(0), np.cov(f, rowvar=False))
    assert got["fd"] == pytest.approx(want, rel=1e-6) and got["fd"] > 10.0  # a mean shift of 1 in 12 dims: |dmu|^2 = 12
    assert (got["kid"], got["kid_std"], got["kid_subset_size"]) == pytest.approx(kernel_distance(real, fake))
    assert got["fd_images"] == 200 and got["fd_warning"] is None
    assert abs(generation_fd.fd_and_kid(PooledPixels(), real, real.clone())["fd"]) < 1e-9
    same = generation_fd.fd_and_kid(PooledPixels(), real, _features(200, 0.0, 2))  # same law, other draw
    assert same["fd"] < 0.5 * got["fd"] and abs(same["kid"]) < 0.1 * got["kid"]
    few = generation_fd.fd_and_kid(PooledPixels(), real[:6], fake[:6])  # 6 images in 12 dimensions: biased
    assert few["fd_images"] == 6 and "biased" in few["fd_warning"]
    with pytest.raises(ValueError, match="equal numbers"):
        generation_fd.fd_and_kid(PooledPixels(), real, fake[:100])


def test_table_states_fd_kid_and_the_image_count():
    row = dict(method="gq", codebook_size=256, num_groups=1, rate=8.0, test_bits_per_token=6.5,
               fraction_of_rate=0.8125, unigram_bits_per_token=7.0, train_bits_per_token=6.0, fd=12.345,
               kid=0.0123, kid_std=0.0004, kid_subset_size=500, fd_images=1000)
    reference = dict(fd=1.5, kid=0.0001, kid_std=0.0, kid_subset_size=1000, fd_images=1000)
    table = format_table([row], reference)
    assert "FD effnet-lite0 | KID x 1e3 (std) | images per side |" in table
    assert "| 6.000 | 12.35 | 12.30 (0.40) | 1000 |\n" in table  # std over subsets of 500 of the 1000
    assert table.endswith("| training images (no model) | - | - | - | - | - | - | 1.50 | 0.10 | 1000 |")
    assert "FD" not in format_table([{k: v for k, v in row.items() if k not in ("fd", "kid")}])


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fashion(root, n_train=12, n_test=6):
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_fashion_mnist_track_end_to_end_with_fd(tmp_path, monkeypatch):
    monkeypatch.setattr(generation_fd, "build_extractor", lambda device="cpu": PooledPixels())
    data = _fashion(tmp_path / "fm")
    cfg = GenerationConfig(methods=("fsq",), rate=8, steps=2, image_size=16, dataset="fashion-mnist",
                           data=str(data), train_images=8, fd=True, fd_samples=4, prior_steps=2,
                           prior_batch_size=4, out=str(tmp_path / "out"))
    summary = run(cfg, progress=False)
    (row,) = summary["rows"]
    # training tokens: the first 8 of the 12 train-split images; held-out: the whole 6-image test split
    assert (row["train_images"], row["test_images"], row["fd_images"]) == (8, 6, 4)
    assert "Fashion-MNIST test split (6 images" in row["eval_data"]
    assert np.isfinite(row["fd"]) and row["fd"] > 0 and np.isfinite(row["kid"])
    assert summary["fd_reference"]["fd_images"] == 4  # the first 4 training images against the 4 held-out
    assert "| 4 |" in (tmp_path / "out" / "table.md").read_text()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["dataset"] == "fashion-mnist" and saved["rows"][0]["fd_images"] == 4
    assert (tmp_path / "out" / "runs" / "fashion-mnist" / "unet").is_dir()  # bench quality's folder per dataset


def test_fashion_mnist_missing_files_stop_before_any_training(tmp_path):
    cfg = GenerationConfig(methods=("fsq",), steps=2, dataset="fashion-mnist", data=str(tmp_path / "none"),
                           out=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        run(cfg, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="--train-images"):
        GenerationConfig(train_images=1)
