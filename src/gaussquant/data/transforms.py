"""Image decoding and the two crop recipes shared by every data source.

Every source ends in the same place: an RGB uint8 ``(H, W, 3)`` array, turned into a float tensor
``(3, H, W)`` in [-1, 1] by :func:`to_tensor`. Conversion rules (why: models see 3 channels, 8 bits):

- grayscale (``L``, ``1``), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> PIL's RGB conversion;
- palette (``P``) and images with alpha (``RGBA``, ``LA``, ``PA``, palette + transparency) are
  **composited on white** (transparent pixels become white, as a viewer shows them; dropping alpha would
  expose whatever colour the encoder left under transparent pixels, often black garbage);
- 16-bit (``I;16*``) and 32-bit integer (``I``) images are rescaled from their bit depth to 8 bits
  (PIL's own ``convert`` would clip every value above 255 to white).

Resizing uses PIL bicubic, which low-pass filters when shrinking (no aliasing).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

_RESAMPLE = Image.Resampling.BICUBIC


def pil_to_rgb8(image: Image.Image) -> Image.Image:
    """Return an 8-bit ``RGB`` copy of any PIL image (rules in the module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        # why: 16-bit PNG/TIFF open as I;16; scale the full range 0..65535 down to 0..255
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(values * (255.0 if values.max(initial=0) <= 1.0 else 1.0)), 0, 255)
        return Image.fromarray(np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2), "RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side equals ``size`` (aspect kept, longer side rounded)."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size == (width, height):
        return image
    return image.resize(new_size, _RESAMPLE)


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Center ``size x size`` crop of an ``(H, W, C)`` array with ``H, W >= size``."""
    height, width = array.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return array[top : top + size, left : left + size]


def random_crop(array: np.ndarray, size: int, generator: torch.Generator, flip: bool) -> np.ndarray:
    """Random ``size x size`` crop (+ horizontal flip with probability 1/2 when ``flip``).

    Draws exactly three numbers from ``generator`` (top, left, flip) whatever ``flip`` is, so the
    crop position does not depend on the flip setting.
    """
    height, width = array.shape[:2]
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    do_flip = bool(torch.randint(0, 2, (1,), generator=generator)) and flip
    crop = array[top : top + size, left : left + size]
    return crop[:, ::-1] if do_flip else crop


def to_tensor(array: np.ndarray) -> Tensor:
    """uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` in [-1, 1] (0 -> -1, 255 -> 1)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise TypeError(f"expected a uint8 (H, W, 3) array, got {array.dtype} {array.shape}")
    # np.array copies: the source may be a read-only cached photo or a negative-stride flip view
    chw = torch.from_numpy(np.array(array)).permute(2, 0, 1)
    return chw.to(torch.float32).div_(127.5).sub_(1.0)


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] (any float dtype) -> uint8 in [0, 255], rounded to nearest (clamped first)."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def item_generator(*keys: int) -> torch.Generator:
    """A local generator seeded from a tuple of non-negative ints (e.g. (seed, epoch, index)).

    why: per-item generators make an item's crop depend only on its key, never on worker count,
    batch order or how far a resumed run had gone.
    """
    value = 0x9E3779B97F4A7C15
    for key in keys:
        # a simple 64-bit mix (splitmix-style) so that nearby keys give unrelated seeds
        value = (value ^ (int(key) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return torch.Generator().manual_seed(value & 0x7FFFFFFFFFFFFFFF)
