"""The built-in dataset: real photos bundled in installed wheels (no download; the ``eval`` / ``demo`` extras).

Eleven photos, read straight from the files the wheels ship (no ``skimage.data`` fetcher call, so no
download can ever be attempted):

==========================  =============  ==========  ==================================
name                        size (H x W)   package     split
==========================  =============  ==========  ==================================
astronaut                   512 x 512      skimage     train (portrait)
coffee                      400 x 600      skimage     train
rocket                      427 x 640      skimage     train
hubble_deep_field           872 x 1000     skimage     train
immunohistochemistry        512 x 512      skimage     train
retina                      1411 x 1411    skimage     train
stereo_motorcycle           500 x 741      skimage     train (left view only: the right view
                                                               is nearly the same picture)
flower                      427 x 640      sklearn     train
chelsea                     300 x 451      skimage     **eval** (animal, fur texture)
china                       427 x 640      sklearn     **eval** (outdoor scene, architecture)
grace_hopper                600 x 512      matplotlib  **eval** (portrait)
==========================  =============  ==========  ==================================

Whole photos are held out for evaluation (never a crop of a training photo), chosen to cover a face,
an animal and an outdoor scene. Training crops are drawn with probability proportional to photo area
(every pixel is equally likely), or, with ``max_photo_weight`` (the ``unet-demo-gq`` preset uses
``MAX_PHOTO_WEIGHT`` = 512 x 512), to the area capped at that many pixels: uncapped, the two largest photos,
the orange retina scan and the dark Hubble field, take 63 % of all crops and tint what a model learns;
capped, every training photo gets about the same share. A photo whose file is missing from an installed wheel is left out
with one warning naming it; a missing eval photo is an error.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from gaussquant.data.transforms import (
    center_crop,
    item_generator,
    pil_to_rgb8,
    resize_shorter_side,
    to_tensor,
)
from gaussquant.optional import MissingOptionalDependency

logger = logging.getLogger(__name__)

# name -> (python package, file inside that package)
PHOTO_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "stereo_motorcycle": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
EVAL_PHOTOS: tuple[str, ...] = ("chelsea", "china", "grace_hopper")
# import name -> the distribution that ships the photo files (optional: the ``eval`` / ``demo`` extras)
PHOTO_PACKAGES: dict[str, str] = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}
MAX_PHOTO_WEIGHT = 512 * 512  # the cap the demo's preset uses (data.max_photo_weight)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingOptionalDependency(
            f"the built-in photos are read from the {PHOTO_PACKAGES[package]} wheel, which is not installed; "
            'install it with: pip install "gaussquant[demo]" (or use your own images: --data DIR)'
        )
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def default_photos() -> list[tuple[str, np.ndarray]]:
    """All bundled photos as ``(name, uint8 (H, W, 3) array)``, in ``PHOTO_FILES`` order.

    The arrays are shared (cached): do not modify them in place.
    """
    photos, missing = [], []
    for name, (package, relative) in PHOTO_FILES.items():
        path = _package_dir(package) / relative
        if not path.is_file():
            missing.append(f"{name} ({package}/{relative})")
            continue
        with Image.open(path) as image:
            array = np.asarray(pil_to_rgb8(image))
        array.setflags(write=False)
        photos.append((name, array))
    if missing:
        logger.warning("%d default photo(s) not found in the installed wheels: %s", len(missing), ", ".join(missing))
    return photos


def _select(eval_photos: tuple[str, ...], split: str) -> list[tuple[str, np.ndarray]]:
    photos = default_photos()
    names = {name for name, _ in photos}
    unknown = [name for name in eval_photos if name not in PHOTO_FILES]
    if unknown:
        raise ValueError(f"unknown eval photo(s) {unknown}; choose from {sorted(PHOTO_FILES)}")
    absent = [name for name in eval_photos if name not in names]
    if absent:
        raise FileNotFoundError(f"eval photo(s) {absent} are missing from the installed wheels")
    chosen = [(n, a) for n, a in photos if (n in eval_photos) == (split == "eval")]
    if not chosen:
        raise ValueError(f"no photos left for split {split!r} with eval_photos={eval_photos}")
    return chosen


def _fit(array: np.ndarray, image_size: int) -> np.ndarray:
    """Upscale a photo whose shorter side is below ``image_size`` (crops must fit)."""
    if min(array.shape[:2]) >= image_size:
        return array
    return np.asarray(resize_shorter_side(Image.fromarray(array), image_size))


class DefaultPhotoCrops(Dataset):
    """Seeded random ``image_size`` crops of the bundled photos, as tensors ``(3, S, S)`` in [-1, 1].

    ``split="train"`` crops the training photos, ``split="eval"`` the held-out ones (a fixed set: the
    same ``num_crops`` crops for a given seed, with a seed stream distinct from train's). A photo is
    picked with probability proportional to its area, capped at ``max_photo_weight`` pixels when given.
    Crops are at
    the photos' native resolution; the crop list (photo, top, left, flip) is drawn once at construction
    from a local generator, so ``dataset[i]`` is a pure function of (seed, split, i).

    Args:
        split: ``"train"`` or ``"eval"``.
        image_size: crop side in pixels.
        num_crops: dataset length.
        seed: crop seed.
        flip: horizontal flips with probability 1/2 (train only; eval crops are never flipped).
        eval_photos: names of the held-out photos.
        max_photo_weight: cap (pixels) on the area that weighs a photo's share of crops; None = no cap.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        num_crops: int = 4096,
        seed: int = 0,
        *,
        flip: bool = True,
        eval_photos: tuple[str, ...] = EVAL_PHOTOS,
        max_photo_weight: int | None = None,
    ) -> None:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if num_crops < 1 or image_size < 1:
            raise ValueError(f"num_crops and image_size must be >= 1, got {num_crops}, {image_size}")
        self.split, self.image_size, self.num_crops = split, int(image_size), int(num_crops)
        selected = _select(tuple(eval_photos), split)
        self.names = [name for name, _ in selected]
        self.photos = [_fit(array, self.image_size) for _, array in selected]
        self.max_photo_weight = max_photo_weight
        self.crops = self._draw(int(seed), flip and split == "train")

    def _draw(self, seed: int, flip: bool) -> torch.Tensor:
        generator = item_generator(seed, 0 if self.split == "train" else 1)
        areas = torch.tensor(
            [float(min(p.shape[0] * p.shape[1], self.max_photo_weight or p.shape[0] * p.shape[1]))
             for p in self.photos], dtype=torch.float64
        )
        photo = torch.multinomial(areas / areas.sum(), self.num_crops, replacement=True, generator=generator)
        unit = torch.rand(self.num_crops, 3, generator=generator, dtype=torch.float64)
        heights = torch.tensor([p.shape[0] for p in self.photos])[photo]
        widths = torch.tensor([p.shape[1] for p in self.photos])[photo]
        top = (unit[:, 0] * (heights - self.image_size + 1)).long()
        left = (unit[:, 1] * (widths - self.image_size + 1)).long()
        flips = (unit[:, 2] < 0.5) & flip
        return torch.stack([photo, top, left, flips.long()], dim=1)

    def __len__(self) -> int:
        return self.num_crops

    def __getitem__(self, index: int) -> Tensor:
        """Crop ``index`` as a float tensor ``(3, image_size, image_size)`` in [-1, 1]."""
        photo, top, left, flip = (int(v) for v in self.crops[index])
        size = self.image_size
        crop = self.photos[photo][top : top + size, left : left + size]
        return to_tensor(crop[:, ::-1] if flip else crop)


def held_out_photos(
    image_size: int, eval_photos: tuple[str, ...] = EVAL_PHOTOS
) -> list[tuple[str, Tensor]]:
    """The whole held-out photos, shorter side resized to ``image_size`` and center-cropped square.

    Returns ``[(name, tensor (3, image_size, image_size) in [-1, 1])]`` in ``PHOTO_FILES`` order.
    """
    out = []
    for name, array in _select(tuple(eval_photos), "eval"):
        resized = np.asarray(resize_shorter_side(Image.fromarray(array), image_size))
        out.append((name, to_tensor(center_crop(resized, image_size))))
    return out


def whole_held_out_photos(
    max_side: int = 512, multiple: int = 1, eval_photos: tuple[str, ...] = EVAL_PHOTOS
) -> list[tuple[str, Tensor]]:
    """The whole held-out photos at (up to) full resolution: ``[(name, tensor (3, H, W) in [-1, 1])]``.

    A photo whose longer side exceeds ``max_side`` is shrunk (bicubic, aspect kept) so that it equals
    ``max_side``; none is enlarged. Then at most ``multiple - 1`` rows and columns are cut (centered) so
    that H and W are multiples of ``multiple`` (a model's downsampling factor). Order: ``PHOTO_FILES``.
    """
    if max_side < multiple or multiple < 1:
        raise ValueError(f"need max_side >= multiple >= 1; got max_side={max_side}, multiple={multiple}")
    out = []
    for name, array in _select(tuple(eval_photos), "eval"):
        height, width = array.shape[:2]
        if max(height, width) > max_side:
            scale = max_side / max(height, width)
            size = (max(multiple, round(width * scale)), max(multiple, round(height * scale)))
            array = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BICUBIC))
            height, width = array.shape[:2]
        top, left = (height % multiple) // 2, (width % multiple) // 2
        array = array[top: top + height - height % multiple, left: left + width - width % multiple]
        out.append((name, to_tensor(np.ascontiguousarray(array))))
    return out
