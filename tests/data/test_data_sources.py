"""Default photos, Fashion-MNIST IDX reader, DataConfig / build_dataset."""

from __future__ import annotations

import gzip
import socket
import struct

import numpy as np
import pytest
import torch

from gaussquant.data.config import DataConfig, build_dataset
from gaussquant.data.default_photos import (
    EVAL_PHOTOS,
    DefaultPhotoCrops,
    default_photos,
    held_out_photos,
)
from gaussquant.data.fashion_mnist import FashionMNIST


def test_default_photos_offline(monkeypatch):
    default_photos.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    photos = default_photos()
    names = [name for name, _ in photos]
    assert len(photos) >= 10 and set(EVAL_PHOTOS) <= set(names)
    for _, array in photos:
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3


def test_crops_split_disjoint_and_deterministic():
    train = DefaultPhotoCrops("train", image_size=32, num_crops=64, seed=1)
    again = DefaultPhotoCrops("train", image_size=32, num_crops=64, seed=1)
    other = DefaultPhotoCrops("train", image_size=32, num_crops=64, seed=2)
    evaluation = DefaultPhotoCrops("eval", image_size=32, num_crops=16, seed=1)
    assert not set(train.names) & set(evaluation.names)
    assert set(evaluation.names) == set(EVAL_PHOTOS)
    assert torch.equal(train.crops, again.crops) and not torch.equal(train.crops, other.crops)
    x = torch.stack([train[i] for i in range(8)])
    assert x.shape == (8, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert not bool(evaluation.crops[:, 3].any())  # eval crops never flipped
    full = held_out_photos(48)
    assert [name for name, _ in full] == [n for n in evaluation.names] and full[0][1].shape == (3, 48, 48)


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
    ds = FashionMNIST(tmp_path, "test", image_size=28)
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 2, 3, 4]
    x = ds[2]
    assert x.shape == (3, 28, 28)
    assert torch.equal(x[0], torch.from_numpy(images[2]).float() / 127.5 - 1) and torch.equal(x[0], x[2])
    assert FashionMNIST(tmp_path, "test", image_size=32)[0].shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(tmp_path, "train")


def test_build_dataset_sources(tmp_path):
    train, evaluation = build_dataset(DataConfig(image_size=16, num_crops=10, eval_crops=4))
    assert len(train) == 10 and len(evaluation) == 4 and train[0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="path"):
        DataConfig(source="folder")
    with pytest.raises(ValueError, match="source"):
        DataConfig(source="cifar")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        build_dataset(DataConfig(source="fashion-mnist", path=str(tmp_path)))
