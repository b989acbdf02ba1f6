"""The data config and the one builder that turns it into train and eval datasets.

Sources:

- ``"default"``: :class:`DefaultPhotoCrops` train crops (``num_crops``) and eval crops of the held-out
  photos (``eval_crops``).
- ``"folder"``: :class:`ImageFolderDataset`. ``path`` is either one folder (then the train set uses
  it with random crops and the eval set the same files with center crops), or a folder holding
  ``train/`` and ``val/`` (ImageNet layout), used for the two splits.
- ``"fashion-mnist"``: the IDX files under ``path`` (default: the Debian package's folder), train/test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from gaussquant.data.default_photos import EVAL_PHOTOS, DefaultPhotoCrops
from gaussquant.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
from gaussquant.data.folder import ImageFolderDataset

SOURCES = ("default", "folder", "fashion-mnist")


@dataclass
class DataConfig:
    """Where images come from and how they are cropped.

    Attributes:
        source: ``"default"`` (bundled photos), ``"folder"`` or ``"fashion-mnist"``.
        path: the folder for ``"folder"`` (required) or ``"fashion-mnist"`` (optional).
        image_size: side of the square training/eval images in pixels.
        num_crops: training crops of the default photos.
        eval_crops: evaluation crops of the held-out default photos.
        random_crop: random crops for training folders (else center crops).
        flip: random horizontal flips for training.
        seed: seeds crops (and, in the trainer, the sampler).
        strict: a corrupt image file is an error instead of being skipped.
        num_workers: DataLoader worker processes.
        eval_photos: held-out default photos.
        max_photo_weight: default photos: cap (pixels) on the area that weighs a photo's share of training
            crops (None = proportional to area; ``unet-demo-gq`` uses 262144 = 512 x 512).
    """

    source: str = "default"
    path: str | None = None
    image_size: int = 64
    num_crops: int = 4096
    eval_crops: int = 256
    random_crop: bool = True
    flip: bool = True
    seed: int = 0
    strict: bool = False
    num_workers: int = 0
    eval_photos: tuple[str, ...] = EVAL_PHOTOS
    max_photo_weight: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "folder" and not self.path:
            raise ValueError("data source 'folder' needs path= the image folder (e.g. --data DIR)")
        if self.image_size < 1 or self.num_crops < 1 or self.eval_crops < 1 or self.num_workers < 0:
            raise ValueError(f"invalid sizes in {self}")
        self.eval_photos = tuple(self.eval_photos)


def _folder_datasets(config: DataConfig) -> tuple[Dataset, Dataset]:
    root = Path(config.path or "")
    train_root, eval_root = root, root
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_root, eval_root = root / "train", root / "val"
    train = ImageFolderDataset(
        train_root,
        image_size=config.image_size,
        mode="random" if config.random_crop else "center",
        flip=config.flip,
        strict=config.strict,
        seed=config.seed,
    )
    evaluation = ImageFolderDataset(
        eval_root, image_size=config.image_size, mode="center", strict=config.strict, verify=True
    )
    return train, evaluation


def build_dataset(config: DataConfig) -> tuple[Dataset, Dataset]:
    """``(train, eval)`` datasets of float tensors ``(3, image_size, image_size)`` in [-1, 1]."""
    if config.source == "default":
        common = dict(image_size=config.image_size, seed=config.seed, eval_photos=config.eval_photos)
        train = DefaultPhotoCrops("train", num_crops=config.num_crops, flip=config.flip,
                                  max_photo_weight=config.max_photo_weight, **common)
        evaluation = DefaultPhotoCrops("eval", num_crops=config.eval_crops, flip=False, **common)
        return train, evaluation
    if config.source == "folder":
        return _folder_datasets(config)
    root = config.path or DEFAULT_ROOT
    return (
        FashionMNIST(root, "train", config.image_size),
        FashionMNIST(root, "test", config.image_size),
    )
