"""Fashion-MNIST from the IDX files that a Debian package installs (no download).

``apt-get install dataset-fashion-mnist`` puts the four gzip IDX files under
``/usr/share/datasets/fashion-mnist/``. The IDX format: big-endian header ``0x00 0x00 <dtype> <ndim>``,
then ``ndim`` uint32 sizes, then the data (dtype 0x08 = uint8). Images are 28x28 grey, turned into RGB
by repeating the channel and resized (bicubic) to ``image_size``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from gaussquant.data.transforms import to_tensor

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzip or plain) IDX file with uint8 data into an array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise ValueError(f"{str(path)!r}: only uint8 IDX data (type 0x08) is supported, got {data[2]:#x}")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise ValueError(f"{str(path)!r} is truncated: {len(data) - offset} bytes of data, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


class FashionMNIST(Dataset):
    """Fashion-MNIST images as float tensors ``(3, image_size, image_size)`` in [-1, 1].

    Args:
        root: folder holding the IDX gz files.
        split: ``"train"`` (60k) or ``"test"`` (10k).
        image_size: output side (28 keeps the native size).

    ``dataset.labels`` holds the class labels (uint8); ``dataset.files`` names items ``"<split>/<i>"``.
    """

    def __init__(self, root: str | Path = DEFAULT_ROOT, split: str = "train", image_size: int = 28) -> None:
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        root = Path(root)
        image_file, label_file = (root / name for name in SPLIT_FILES[split])
        if not image_file.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {str(image_file)!r} not found; install it with "
                "`apt-get install dataset-fashion-mnist` or pass root= the folder holding the IDX files"
            )
        self.images = read_idx(image_file)
        if self.images.ndim != 3:
            raise ValueError(f"{str(image_file)!r} holds shape {self.images.shape}, expected (N, H, W)")
        self.labels = read_idx(label_file) if label_file.is_file() else None
        self.split, self.image_size = split, int(image_size)
        self.files = [f"{split}/{i}" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        grey = self.images[index]
        if grey.shape != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            grey = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BICUBIC))
        return to_tensor(np.repeat(grey[..., None], 3, axis=2))
