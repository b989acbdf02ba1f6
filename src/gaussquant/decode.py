"""``gaussquant decode MODEL tokens.npz --out DIR``: tokens on disk -> PNG images.

Decoding checks first, then works: the token file must carry this model's fingerprint, codebook size and
group count, and every index must lie in [0, K) (``gaussquant.tokens``), and the model's weights must be
finite; otherwise the error says which. A batch that decodes to NaN pixels stops the run with an error
instead of being written as black images.
Each image is written as ``DIR/<source file name with .png>`` (sub-folders kept), its pixels
``round((x_hat + 1) * 127.5)`` of the model's ``detokenize`` — the same uint8 mapping PSNR uses. Batches are
read from the (compact) index array and decoded one at a time, so memory holds one batch of images.
The decoder runs in the windows the token file records (``gaussquant.tiling``; the encoder's), else in the
model's recommended ones, unless a tiling is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

import torch
from PIL import Image
from torch import nn

from gaussquant.data.transforms import to_uint8
from gaussquant.encode import _progress, check_finite_weights
from gaussquant.quantizers.base import require_discrete
from gaussquant.tiling import AUTO, Tiling, resolve_tiling, tiled_detokenize
from gaussquant.tokens import TokenFile, check_index_range, check_output_path, load_tokens, model_fingerprint

logger = logging.getLogger(__name__)


def check_tokens_match(model: nn.Module, tokens: TokenFile, source: str = "the tokens file") -> None:
    """Raise ValueError unless ``tokens`` were written by ``model`` (fingerprint, K, G, index range)."""
    require_discrete(getattr(model, "bottleneck", None), "decode")
    bottleneck = model.bottleneck
    if tokens.codebook_size != bottleneck.codebook_size or tokens.num_groups != bottleneck.num_groups:
        raise ValueError(
            f"{source} holds tokens for K={tokens.codebook_size}, G={tokens.num_groups}, but this model has "
            f"K={bottleneck.codebook_size}, G={bottleneck.num_groups}: decode with the model that encoded them"
        )
    check_index_range(tokens.indices, bottleneck.codebook_size, source)
    check_token_layout(model, tokens, source)
    fingerprint = model_fingerprint(model)
    if fingerprint != tokens.model_fingerprint:
        raise ValueError(
            f"{source} was written by a different model (fingerprint {tokens.model_fingerprint[:12]}..., this "
            f"model is {fingerprint[:12]}...): its indices point into another codebook or decoder. Decode with "
            "the model that encoded them."
        )


@torch.no_grad()
def check_token_layout(model: nn.Module, tokens: TokenFile, source: str = "the tokens file") -> None:
    """Raise ValueError unless the model's tokens for ``tokens.image_size`` images have the file's layout and
    grid (one encoder pass over a blank image; a ViT's ``(N, L, G)`` file given to a UNet, or the reverse, is
    otherwise a deep convolution error)."""
    height, width = tokens.image_size
    device = next(model.parameters()).device
    try:
        latent = model.encoder(torch.zeros(1, 3, height, width, device=device))
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"{source} holds tokens of {height}x{width} images, which this model cannot encode ({err}); decode "
            "with the model that encoded them"
        ) from None
    layout, grid = ("channel_first", tuple(latent.shape[2:])) if latent.dim() == 4 else ("token_last", (latent.shape[1],))
    if (layout, grid) != (tokens.layout, tuple(tokens.grid)):
        raise ValueError(
            f"{source} holds {tokens.layout} tokens on a grid of {tuple(tokens.grid)}, but this model makes "
            f"{layout} tokens on a grid of {grid}: decode with the model that encoded them"
        )


def output_names(file_names: list[str]) -> list[str]:
    """Source names -> relative ``.png`` names; raise if two sources would map to the same PNG."""
    out = [PurePosixPath(name).with_suffix(".png").as_posix() for name in file_names]
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(n for n in out if n in seen or seen.add(n))
        raise ValueError(f"two source images would both be decoded to {dup!r}; rename one of them and re-encode")
    for name in out:
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise ValueError(f"unsafe file name {name!r} in the tokens file (absolute or with '..')")
    return out


def decode_tokens(
    model: nn.Module,
    tokens_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 16,
    tiling: Tiling | None | str = AUTO,
    progress: bool = False,
) -> list[Path]:
    """Decode a tokens ``.npz`` written by :func:`gaussquant.encode.encode_folder` into PNGs under ``out_dir``.

    Args:
        model: the Autoencoder that encoded the tokens, on its device.
        tokens_path: the ``.npz``.
        out_dir: created if missing; PNGs keep the source files' relative paths with a ``.png`` suffix.
        batch_size: images decoded at once.
        tiling: decoder windows: a ``Tiling``, None for one pass, or ``"auto"``: the token file's record (the
            encoder's windows), else the model's recommendation (``model.config.model.tile``), else one pass.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The written PNG paths, in token order.
    """
    tokens = load_tokens(tokens_path)
    check_finite_weights(model, "decode")
    check_tokens_match(model, tokens, str(tokens_path))
    tiling = resolve_tiling(model, tiling, tokens.tiling)
    names = output_names(tokens.file_names)
    out = check_output_path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write PNGs into {str(out)!r}: it is a file, not a folder; choose another --out")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    written: list[Path] = []
    try:
        with torch.no_grad():
            for start in _progress(range(0, tokens.num_images, batch_size), progress, "decode"):
                x_hat = tiled_detokenize(model, tokens.batch(start, start + batch_size).to(device), tiling)
                if not bool(torch.isfinite(x_hat).all()):  # would be written as black pixels
                    raise ValueError(
                        f"decoding image {start} ({names[start]!r}) onward gave NaN or infinite pixels; "
                        f"{len(written)} images were written before it. The decoder is numerically broken"
                    )
                pixels = to_uint8(x_hat.cpu()).permute(0, 2, 3, 1).numpy()
                for offset, image in enumerate(pixels):
                    path = out / names[start + offset]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(path)
                    written.append(path)
    finally:
        model.train(was_training)
    logger.info("decoded %d images to %s", len(written), out)
    return written
