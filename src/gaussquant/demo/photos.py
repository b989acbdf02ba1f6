"""Whole held-out photos through a Gaussian VAE and its GQ conversions (docs/method.md sections 3-4).

:func:`evaluate_photos` encodes each photo once, in overlapping windows (gaussquant/tiling.py says why; the
encoder is shared by every conversion: ``to_gaussian_quant`` copies it unchanged), decodes the posterior mean (the continuous reconstruction) and, for each codebook size K,
the GQ tokens. For the main K the tokens are written to one token file per photo (photos differ in size; the
``.npz`` format holds one image size), read back with :func:`~gaussquant.tokens.load_tokens` and decoded from
the file: the GQ numbers of the main K are those of the decoded token files. Each file records the windows,
so ``gaussquant decode`` reproduces the demo's pictures from it.

PSNR is on uint8 images (eval/metrics.py); the colour cast is the mean difference per RGB channel between
reconstruction and original, in uint8 levels (0 = no cast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gaussquant.data.transforms import to_uint8
from gaussquant.tiling import Tiling, tiling_record


@dataclass
class Reconstruction:
    """One photo reconstructed one way: the images and their scores."""

    image: Tensor  # (3, H, W) in [-1, 1]
    psnr: float
    cast: tuple[float, float, float]  # mean (reconstruction - original) per R, G, B, uint8 levels


@dataclass
class PhotoResult:
    """One held-out photo: the original, the continuous and per-K GQ reconstructions, its KL per group."""

    name: str
    original: Tensor  # (3, H, W) in [-1, 1]
    continuous: Reconstruction
    gq: dict[int, Reconstruction] = field(default_factory=dict)
    indices: dict[int, Tensor] = field(default_factory=dict)  # K -> (G, h, w) int64
    kl_bits: Tensor | None = None  # (h, w, G) group KL in bits
    moments: tuple[Tensor, Tensor] | None = None  # posterior (mean, logvar), each (1, C, h, w)
    token_file: Path | None = None


def score(x: Tensor, x_hat: Tensor) -> Reconstruction:
    """PSNR (uint8) and colour cast of ``x_hat`` against ``x`` (both ``(3, H, W)`` in [-1, 1])."""
    from gaussquant.eval.metrics import psnr_uint8

    x_hat = x_hat.clamp(-1, 1)
    psnr = float(psnr_uint8(x[None], x_hat[None])[0])
    diff = to_uint8(x_hat[None]).double() - to_uint8(x[None]).double()
    cast = tuple(float(v) for v in diff.mean(dim=(0, 2, 3)))
    return Reconstruction(image=x_hat.detach().cpu(), psnr=psnr, cast=cast)  # type: ignore[arg-type]


@torch.no_grad()
def evaluate_photos(
    model: nn.Module,
    photos: list[tuple[str, Tensor]],
    converted: dict[Any, nn.Module],
    *,
    main_k: int | None = None,
    token_dir: Path | None = None,
    tiling: Tiling | None = Tiling(64, 8),
) -> list[PhotoResult]:
    """Continuous and GQ reconstructions of whole photos.

    Args:
        model: the Gaussian VAE (eval mode).
        photos: ``[(name, (3, H, W) in [-1, 1])]``, H and W multiples of the model's f.
        converted: key (K, or any label) -> the model converted with ``to_gaussian_quant(model, K)``.
        main_k: the K whose tokens go to ``token_dir/NAME.npz`` and are decoded back from there.
        token_dir: where the token files are written (required with ``main_k``).
        tiling: the encoder and decoder windows (gaussquant/tiling.py); None = one pass.
    """
    from gaussquant.tiling import tiled_decode, tiled_encoder
    from gaussquant.tokens import TokenWriter, load_tokens, model_fingerprint

    device = next(model.parameters()).device
    fingerprints = {k: model_fingerprint(m) for k, m in converted.items() if k == main_k}
    results = []
    for name, x in photos:
        x = x.to(device)
        core, margin = (tiling.core, tiling.margin) if tiling else (max(x.shape[-2:]), 0)

        def decode(m: nn.Module, z: Tensor) -> Tensor:
            return tiled_decode(m, z, core, margin)[0]

        h = tiled_encoder(model, x[None], core, margin)
        out = model.bottleneck(h)
        result = PhotoResult(name=name, original=x.cpu(), continuous=score(x, decode(model, out.posterior.mean)),
                             kl_bits=None if out.kl_bits is None else out.kl_bits[0].cpu(),
                             moments=(out.posterior.mean.cpu(), out.posterior.logvar.cpu()))
        for k, gq in converted.items():
            indices = gq.bottleneck.quantize(h)
            result.indices[k] = indices[0].cpu()
            if k == main_k and token_dir is not None:
                path = token_dir / f"{name}.npz"
                size = (int(x.shape[-2]), int(x.shape[-1]))
                with TokenWriter(path, num_images=1, codebook_size=k, image_size=size,
                                 model_fingerprint=fingerprints[k], tiling=tiling_record(tiling)) as writer:
                    writer.write(indices.cpu(), [name])
                    writer.close()
                tokens = load_tokens(path)
                if tokens.model_fingerprint != fingerprints[k]:
                    raise RuntimeError(f"{path} was written by another model")
                indices = tokens.batch(0, 1).to(device)
                result.token_file = path
            result.gq[k] = score(x, decode(gq, gq.bottleneck.dequantize(indices)))
        results.append(result)
    return results


def mean_psnr(results: list[PhotoResult], k: Any = None) -> float:
    """Mean over photos of the per-photo PSNR: continuous (``k`` None) or GQ at ``k``."""
    values = [r.continuous.psnr if k is None else r.gq[k].psnr for r in results]
    return sum(values) / len(values)


def index_usage(results: list[PhotoResult], k: int) -> tuple[float, float]:
    """``(codebook usage, index entropy in bits)`` of the K-way tokens over all photos, mean over groups."""
    flat = torch.cat([r.indices[k].reshape(r.indices[k].shape[0], -1) for r in results], dim=1)
    usages, entropies = [], []
    for g in range(flat.shape[0]):
        counts = torch.bincount(flat[g], minlength=k).double()
        p = counts[counts > 0] / counts.sum()
        usages.append(float((counts > 0).sum()) / k)
        entropies.append(float(-(p * p.log2()).sum()))
    return sum(usages) / len(usages), sum(entropies) / len(entropies)
