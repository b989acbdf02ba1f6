"""Fréchet distance and KID of generated images against held-out images (``bench generation --fd``).

The features are those of ``bench quality --fd``: pooled EfficientNet-Lite0 features (1280-d, 224 x 224,
:class:`gaussquant.eval.fid.EffNetLite0Features`), an offline proxy reported as ``fd_effnet_lite0`` and never
as FID. The distance and the kernel distance are the project's own (:class:`gaussquant.eval.fid.FrechetDistance`,
:mod:`gaussquant.eval.kid`); this module only feeds them features of two unpaired image sets:

- real: the first ``n`` held-out images (features computed once per run and shared by every method);
- generated: ``n`` token grids sampled from the method's prior (temperature 1, no top-k, seed 0) and decoded
  by the tokenizer that wrote the prior's training tokens.

``n = min(fd_samples, held-out images)``. With ``n`` below the feature dimension (1280) the covariances are
singular and the Fréchet distance is biased upwards by an amount that depends on ``n``: compare methods only at
the same ``n`` (the table states it) and read the unbiased KID beside it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


@torch.no_grad()
def image_features(extractor: nn.Module, images: Any, num: int, batch_size: int = 64) -> Tensor:
    """Features ``(num, extractor.dim)`` (float32, CPU) of the first ``num`` images of ``images``.

    ``images``: anything indexable giving ``(3, H, W)`` tensors in [-1, 1] (a dataset, a list).
    """
    if num < 2 or num > len(images):
        raise ValueError(f"need between 2 and {len(images)} images for a Fréchet distance, got {num}")
    chunks = []
    for start in range(0, num, batch_size):
        x = torch.stack([images[i] for i in range(start, min(num, start + batch_size))])
        chunks.append(extractor(x).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def sample_features(extractor: nn.Module, prior: Any, tokenizer: nn.Module, num: int, *, seed: int = 0,
                    batch_size: int = 64) -> Tensor:
    """Features ``(num, dim)`` of ``num`` images sampled from ``prior`` (temperature 1, seed ``seed``) and
    decoded by ``tokenizer`` (whose ``detokenize`` maps the token file's layout to images in [-1, 1])."""
    from gaussquant.prior.generate import sample_tokens

    indices, _ = sample_tokens(prior, num, seed=seed, batch_size=batch_size)
    chunks = []
    for start in range(0, num, batch_size):
        images = tokenizer.detokenize(indices[start:start + batch_size]).clamp(-1, 1)
        chunks.append(extractor(images).float().cpu())
    return torch.cat(chunks)


def fd_and_kid(extractor: nn.Module, real: Tensor, fake: Tensor) -> dict[str, Any]:
    """Fréchet distance and unbiased KID of two ``(n, dim)`` feature sets of equal size.

    Returns ``fd``, ``kid``, ``kid_std``, ``kid_subset_size``, ``fd_images`` (n) and ``fd_warning`` (the
    sentence :meth:`FrechetDistance.compute` logs when n < dim, else None).
    """
    from gaussquant.eval.fid import FrechetDistance

    if real.shape != fake.shape:
        raise ValueError(f"FD/KID compare equal numbers of images: got {tuple(real.shape)} and {tuple(fake.shape)}")
    metric = FrechetDistance(extractor)
    metric.update_features(real, fake)
    fd = metric.compute()
    kid, kid_std, subset = metric.kernel_distance()
    return {"fd": fd, "kid": kid, "kid_std": kid_std, "kid_subset_size": subset, "fd_images": int(real.shape[0]),
            "fd_warning": metric.warning}


def build_extractor(device: torch.device | str = "cpu") -> nn.Module:
    """The EfficientNet-Lite0 feature extractor of ``bench quality --fd`` (needs the ``eval`` extra)."""
    from gaussquant.eval.fid import EffNetLite0Features

    return EffNetLite0Features(device)
