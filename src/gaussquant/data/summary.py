"""One sentence on what a training set holds, for ``gaussquant train`` to print (issue 17, rough edges).

"found 21 images under photos/ (3 converted to RGB from grey, RGBA or palette; 2 upscaled to 64 px)".
Only image headers are read (mode and size: no decoding). A folder of more than ``max_checked`` files is
checked on an evenly spaced sample, and the sentence says so.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

MAX_CHECKED = 2000


def _header(path: Path) -> tuple[str, int] | None:
    """``(mode, shorter side)`` of an image file, or None when its header cannot be read."""
    try:
        with Image.open(path) as image:
            return image.mode, min(image.size)
    except Exception:  # noqa: BLE001  (a corrupt file is reported by the dataset itself)
        return None


def _counts(headers: list[tuple[str, int] | None], image_size: int) -> tuple[int, int]:
    known = [h for h in headers if h is not None]
    converted = sum(1 for mode, _ in known if mode != "RGB")
    upscaled = sum(1 for _, side in known if side < image_size)
    return converted, upscaled


def _sentence(count: int, what: str, converted: int, upscaled: int, image_size: int, note: str = "") -> str:
    parts = [f"{converted} converted to RGB from grey, RGBA, palette or 16-bit" if converted else "all RGB",
             f"{upscaled} upscaled to {image_size} px (shorter side below it)" if upscaled else "none upscaled"]
    return f"found {count} {what} ({'; '.join(parts)}{note})"


def describe_training_data(dataset: Dataset, max_checked: int = MAX_CHECKED) -> str:
    """What ``dataset`` holds, as one sentence (image count, conversions, upscaling).

    Knows :class:`~gaussquant.data.folder.ImageFolderDataset`,
    :class:`~gaussquant.data.default_photos.DefaultPhotoCrops` and
    :class:`~gaussquant.data.fashion_mnist.FashionMNIST`; any other dataset gets its length only.
    """
    from gaussquant.data.default_photos import PHOTO_FILES, DefaultPhotoCrops, _package_dir
    from gaussquant.data.fashion_mnist import FashionMNIST
    from gaussquant.data.folder import ImageFolderDataset

    if isinstance(dataset, ImageFolderDataset):
        files = dataset.files
        step = max(1, len(files) // max_checked) if len(files) > max_checked else 1
        checked = files[::step][:max_checked]
        converted, upscaled = _counts([_header(dataset.root / name) for name in checked], dataset.image_size)
        note = f"; counted on {len(checked)} evenly spaced files" if len(checked) < len(files) else ""
        return _sentence(len(files), f"images under {dataset.root}", converted, upscaled, dataset.image_size, note)
    if isinstance(dataset, DefaultPhotoCrops):
        headers = []
        for name in dataset.names:
            package, relative = PHOTO_FILES[name]
            headers.append(_header(_package_dir(package) / relative))
        converted, upscaled = _counts(headers, dataset.image_size)
        what = f"bundled training photos ({', '.join(dataset.names)}), drawn as {len(dataset)} crops"
        return _sentence(len(dataset.names), what, converted, upscaled, dataset.image_size)
    if isinstance(dataset, FashionMNIST):
        size, native = dataset.image_size, int(dataset.images.shape[1])
        return _sentence(len(dataset), "Fashion-MNIST images", len(dataset), len(dataset) if size > native else 0, size)
    return f"found {len(dataset)} training images"
