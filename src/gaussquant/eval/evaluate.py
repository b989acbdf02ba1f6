"""``evaluate(...)``: honest reconstruction metrics over a whole image set (no sample dropped, protocol stated).

One pass over the data, batch by batch (images never accumulate): the metric objects of
``gaussquant.eval.metrics`` keep float64 running statistics; codebook usage is counted per group over the
whole set; for Gaussian-family models the group KL (docs/method.md section 2) is summarised too (mean, min,
max, percentiles 1/50/99 and ``in_band``: the fraction of group tokens, every group of every position,
whose KL lies within the TDC target +- tolerance; the target is the rate controller's for a Gaussian VAE
and log2 K for GQ; None for a vanilla VAE, which has no target). For a GQ model
the same image metrics are computed for the continuous posterior-mean reconstruction (``"continuous"``),
so the conversion gap is measured on exactly the same images.

Distributed: under ``torchrun`` (an initialised process group) each rank takes the files ``rank::world``,
and every running statistic is all-reduced before the numbers are computed, so the result equals a
one-process run up to float summation order. Rank 0 writes the JSON and the report.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from gaussquant.convertibility import BAND_BITS, KLAccumulator
from gaussquant.distributed import rank_and_world

logger = logging.getLogger(__name__)

PSNR_PROTOCOL = "images mapped to [0, 255] and rounded to uint8, PSNR per image then averaged"


def build_eval_dataset(data: str | os.PathLike | Dataset | None, image_size: int, num_crops: int = 256
                       ) -> tuple[Dataset, str]:
    """``(dataset, description)``: a folder (center crops, every file decoded up front so a corrupt one is
    counted, not silently replaced), the bundled held-out photo crops (``None``) or a given dataset."""
    if isinstance(data, Dataset):
        return data, type(data).__name__
    if data is None:
        from gaussquant.data.default_photos import DefaultPhotoCrops

        dataset = DefaultPhotoCrops("eval", image_size=image_size, num_crops=num_crops, seed=0, flip=False)
        return dataset, (f"bundled held-out photos ({', '.join(dataset.names)}), {num_crops} seeded "
                         f"{image_size}x{image_size} crops (seed 0)")
    from gaussquant.data.folder import ImageFolderDataset

    dataset = ImageFolderDataset(data, image_size=image_size, mode="center", verify=True)
    return dataset, f"image folder {os.fspath(data)}: shorter side resized to {image_size}, center crop"


def _group_layout(config: Any) -> tuple[int, str]:
    """(d, grouping) of a Gaussian-family bottleneck config (``codebook_dim``)."""
    d = config.codebook_dim
    return int(d), str(config.grouping)


# bottleneck kinds whose encoder emits a Gaussian posterior (mean, logvar): KL and posterior-mean metrics
GAUSSIAN_KINDS = ("gaussian", "gq")


class _State:
    """Everything that streams: metric objects, usage counts, KL statistics."""

    def __init__(self, model: nn.Module, device: torch.device, metric_options: dict[str, Any]) -> None:
        from gaussquant.eval.codebook_stats import CodebookUsage
        from gaussquant.eval.metrics import ReconstructionMetrics

        b, config = model.bottleneck, model.config.bottleneck
        self.discrete = bool(b.is_discrete)
        self.gaussian = config.kind in GAUSSIAN_KINDS
        self.quantized = ReconstructionMetrics(device=device, **metric_options)
        self.continuous = ReconstructionMetrics(device=device, **metric_options) if (
            self.discrete and self.gaussian) else None
        self.usage = CodebookUsage(b.codebook_size, b.num_groups) if self.discrete else None
        self.kl = None
        self.kl_target: tuple[float, float] | None = None
        if self.gaussian:
            d, grouping = _group_layout(config)
            if config.kind == "gaussian" and config.target_bits is not None:
                self.kl_target = (float(config.target_bits), float(config.tolerance_bits))
            elif config.kind == "gq":
                self.kl_target = (math.log2(config.codebook_size), BAND_BITS)
            target, tolerance = self.kl_target or (None, BAND_BITS)
            self.kl = KLAccumulator(config.codebook_size if config.kind == "gq" else 2, d, grouping, target, tolerance)
        self.tokens_per_image: int | None = None

    @torch.no_grad()
    def update(self, model: nn.Module, x: Tensor) -> None:
        out = model.encode(x)
        self.quantized.update(x, model.decode(out.z_hat))
        if self.continuous is not None:
            self.continuous.update(x, model.decode(out.posterior.mean))
        if self.usage is not None:
            self.usage.update(out.indices)
            shape = out.indices.shape
            self.tokens_per_image = shape[2] * shape[3] if out.indices.dim() == 4 else shape[1]
        if self.kl is not None and out.posterior is not None:
            self.kl.update(out.posterior.mean, out.posterior.logvar)

    def all_reduce(self) -> None:
        for metric in (self.quantized, self.continuous, self.usage):
            if metric is not None:
                metric.all_reduce()
        if self.kl is not None:
            self.kl.all_reduce()


def _rate(model: nn.Module, tokens_per_image: int | None, image_size: int) -> dict[str, Any]:
    b = model.bottleneck
    if not b.is_discrete:
        return {"codebook_size": None, "num_groups": None, "bits_per_token": None, "bpp": None}
    bits = float(b.bits_per_token)
    return {"codebook_size": int(b.codebook_size), "num_groups": int(b.num_groups), "bits_per_token": bits,
            "tokens_per_image": tokens_per_image,
            "bpp": tokens_per_image * bits / (image_size * image_size) if tokens_per_image else None}


def _usage(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {"codebook_usage": None, "index_entropy_bits": None, "perplexity": None}
    return dict(usage.compute())


def _kl(acc: KLAccumulator | None, discrete: bool, target: tuple[float, float] | None) -> dict[str, Any] | None:
    if acc is None or acc.group_sums is None:
        return None
    r = acc.report()
    out = {"mean": r.kl_bits_mean, "min": r.kl_bits_min, "max": r.kl_bits_max, "per_group": r.kl_bits_per_group,
           "percentiles": r.kl_bits_percentiles, "num_group_tokens": r.num_group_tokens,
           "target_bits": None if target is None else target[0], "tolerance_bits": None if target is None else target[1],
           "in_band": None if target is None else r.fraction_in_band,
           "in_band_groups": None if target is None else r.fraction_groups_in_band,
           "protocol": "group KL in bits over every group of every position; percentiles from a 0.125-bit "
                       "histogram (bin centres); in_band = fraction of group tokens with |KL - target| <= "
                       "tolerance, in_band_groups = fraction of the G groups whose mean KL is in the band"}
    if discrete:
        out.update(fraction_within_half_bit_of_log2_k=r.fraction_in_band,
                   predicted_large_error_probability=r.large_error_probability)
    return out


def evaluate(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike | Dataset | None = None,
    *,
    image_size: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    use_ema: bool = False,
    num_crops: int = 256,
    json_path: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    num_grid: int = 8,
    progress: bool = False,
    metric_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate reconstructions of ``data`` by ``model``; return the JSON-safe result dict.

    Args:
        model: an Autoencoder (on its device), or a path for ``Autoencoder.from_pretrained`` (save/checkpoint/run
            dir or Hub repo id).
        data: an image folder, a Dataset of ``(3, S, S)`` tensors in [-1, 1], or None for the bundled
            held-out photo crops (``num_crops`` of them).
        image_size: crop side; default ``model.config.model.image_size`` (required for a model assembled
            without a ModelConfig, unless ``data`` is a Dataset).
        batch_size, num_workers: DataLoader settings (per rank).
        device: for a model path (``None``: CUDA when available).
        json_path / report_dir: also write the JSON / the markdown report there (rank 0).
        num_grid: images in the report's reconstruction grid (the first ones of the set).
        metric_options: keyword arguments for ``ReconstructionMetrics`` (e.g. turning a metric off).

    Returns:
        ``num_images``, ``psnr``, ``ssim``, ``ms_ssim``, ``lpips`` (= AlexNet, the paper's), ``lpips_vgg``,
        ``lpips_alex``, ``rfid``, ``fd_effnet_lite0`` (None when unavailable, see ``unavailable``),
        ``kid_inception``, ``kid_effnet_lite0`` (+ ``_std``), ``warnings`` (e.g. a Fréchet distance over fewer
        images than feature dimensions), ``codebook_usage``, ``codebook_usage_vs_reachable`` (against
        min(tokens, K)), ``num_tokens``, ``index_entropy_bits`` and ``index_entropy_bits_mm`` (Miller-Madow),
        ``perplexity`` (means over groups, with ``*_per_group``), ``joint_entropy_bits`` (whole tokens, beside
        ``bits_per_token_rate``), ``codebook_size``, ``num_groups``, ``bits_per_token``, ``bpp``, ``kl_bits``
        (Gaussian family: mean/min/max, ``percentiles`` 1/50/99, ``in_band``),
        ``continuous`` (GQ: the image metrics of the posterior-mean reconstruction) and ``protocol``.
    """
    from gaussquant.encode import load_model, resolve_device

    model_name = type(model).__name__
    if not isinstance(model, nn.Module):
        model_name = os.fspath(model)
        model = load_model(model, resolve_device(device), use_ema=use_ema)
    meta: dict[str, Any] = dict(model.metadata)
    size = image_size or (model.config.model.image_size if model.config.model is not None else None)
    if size is None and not isinstance(data, Dataset):
        raise ValueError("image_size is required when evaluating a model object on a folder or the default data")
    dataset, description = build_eval_dataset(data, int(size or 0), num_crops)
    dev = next(model.parameters()).device
    rank, world = rank_and_world()
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    try:
        state = _State(model, dev, metric_options or {})
        iterable = loader
        if progress and rank == 0:
            from tqdm import tqdm

            iterable = tqdm(loader, desc="eval", unit="batch")
        for x in iterable:
            state.update(model, x.to(dev))
        state.all_reduce()
        meta = {**meta, "weights": "ema" if use_ema else "model"}
        results = _assemble(model, state, dataset, description, model_name, meta, world)
        if rank == 0 and (json_path or report_dir):
            _write(model, results, dataset, state, json_path, report_dir, num_grid)
    finally:
        model.train(was_training)
    return results


def _assemble(model: nn.Module, state: _State, dataset: Dataset, description: str, model_name: str,
              meta: dict[str, Any], world: int) -> dict[str, Any]:
    results = dict(state.quantized.compute())
    unavailable = dict(results.pop("unavailable", {}) or {})
    if results["num_images"] != len(dataset):
        raise RuntimeError(f"evaluated {results['num_images']} images but the set has {len(dataset)}")
    first = dataset[0]
    image_size = int(first.shape[-1])
    results.update(_rate(model, state.tokens_per_image, image_size))
    results.update(_usage(state.usage))
    results["kl_bits"] = _kl(state.kl, state.discrete, state.kl_target)
    if state.continuous is not None:
        cont = dict(state.continuous.compute())
        cont.pop("unavailable", None)
        results["continuous"] = cont
    results["unavailable"] = unavailable
    results["protocol"] = {
        "data": description,
        "num_images": results["num_images"],
        "resolution": f"{image_size}x{image_size}",
        "model": model_name,
        "bottleneck": type(model.bottleneck).__name__,
        "weights": meta.get("weights", "model"),
        "training_step": meta.get("step"),
        "skipped_files": len(getattr(dataset, "skipped", {}) or {}),
        "processes": world,
        "psnr": PSNR_PROTOCOL,
        "metrics": state.quantized.protocol(),
        "continuous": "decoder applied to the posterior mean (GQ and Gaussian VAEs)" if state.continuous else None,
    }
    return results


def _write(model: nn.Module, results: dict[str, Any], dataset: Dataset, state: _State,
           json_path: str | os.PathLike | None, report_dir: str | os.PathLike | None, num_grid: int) -> None:
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2, sort_keys=True))
    if not report_dir:
        return
    from gaussquant.eval.report import write_report

    n = min(num_grid, len(dataset))
    x = torch.stack([dataset[i] for i in range(n)]).to(next(model.parameters()).device)
    with torch.no_grad():
        out = model.encode(x)
        columns, names = [x, model.decode(out.z_hat)], ["original", "reconstruction"]
        if state.continuous is not None:
            columns = [x, model.decode(out.posterior.mean), columns[1]]
            names = ["original", "continuous (posterior mean)", "quantized (GQ tokens)"]
    kl_hist = None
    if state.kl is not None and state.kl.group_sums is not None and state.discrete:
        r = state.kl.report()
        kl_hist = (r.histogram_counts, r.histogram_edges)
    usage = getattr(state.usage, "counts", None) if state.usage is not None else None
    write_report(report_dir, results, grid_columns=columns, grid_names=names, kl_histogram=kl_hist,
                 usage_counts=usage)

