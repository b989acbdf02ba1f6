"""``gaussquant encode MODEL IMAGES_DIR --out tokens.npz``: images -> tokens on disk (issue 6, item 3).

The model's ``tokenize`` (method.md section 4: the search over the fixed codebook) runs over the folder in
batches; indices stream into the ``.npz`` described in ``tokens.py`` while images are loaded batch by batch,
so a folder larger than memory works. Images are resized (shorter side) and center-cropped to the model's
training size, exactly as ``ImageFolderDataset(mode="center")`` does for evaluation; a corrupt image is an
error that names it (a token file must hold every listed image, in order).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

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


def load_model(path: str | os.PathLike, device: torch.device, use_ema: bool = False) -> tuple[nn.Module, dict]:
    """``from_pretrained`` on ``device``: ``(model in eval mode, config.json dict)``."""
    from gaussquant.pretrained import from_pretrained

    return from_pretrained(path, map_location=device, use_ema=use_ema)


def check_finite_weights(model: nn.Module, what: str) -> None:
    """Raise ValueError naming the first parameter or buffer holding NaN or inf (a damaged or diverged model
    would otherwise write black images or meaningless tokens without a word)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{what}: the model's weights hold NaN or infinite values (first: {name}); the model is damaged "
                "or its training diverged. Use an earlier checkpoint; nothing was written"
            )


def require_discrete(model: nn.Module, what: str) -> None:
    bottleneck = getattr(model, "bottleneck", None)
    if not getattr(bottleneck, "is_discrete", False):
        raise TypeError(
            f"{what} needs a model with a discrete bottleneck; this one has {type(bottleneck).__name__}. "
            "Convert a Gaussian VAE first: gaussquant convert RUN --codebook-size K --out DIR"
        )


def encode_folder(
    model: nn.Module,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    image_size: int,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> Path:
    """Tokenize every image under ``images_dir`` into ``out_path`` (a tokens ``.npz``).

    Args:
        model: an Autoencoder with a discrete bottleneck (e.g. a converted GQ model), on its device.
        images_dir: a folder of images (searched recursively; see ``ImageFolderDataset``).
        out_path: the ``.npz`` to write (written to ``out_path.partial`` first, renamed when complete).
        image_size: side of the square center crop fed to the model (a multiple of its downsampling factor).
        batch_size, num_workers: DataLoader settings.
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``out_path``. Indices are ``(N, G, h, w)`` or ``(N, L, G)``; see ``gaussquant.tokens``.
    """
    from gaussquant.data.folder import ImageFolderDataset

    require_discrete(model, "encode")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels; got {image_size}")
    check_finite_weights(model, "encode")
    dataset = ImageFolderDataset(images_dir, image_size=image_size, mode="center", strict=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    writer = TokenWriter(out_path, num_images=len(dataset), codebook_size=model.bottleneck.codebook_size,
                         image_size=(image_size, image_size), model_fingerprint=model_fingerprint(model))
    start = 0
    try:
        with writer, torch.no_grad():
            for x in _progress(loader, progress, "encode"):
                indices = model.tokenize(x.to(device))
                writer.write(indices, dataset.files[start:start + x.shape[0]])
                start += x.shape[0]
            path = writer.close()
    finally:
        model.train(was_training)
    logger.info("wrote %d images' tokens (K=%d) to %s", len(dataset), writer.codebook_size, path)
    return path


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a converted model: save_pretrained dir, checkpoint step dir or run dir")
    parser.add_argument("images", help="folder of images (recursive; jpg/png/webp/bmp)")
    parser.add_argument("--out", required=True, help="tokens file to write (.npz)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="center-crop side in pixels (default: the model's training image_size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a checkpoint")


def main(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, meta = load_model(args.model, device, use_ema=args.ema)
    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be a positive number of pixels; got {args.image_size}")
    image_size = args.image_size if args.image_size is not None else int(meta["model"]["image_size"])
    path = encode_folder(model, args.images, args.out, image_size=image_size, batch_size=args.batch_size,
                         num_workers=args.num_workers, progress=True)
    print(f"tokens written to {path}")
    return 0
