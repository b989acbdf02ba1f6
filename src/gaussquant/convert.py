"""The explicit Gaussian-VAE -> VQ-VAE step (docs/method.md section 4; never implicit in eval mode).

``to_gaussian_quant`` keeps the encoder and decoder of a trained Gaussian VAE unchanged and replaces its
bottleneck by the GQ quantizer: a fixed codebook of K standard-Gaussian vectors of dimension d (regenerated
from ``(codebook_method, K, d, seed)`` and stored in the model with its fingerprint) searched with ``rule``.
No training. The result serves both modes: ``forward`` / ``tokenize`` give the quantized (discrete) path and
``decode_posterior_mean`` the continuous one.

``gaussquant convert RUN_OR_CKPT --codebook-size K --out DIR`` first prints the convertibility report
(``gaussquant.convertibility``: per-group KL against log2 K, predicted large-error probability, a warning
and the K that would fit when the mean KL is outside log2 K +- 0.5), then converts and saves with
``model.save_pretrained`` (``config.json`` + ``model.safetensors`` + a model card; the report is stored
under ``"conversion"``). The saved config is the converted model's own (``model.config``), so the rule, beta
and codebook it reloads with are the ones it was converted with.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from gaussquant.convertibility import ConvertibilityReport, KLAccumulator

logger = logging.getLogger(__name__)


def _source_config(model: nn.Module) -> Any:
    """The bottleneck config of a Gaussian or GQ Autoencoder (read from ``model.config``), else a TypeError."""
    from gaussquant.models.autoencoder import Autoencoder

    if not isinstance(model, Autoencoder):
        raise TypeError(f"to_gaussian_quant expects a gaussquant Autoencoder; got {type(model).__name__}")
    cfg = model.config.bottleneck
    if cfg.kind not in ("gaussian", "gq"):
        raise TypeError(
            f"to_gaussian_quant needs a Gaussian bottleneck (encoder emitting mean and logvar); this model has "
            f"{type(model.bottleneck).__name__} (kind {cfg.kind!r}). Train a Gaussian VAE (bottleneck kind "
            "'gaussian') first."
        )
    return cfg


def default_codebook_dim(model: nn.Module) -> int:
    """The source's group size: ``codebook_dim`` (Gaussian/TDC or GQ)."""
    cfg = _source_config(model)
    return int(cfg.codebook_dim)


def gq_config(model: nn.Module, codebook_size: int, codebook_dim: int | None = None, *, rule: str = "log_ratio",
              beta: float = 1.0, seed: int = 42, codebook_method: str = "sobol", grouping: str | None = None,
              straight_through: bool = False) -> Any:
    """The ``GQConfig`` that :func:`to_gaussian_quant` builds for ``model`` (defaults from its config).

    The converted model has no rate loss (``target_bits=None``): it is a tokenizer, not a training target.
    """
    from gaussquant.quantizers.build import GQConfig

    source = _source_config(model)
    if not isinstance(codebook_size, int) or isinstance(codebook_size, bool) or codebook_size < 2:
        raise ValueError(f"codebook_size must be an integer >= 2; got {codebook_size!r}")
    return GQConfig(
        latent_channels=int(source.latent_channels), codebook_size=codebook_size,
        codebook_dim=int(codebook_dim or default_codebook_dim(model)), rule=rule, beta=float(beta),
        codebook_method=codebook_method, seed=int(seed), grouping=grouping or source.grouping,
        straight_through=straight_through, target_bits=None,
    )


def to_gaussian_quant(
    model: nn.Module,
    codebook_size: int,
    codebook_dim: int | None = None,
    *,
    rule: str = "log_ratio",
    beta: float = 1.0,
    seed: int = 42,
    codebook_method: str = "sobol",
    codebook: Tensor | None = None,
    grouping: str | None = None,
    straight_through: bool = False,
) -> nn.Module:
    """A GQ VQ-VAE from a trained Gaussian VAE, with no training (docs/method.md section 4).

    Args:
        model: an Autoencoder whose bottleneck is Gaussian (or already GQ: re-conversion to another K).
            It is not modified; the result holds copies of its encoder and decoder.
        codebook_size: K >= 2 (any integer; powers of two are not required).
        codebook_dim: d, dimensions per group; default the source's group size. Must divide the latent channels.
        rule: ``"log_ratio"`` (reference default) or ``"nearest"``; ``beta``: the log-ratio prior weight.
        seed, codebook_method: regenerate the K x d codebook (``"sobol"`` default, or ``"normal"``).
        codebook: an explicit ``(K, d)`` codebook instead (stored in the model and its saved weights; the
            config then says ``codebook_method="explicit"``).
        grouping: ``"contiguous"`` or ``"strided"``; default the source's grouping.
        straight_through: the training-time straight-through option (off for conversion).

    Returns:
        A new Autoencoder, in eval mode on the source's device, whose ``bottleneck`` is a GaussianQuantizer and
        whose ``config`` says exactly that (rule, beta, codebook spec, grouping, no rate target): it saves with
        ``model.save_pretrained(dir)`` and reloads to the same tokens.
    """
    from gaussquant.models.autoencoder import Autoencoder
    from gaussquant.quantizers.build import EXPLICIT_CODEBOOK, build_bottleneck

    cfg = gq_config(model, codebook_size, codebook_dim, rule=rule, beta=beta, seed=seed,
                    codebook_method=codebook_method, grouping=grouping, straight_through=straight_through)
    if codebook is not None:
        cfg = dataclasses.replace(cfg, codebook_method=EXPLICIT_CODEBOOK)
    quantizer = build_bottleneck(cfg, codebook=codebook)
    device = next(model.parameters()).device
    converted = Autoencoder(copy.deepcopy(model.encoder), quantizer, copy.deepcopy(model.decoder),
                            convert_grayscale=model.convert_grayscale, model_config=model.config.model)
    return converted.to(device).eval()


def _batches(images: Dataset | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Dataset):
        return DataLoader(images, batch_size=batch_size, shuffle=False)
    return images


@torch.no_grad()
def convertibility_report(
    model: nn.Module,
    images: Dataset | Iterable[Tensor],
    codebook_size: int,
    codebook_dim: int | None = None,
    *,
    grouping: str | None = None,
    batch_size: int = 16,
) -> ConvertibilityReport:
    """Measure how well ``model`` fits a codebook of size K (see ``gaussquant.convertibility``).

    Args:
        model: a Gaussian (or GQ) Autoencoder.
        images: a dataset of ``(3, H, W)`` tensors in [-1, 1], or an iterable of ``(B, 3, H, W)`` batches.
        codebook_size, codebook_dim, grouping: as for :func:`to_gaussian_quant`.
    """
    cfg = gq_config(model, codebook_size, codebook_dim, grouping=grouping)
    acc = KLAccumulator(cfg.codebook_size, cfg.codebook_dim, cfg.grouping)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for x in _batches(images, batch_size):
            posterior = model.encode(x.to(device)).posterior
            if posterior is None:
                raise TypeError(f"{type(model.bottleneck).__name__} returned no posterior")
            acc.update(posterior.mean, posterior.logvar)
    finally:
        model.train(was_training)
    return acc.report()


def sample_dataset(data: str | os.PathLike | None, image_size: int, num_images: int) -> Dataset:
    """Images for the report: ``num_images`` evenly spaced center crops of a folder (every image when it
    holds fewer), or (``data=None``) crops of the bundled held-out photos (``DefaultPhotoCrops("eval")``)."""
    if data is None:
        from gaussquant.data.default_photos import DefaultPhotoCrops

        return DefaultPhotoCrops("eval", image_size=image_size, num_crops=num_images, seed=0, flip=False)
    from gaussquant.data.folder import ImageFolderDataset

    dataset = ImageFolderDataset(data, image_size=image_size, mode="center")
    return Subset(dataset, evenly_spaced(len(dataset), num_images))


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` distinct indices spread evenly over ``range(n)`` (each the middle of its 1/k slice), or all
    ``n`` when ``n <= k``."""
    if n <= k:
        return list(range(n))
    return [int((i + 0.5) * n / k) for i in range(k)]


def run(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    codebook_size: int,
    codebook_dim: int | None = None,
    rule: str = "log_ratio",
    beta: float = 1.0,
    seed: int = 42,
    codebook_method: str = "sobol",
    grouping: str | None = None,
    data: str | os.PathLike | None = None,
    num_images: int = 64,
    image_size: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    use_ema: bool = False,
    overwrite: bool = False,
    on_report: Callable[[ConvertibilityReport], None] | None = None,
) -> tuple[Path, ConvertibilityReport]:
    """Load ``source``, report its convertibility on ``num_images`` images, convert, save to ``out``.

    The report goes to ``on_report`` before converting (the CLI prints it), else to the log (INFO).
    Returns ``(out, report)``. ``out`` may not already hold a model unless ``overwrite``.
    """
    from gaussquant.encode import load_model, resolve_device

    out = Path(out)
    if (out / "config.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a model; choose another --out or pass --overwrite")
    model = load_model(source, resolve_device(device), use_ema=use_ema)
    _source_config(model)  # a clear error before the report for a model that cannot be converted
    size = image_size or int(model.config.model.image_size)
    report = convertibility_report(model, sample_dataset(data, size, num_images), codebook_size, codebook_dim,
                                   grouping=grouping, batch_size=batch_size)
    if on_report is not None:
        on_report(report)
    else:
        logger.info("%s", report.to_text())
    converted = to_gaussian_quant(model, codebook_size, codebook_dim, rule=rule, beta=beta, seed=seed,
                                  codebook_method=codebook_method, grouping=grouping)
    from gaussquant.quantizers.build import bottleneck_config_to_dict

    extra = {"conversion": {"source_step": model.metadata.get("step"),
                            "source_bottleneck": bottleneck_config_to_dict(model.config.bottleneck),
                            "report_data": str(data) if data else "default held-out photo crops",
                            "convertibility": report.to_dict()}}
    converted.save_pretrained(out, extra=extra)
    return out, report
