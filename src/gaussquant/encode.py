"""``gaussquant encode MODEL IMAGES_DIR --out tokens.npz``: images -> tokens on disk.

The model's ``tokenize`` (docs/method.md section 4: the search over the fixed codebook) runs over the folder in
batches; indices stream into the ``.npz`` described in ``tokens.py`` while images are loaded batch by batch,
so a folder larger than memory works. Images are resized (shorter side) and center-cropped to the model's
training size, exactly as ``ImageFolderDataset(mode="center")`` does for evaluation; a corrupt image is an
error that names it (a token file must hold every listed image, in order). Images larger than a window can
be encoded in overlapping windows (``gaussquant.tiling``; by default the model's recommended ones); the
tiling used is recorded in the token file, and ``decode`` uses it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from gaussquant.quantizers.base import require_discrete
from gaussquant.tiling import AUTO, Tiling, resolve_tiling, tiled_tokenize, tiling_record
from gaussquant.tokens import TokenWriter, model_fingerprint

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"`` -> CUDA when available, else CPU; anything else as given (CUDA checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available; use --device cpu")
    return device


def load_model(path: str | os.PathLike, device: torch.device, use_ema: bool = False) -> nn.Module:
    """``Autoencoder.from_pretrained`` on ``device``: the model in eval mode (``model.config``, ``model.metadata``)."""
    from gaussquant.models.autoencoder import Autoencoder

    return Autoencoder.from_pretrained(path, map_location=device, use_ema=use_ema)


def check_finite_weights(model: nn.Module, what: str) -> None:
    """Raise ValueError naming the first parameter or buffer holding NaN or inf (a damaged or diverged model
    would otherwise write black images or meaningless tokens without a word)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{what}: the model's weights hold NaN or infinite values (first: {name}); the model is damaged "
                "or its training diverged. Use an earlier checkpoint; nothing was written"
            )


def encode_folder(
    model: nn.Module,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    image_size: int,
    batch_size: int = 16,
    num_workers: int = 0,
    tiling: Tiling | None | str = AUTO,
    progress: bool = False,
) -> Path:
    """Tokenize every image under ``images_dir`` into ``out_path`` (a tokens ``.npz``).

    Args:
        model: an Autoencoder with a discrete bottleneck (e.g. a converted GQ model), on its device.
        images_dir: a folder of images (searched recursively; see ``ImageFolderDataset``).
        out_path: the ``.npz`` to write (written to ``out_path.partial`` first, renamed when complete).
        image_size: side of the square center crop fed to the model (a multiple of its downsampling factor).
        batch_size, num_workers: DataLoader settings.
        tiling: encoder windows (``gaussquant.tiling``): a ``Tiling``, None for one pass, or ``"auto"`` (the
            model's recommended tile, ``model.config.model.tile``, else one pass). Recorded in the file.
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``out_path``. Indices are ``(N, G, h, w)`` or ``(N, L, G)``; see ``gaussquant.tokens``.
    """
    from gaussquant.data.folder import ImageFolderDataset

    require_discrete(getattr(model, "bottleneck", None), "encode")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels; got {image_size}")
    check_finite_weights(model, "encode")
    tiling = resolve_tiling(model, tiling)
    dataset = ImageFolderDataset(images_dir, image_size=image_size, mode="center", strict=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    writer = TokenWriter(out_path, num_images=len(dataset), codebook_size=model.bottleneck.codebook_size,
                         image_size=(image_size, image_size), model_fingerprint=model_fingerprint(model),
                         tiling=tiling_record(tiling))
    start = 0
    try:
        with writer, torch.no_grad():
            for x in _progress(loader, progress, "encode"):
                indices = tiled_tokenize(model, x.to(device), tiling)
                writer.write(indices, dataset.files[start:start + x.shape[0]])
                start += x.shape[0]
            path = writer.close()
    finally:
        model.train(was_training)
    logger.info("wrote %d images' tokens (K=%d, %s) to %s", len(dataset), writer.codebook_size,
                "one pass" if tiling is None else f"{tiling.window}-px windows, {tiling.margin}-px margins", path)
    return path


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch")
