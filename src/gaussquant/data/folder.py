"""A user's image folder as a dataset (ImageNet layout with class subfolders, or flat).

Files are found recursively (``.jpg .jpeg .png .webp .bmp``, any case), sorted by relative path so the
order is the same on every machine. Images are converted to RGB 8-bit (rules in ``transforms.py``:
alpha is composited on white, 16-bit is rescaled) and cropped to ``image_size``:

- ``mode="center"``: resize the shorter side to ``image_size``, take the center square (evaluation);
- ``mode="random"``: resize the shorter side to ``image_size``, take a random square along the longer
  side, flip horizontally with probability 1/2 when ``flip`` (the VQGAN "smallest side + random crop"
  recipe). The crop comes from a generator seeded by ``(seed, epoch, index)``: deterministic whatever
  the worker count, and the same after a resume. The epoch comes with the index: ``dataset[(epoch, i)]``
  (what ``make_loader`` asks for, so persistent workers see every new epoch), or ``dataset[i]`` with the
  epoch of :meth:`set_epoch`.

Listing (``file_list.py``): one ``os.scandir`` walk, cached in ``cache_dir`` (default: none here; the
training data config puts it beside the data) and, with ``share_listing=True``, built by rank 0 and
broadcast to the other ranks.

Corrupt files (when they are found, and what happens):

- **at listing** (``check_headers=True``, the default of this class; training folders default to
  ``data.check_headers: false``): each file's header is opened (one small read per file, in a thread
  pool). Files that are not images are dropped, with ONE warning that counts and names them. For folders
  of millions of files on slow storage, ``check_headers=False`` skips this. With a cache the check runs
  once per folder state.
- **full check** (``verify=True``): every image is decoded once at construction in a thread pool, so
  truncated files are dropped too, again with one warning. Use it for evaluation sets, where every
  dropped file must be counted up front.
- **at load** (``verify=False``): a file whose pixel data fails to decode (e.g. truncated) is replaced
  by the next valid file (deterministic); it is recorded in ``dataset.skipped`` and a warning names it
  (once per file and process).

With ``strict=True`` any corrupt file is a ``ValueError`` naming it. An empty folder, or one with no
image files, is a ``FileNotFoundError`` naming the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from gaussquant.data.file_list import IMAGE_EXTENSIONS, image_file_index, walk_images
from gaussquant.data.transforms import (
    center_crop,
    item_generator,
    pil_to_rgb8,
    random_crop,
    resize_shorter_side,
    to_tensor,
)

logger = logging.getLogger(__name__)

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def list_image_files(root: str | Path) -> list[str]:
    """Relative paths (POSIX style, sorted) of every image file under ``root``, recursively (no cache)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
    files, _ = walk_images(root)
    if not files:
        raise FileNotFoundError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}, any case) found under {str(root)!r}"
        )
    return sorted(files)


def load_rgb8(path: str | Path) -> np.ndarray:
    """Decode one image file to a uint8 ``(H, W, 3)`` array (raises on a corrupt file)."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(pil_to_rgb8(image))


def _header_ok(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018  (header parsed by open)
        return None
    except _DECODE_ERRORS as error:
        return f"{type(error).__name__}: {error}"


def _decodes(path: Path) -> str | None:
    try:
        load_rgb8(path)
        return None
    except _DECODE_ERRORS as error:
        return f"{type(error).__name__}: {error}"


class ImageFolderDataset(Dataset):
    """Images of a folder, recursively, as float tensors ``(3, image_size, image_size)`` in [-1, 1].

    Args:
        root: the folder (flat or ImageNet layout ``root/class/xxx.JPEG``; class names are ignored).
        image_size: output side in pixels.
        mode: ``"center"`` (resize + center crop) or ``"random"`` (resize + random crop [+ flip]).
        flip: random horizontal flips (``mode="random"`` only).
        strict: a corrupt file is an error instead of being skipped.
        seed: seeds the random crops together with the epoch and the item index.
        verify: decode every file at construction (see the module docstring).
        check_headers: open every file's header at construction (ignored when ``verify``).
        num_threads: threads for the listing/verification pass.
        cache_dir: where the file list (and check results) are cached; None = no cache.
        share_listing: under a process group, rank 0 lists and broadcasts (every rank must construct).

    ``dataset.files`` holds the relative file names; ``dataset[i]`` is the tensor of ``files[i]``
    (or, after a load-time failure, of the next valid file; see ``dataset.skipped``).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: int,
        mode: str = "center",
        flip: bool = False,
        strict: bool = False,
        seed: int = 0,
        verify: bool = False,
        check_headers: bool = True,
        num_threads: int = 8,
        cache_dir: str | Path | None = None,
        share_listing: bool = False,
    ) -> None:
        if mode not in ("center", "random"):
            raise ValueError(f"mode must be 'center' or 'random', got {mode!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.mode = mode
        self.flip = bool(flip)
        self.strict = bool(strict)
        self.seed = int(seed)
        self.epoch = 0
        self.skipped: dict[str, str] = {}
        check = "decode" if verify else "headers" if check_headers else "none"
        checker = {"decode": _decodes, "headers": _header_ok, "none": None}[check]
        files, bad = image_file_index(
            self.root, check=check, checker=checker, cache_dir=cache_dir, share=share_listing,
            num_threads=num_threads,
        )
        if not files:
            raise FileNotFoundError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}, any case) found under {str(self.root)!r}"
            )
        if bad:
            self._report_listing(bad)
        self.files = [name for name in files if name not in bad]
        if not self.files:
            raise FileNotFoundError(f"no readable image under {str(self.root)!r} ({len(bad)} corrupt)")

    def _report_listing(self, bad: dict[str, str]) -> None:
        names = ", ".join(f"{name} ({why})" for name, why in bad.items())
        if self.strict:
            raise ValueError(f"{len(bad)} corrupt image file(s) under {str(self.root)!r}: {names}")
        logger.warning("skipping %d corrupt image file(s) under %s: %s", len(bad), self.root, names)
        self.skipped.update(bad)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def _source(self, name: str) -> Path | BinaryIO:
        """What ``Image.open`` reads for ``name`` (a path here; the bytes of a tar member in ``shards.py``)."""
        return self.root / name

    def _load(self, index: int) -> np.ndarray | None:
        """The resized RGB array of ``files[index]``, or None when it is corrupt (non-strict)."""
        name = self.files[index]
        try:
            with Image.open(self._source(name)) as image:
                image.load()
                resized = resize_shorter_side(pil_to_rgb8(image), self.image_size)
            return np.asarray(resized)
        except _DECODE_ERRORS as error:
            if self.strict:
                raise ValueError(f"corrupt image file {str(self.root / name)!r}: {error}") from error
            if name not in self.skipped:
                self.skipped[name] = f"{type(error).__name__}: {error}"
                logger.warning("skipping corrupt image %s (%s); using the next file", name, error)
            return None

    #: ``make_loader`` passes ``(epoch, index)`` pairs to datasets that set this
    takes_epoch = True
    #: ``make_loader(num_workers=None)`` gives worker processes to datasets that decode files
    reads_files = True

    def __getitem__(self, index: int | tuple[int, int]) -> Tensor:
        """Tensor ``(3, image_size, image_size)`` in [-1, 1] for ``files[index]``; ``index`` may be an
        ``(epoch, index)`` pair (the epoch of the random crop, else :meth:`set_epoch`'s)."""
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = (int(v) for v in index)
        for offset in range(len(self.files)):
            candidate = (index + offset) % len(self.files)
            array = self._load(candidate)
            if array is None:
                continue
            if self.mode == "center":
                return to_tensor(center_crop(array, self.image_size))
            generator = item_generator(self.seed, epoch, index)
            return to_tensor(random_crop(array, self.image_size, generator, self.flip))
        raise ValueError(f"every image under {str(self.root)!r} failed to decode: {self.skipped}")
