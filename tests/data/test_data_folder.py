"""ImageFolderDataset: formats, crops, corrupt files, empty folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from gaussquant.data.folder import ImageFolderDataset
from gaussquant.data.transforms import pil_to_rgb8


def _rgb(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(_rgb(0)).save(tmp_path / "x.PNG")
    Image.fromarray(_rgb(1)).save(tmp_path / "a" / "y.jpeg", quality=95)
    Image.fromarray(_rgb(2)[:, :, 0]).save(tmp_path / "a" / "b" / "grey.bmp")
    Image.fromarray(_rgb(3)).convert("P").save(tmp_path / "a" / "pal.png")
    Image.fromarray(_rgb(4)).convert("CMYK").save(tmp_path / "a" / "cmyk.JPG")
    Image.fromarray(_rgb(5)).save(tmp_path / "w.webp")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_recursive_listing_and_shapes(folder):
    ds = ImageFolderDataset(folder, image_size=32)
    assert ds.files == sorted(["x.PNG", "a/y.jpeg", "a/b/grey.bmp", "a/pal.png", "a/cmyk.JPG", "w.webp"])
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_center_crop_is_exact_at_native_size(tmp_path):
    array = _rgb(7, 40, 60)
    Image.fromarray(array).save(tmp_path / "img.png")
    x = ImageFolderDataset(tmp_path, image_size=40)[0]
    expected = torch.from_numpy(array[:, 10:50].copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(x, expected)


def test_mode_conversions():
    alpha = np.zeros((4, 4, 4), dtype=np.uint8)
    alpha[..., 0] = 200
    alpha[:2, :, 3] = 255  # top half opaque red-ish, bottom transparent -> white
    rgb = np.asarray(pil_to_rgb8(Image.fromarray(alpha, "RGBA")))
    assert (rgb[:2, :, 0] == 200).all() and (rgb[2:] == 255).all()
    deep = Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    assert (np.asarray(pil_to_rgb8(deep)) == 255).all()
    half = Image.fromarray(np.full((3, 3), 32896, dtype=np.uint16))  # 128 * 257
    assert (np.asarray(pil_to_rgb8(half)) == 128).all()


def test_random_crops_deterministic_per_seed_epoch_index(folder):
    ds = ImageFolderDataset(folder, image_size=24, mode="random", flip=True, seed=3)
    first = [ds[i] for i in range(len(ds))]
    assert all(torch.equal(a, ds[i]) for i, a in enumerate(first))
    ds.set_epoch(1)
    assert any(not torch.equal(a, ds[i]) for i, a in enumerate(first))
    other = ImageFolderDataset(folder, image_size=24, mode="random", flip=True, seed=3)
    other.set_epoch(1)
    assert all(torch.equal(ds[i], other[i]) for i in range(len(ds)))


def test_corrupt_files_skipped_with_one_warning(tmp_path, caplog):
    Image.fromarray(_rgb(0)).save(tmp_path / "good.png")
    (tmp_path / "garbage.jpg").write_bytes(b"\x00not an image at all")
    Image.fromarray(_rgb(1, 64, 64)).save(tmp_path / "trunc.png")
    data = (tmp_path / "trunc.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="gaussquant.data.folder"):
        ds = ImageFolderDataset(tmp_path, image_size=16, verify=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 corrupt" in warnings[0].getMessage() and "garbage.jpg" in warnings[0].getMessage()
    assert "trunc.png" in warnings[0].getMessage()
    assert ds.files == ["good.png"]
    with pytest.raises(ValueError, match="garbage.jpg"):
        ImageFolderDataset(tmp_path, image_size=16, strict=True)
    lazy = ImageFolderDataset(tmp_path, image_size=16, check_headers=False)  # found at load instead
    assert len(lazy) == 3 and torch.equal(lazy[0], lazy[1]) and "garbage.jpg" in lazy.skipped


def test_truncated_file_lazy_skip_and_strict(tmp_path):
    Image.fromarray(_rgb(0, 64, 64)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(1)).save(tmp_path / "b.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    ds = ImageFolderDataset(tmp_path, image_size=16)  # header is fine: found at load
    assert ds.files == ["a.png", "b.png"]
    assert torch.equal(ds[0], ds[1]) and "a.png" in ds.skipped
    strict = ImageFolderDataset(tmp_path, image_size=16, strict=True)
    with pytest.raises(ValueError, match="a.png"):
        strict[0]


def test_empty_and_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path.name)):
        ImageFolderDataset(tmp_path, image_size=8)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderDataset(tmp_path, image_size=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", image_size=8)
