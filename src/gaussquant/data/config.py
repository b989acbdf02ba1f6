"""The data config and the one builder that turns it into train and eval datasets.

Sources:

- ``"default"``: :class:`DefaultPhotoCrops` train crops (``num_crops``) and eval crops of the held-out
  photos (``eval_crops``).
- ``"folder"``: :class:`ImageFolderDataset`. ``path`` is either one folder (then the train set uses
  it with random crops and the eval set the same files with center crops), or a folder holding
  ``train/`` and ``val/`` (ImageNet layout), used for the two splits. The file lists are cached (see
  ``file_list.py``: beside the data by default, ``list_cache``) and built by rank 0 for all ranks; headers
  are not opened at start unless ``check_headers`` (a corrupt file is then skipped when it is loaded), and
  the eval split is not decoded at start (the trainer only takes its first preview images).
- ``"shards"``: :class:`ImageShardDataset` over a folder written by ``gaussquant shards`` (``shards.py``):
  its ``train`` split for training, its ``val`` split (or ``train`` again, center crops) for evaluation.
  ``path`` may be a local folder, an ``http(s)://`` URL or ``pipe:COMMAND`` (``shard_source.py``); remote
  shards are downloaded whole into ``shard_cache`` (``shard_cache.py``) and trained in an order grouped by
  ``shard_window`` shards.
- ``"fashion-mnist"``: the IDX files under ``path`` (default: the Debian package's folder), train/test.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from gaussquant.data.default_photos import EVAL_PHOTOS, DefaultPhotoCrops
from gaussquant.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
from gaussquant.data.file_list import CACHE_DIRNAME
from gaussquant.data.folder import ImageFolderDataset

logger = logging.getLogger(__name__)

SOURCES = ("default", "folder", "shards", "fashion-mnist")


@dataclass
class DataConfig:
    """Where images come from and how they are cropped.

    Attributes:
        source: ``"default"`` (bundled photos), ``"folder"``, ``"shards"`` or ``"fashion-mnist"``.
        path: the folder for ``"folder"`` / ``"shards"`` (required; shards also ``http(s)://...`` or
            ``pipe:COMMAND`` with ``{}`` for the file name) or ``"fashion-mnist"`` (optional).
        image_size: side of the square training/eval images in pixels.
        num_crops: training crops of the default photos.
        eval_crops: evaluation crops of the held-out default photos.
        random_crop: random crops for training folders (else center crops).
        flip: random horizontal flips for training.
        seed: seeds crops (and, in the trainer, the sampler).
        strict: a corrupt image file is an error instead of being skipped.
        num_workers: DataLoader worker processes per rank; None = automatic (``default_num_workers`` in
            ``sampler.py`` for folders, 0 for the in-memory sources). Workers persist across epochs.
        check_headers: open every folder image's header at start and drop the unreadable ones (once per
            folder state when the list is cached); off: corrupt files are skipped when loaded.
        list_cache: where folder file lists are cached: ``"beside"`` (``<folder>/.gaussquant/``, none if
            the folder is read-only), ``"off"``, or a folder path.
        shard_cache: remote shards: local folder of downloaded shards (None: ``~/.cache/gaussquant/shards``).
        shard_cache_gb: remote shards: bound on that folder's size in GB (2**30 bytes); keep it above
            ``2 * shard_window`` shards.
        shard_window: remote shards: shards whose images are shuffled together (the order is a permutation of
            shards, then of the images within each window of this many shards).
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
    num_workers: int | None = None
    check_headers: bool = False
    list_cache: str = "beside"
    shard_cache: str | None = None
    shard_cache_gb: float = 20.0
    shard_window: int = 4
    eval_photos: tuple[str, ...] = EVAL_PHOTOS
    max_photo_weight: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "folder" and not self.path:
            raise ValueError("data source 'folder' needs path= the image folder (e.g. --data DIR)")
        if self.source == "shards" and not self.path:
            raise ValueError("data source 'shards' needs path= the folder written by `gaussquant shards`")
        workers_bad = self.num_workers is not None and self.num_workers < 0
        if self.shard_window < 1 or self.shard_cache_gb <= 0:
            raise ValueError(f"data.shard_window must be >= 1 and data.shard_cache_gb > 0; got "
                             f"{self.shard_window} and {self.shard_cache_gb}")
        if self.image_size < 1 or self.num_crops < 1 or self.eval_crops < 1 or workers_bad:
            raise ValueError(f"invalid sizes in {self}")
        self.eval_photos = tuple(self.eval_photos)


def _cache_dir(config: DataConfig, root: Path) -> Path | None:
    if config.list_cache == "off":
        return None
    if config.list_cache == "beside":
        return root / CACHE_DIRNAME
    return Path(config.list_cache)


def _folder_datasets(config: DataConfig) -> tuple[Dataset, Dataset]:
    root = Path(config.path or "")
    train_root, eval_root = root, root
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_root, eval_root = root / "train", root / "val"
    common = dict(
        image_size=config.image_size, strict=config.strict, check_headers=config.check_headers,
        share_listing=True,
    )
    train = ImageFolderDataset(
        train_root, mode="random" if config.random_crop else "center", flip=config.flip, seed=config.seed,
        cache_dir=_cache_dir(config, train_root), **common,
    )
    if eval_root == train_root:
        evaluation = copy.copy(train)  # the same files, center crops: no second listing
        evaluation.mode, evaluation.flip, evaluation.skipped = "center", False, dict(train.skipped)
    else:
        evaluation = ImageFolderDataset(eval_root, mode="center", cache_dir=_cache_dir(config, eval_root), **common)
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
    if config.source == "shards":
        from gaussquant.data.shards import ImageShardDataset, ShardFolder

        folder = ShardFolder(config.path or "")  # shards.json is read once, even from a URL
        common = dict(image_size=config.image_size, strict=config.strict, cache_dir=config.shard_cache,
                      cache_bytes=int(config.shard_cache_gb * 2**30))
        train = ImageShardDataset(folder, "train", mode="random" if config.random_crop else "center",
                                  flip=config.flip, seed=config.seed, **common)
        split = "val" if "val" in folder.splits else "train"
        largest = max((e["bytes"] for n, e in folder.files.items() if n.endswith(".tar")), default=0)
        if folder.location.is_remote and common["cache_bytes"] < 2 * config.shard_window * largest:
            logger.warning("data.shard_cache_gb=%g holds fewer than 2 x shard_window=%d shards of %.2f GB: "
                           "shards will be downloaded again and again; raise it", config.shard_cache_gb,
                           config.shard_window, largest / 2**30)
        return train, ImageShardDataset(folder, split, mode="center", **common)
    root = config.path or DEFAULT_ROOT
    return (
        FashionMNIST(root, "train", config.image_size),
        FashionMNIST(root, "test", config.image_size),
    )
