"""Streaming reconstruction metrics with a stated protocol (every image counted, nothing stored per sample).

Every metric takes originals ``x`` and reconstructions ``x_hat``, ``(B, 3, H, W)`` in [-1, 1], keeps
float64 running sums (no per-image storage), counts the images it saw, merges with another instance
(``merge``) and sums over ranks (``all_reduce``, when torch.distributed is initialised).

Protocol (also returned by :meth:`ReconstructionMetrics.protocol`):

- both images are first mapped to [0, 255] and rounded to uint8 (what a PNG of them would hold);
- **PSNR**: per image, ``10 log10(255^2 / MSE)`` over all pixels and channels, capped at
  ``PSNR_CAP_DB = 100`` dB (an identical pair has MSE 0: it scores exactly the cap), then averaged;
- **SSIM**: pytorch-msssim ``ssim`` (11x11 Gaussian window, sigma 1.5, K = (0.01, 0.03),
  data_range 255) per image, averaged; needs images of at least 11 px;
- **MS-SSIM**: pytorch-msssim ``ms_ssim`` (5 scales, standard weights, data_range 255); needs a
  shorter side of at least 161 px, else reported as None with the reason;
- **LPIPS**: v0.1 with VGG16 (``lpips_vgg``) and AlexNet (``lpips_alex``) on the uint8-rounded images;
  ``lpips`` repeats ``lpips_alex``, the usual evaluation choice; None when the weights are missing;
- **rFID** and **fd_effnet_lite0**: see :mod:`gaussquant.eval.fid` (a warning in ``warnings`` when there
  are fewer images than feature dimensions);
- **kid_inception** / **kid_effnet_lite0** (``*_std``): the unbiased kernel distance on the same features,
  mean and std over subsets (:mod:`gaussquant.eval.kid`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gaussquant.data.transforms import to_uint8
from gaussquant.eval.codebook_stats import CodebookUsage
from gaussquant.eval.streaming import StreamingSums
from gaussquant.optional import import_optional

_msssim = import_optional("pytorch_msssim", package="pytorch-msssim", extra="eval",
                          needed_for="SSIM and MS-SSIM (gaussquant.eval.metrics)")

__all__ = ["PSNR", "SSIM", "MSSSIM", "LPIPSMetric", "CodebookUsage", "ReconstructionMetrics", "psnr_uint8"]

PSNR_CAP_DB = 100.0
SSIM_MIN_SIZE = 11
MS_SSIM_MIN_SIZE = 161


def _check_pair(x: Tensor, x_hat: Tensor) -> None:
    if x.shape != x_hat.shape or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x and x_hat must both be (B, 3, H, W); got {tuple(x.shape)} and {tuple(x_hat.shape)}")


def uint8_pair(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """Both batches mapped from [-1, 1] to [0, 255], rounded, as float32 (exact integers)."""
    _check_pair(x, x_hat)
    return to_uint8(x).float(), to_uint8(x_hat).float()


class PerImageMean(StreamingSums):
    """Mean over images of a per-image score; subclasses define :meth:`score`."""

    name = "metric"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.add_sum("total")
        self.add_sum("count", dtype=torch.int64)

    def score(self, x: Tensor, x_hat: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        """Add a batch of originals and reconstructions ``(B, 3, H, W)`` in [-1, 1]."""
        values = self.score(x, x_hat)
        self.accumulate("total", values.double().sum())
        self.accumulate("count", torch.tensor(values.shape[0]))

    @property
    def count(self) -> int:
        return int(self.sum("count"))

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError(f"{type(self).__name__}.compute() before any update")
        return float(self.sum("total")) / self.count


def psnr_uint8(x: Tensor, x_hat: Tensor) -> Tensor:
    """Per-image PSNR ``(B,)`` in dB of the uint8-rounded images, capped at ``PSNR_CAP_DB``."""
    a, b = uint8_pair(x, x_hat)
    mse = (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3))
    psnr = 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-300))
    return psnr.clamp(max=PSNR_CAP_DB)


class PSNR(PerImageMean):
    """Mean per-image PSNR (dB) on uint8-rounded images (module docstring)."""

    name = "psnr"

    def score(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return psnr_uint8(x, x_hat)


class SSIM(PerImageMean):
    """Mean per-image SSIM on uint8-rounded images, data_range 255."""

    name = "ssim"

    def score(self, x: Tensor, x_hat: Tensor) -> Tensor:
        a, b = uint8_pair(x, x_hat)
        if min(a.shape[-2:]) < SSIM_MIN_SIZE:
            raise ValueError(f"SSIM needs images of at least {SSIM_MIN_SIZE} px, got {tuple(a.shape[-2:])}")
        return _msssim.ssim(a, b, data_range=255, size_average=False)


class MSSSIM(PerImageMean):
    """Mean per-image MS-SSIM (5 scales) on uint8-rounded images; needs >= 161 px."""

    name = "ms_ssim"

    def score(self, x: Tensor, x_hat: Tensor) -> Tensor:
        a, b = uint8_pair(x, x_hat)
        if min(a.shape[-2:]) < MS_SSIM_MIN_SIZE:
            raise ValueError(
                f"MS-SSIM with 5 scales needs images of at least {MS_SSIM_MIN_SIZE} px, got {tuple(a.shape[-2:])}"
            )
        return _msssim.ms_ssim(a, b, data_range=255, size_average=False)


class LPIPSMetric(PerImageMean):
    """Mean per-image LPIPS v0.1 (``net`` = "vgg" or "alex") on uint8-rounded images.

    Raises ``MissingWeightsError`` at construction when the weights are not on disk (use
    :func:`gaussquant.losses.perceptual.lpips_available` to ask first).
    """

    def __init__(
        self, net: str = "alex", weights_dir: str | Path | None = None, device: torch.device | str = "cpu"
    ) -> None:
        from gaussquant.losses.perceptual import LPIPS

        super().__init__(device)
        self.name = f"lpips_{net}"
        self.model = LPIPS(net, weights_dir=weights_dir).to(device)

    @torch.no_grad()
    def score(self, x: Tensor, x_hat: Tensor) -> Tensor:
        a, b = uint8_pair(x, x_hat)
        device = self.model.shift.device
        return self.model(a.to(device) / 127.5 - 1.0, b.to(device) / 127.5 - 1.0)


class ReconstructionMetrics:
    """All reconstruction metrics of an evaluation, streamed together (keys in :meth:`compute`).

    Args:
        device: where the networks run and the sums live.
        lpips: compute LPIPS-VGG and LPIPS-AlexNet when their weights are on disk.
        rfid: compute rFID when ``inception-2015-12-05.pt`` is on disk.
        fd_effnet: compute ``fd_effnet_lite0``.
        ms_ssim: compute MS-SSIM when the images are large enough (>= 161 px).
        weights_dir: searched before ``$GAUSSQUANT_WEIGHTS_DIR`` and the torch hub cache.
        codebook_size, num_groups: when given, ``update(..., indices=)`` also feeds a
            :class:`~gaussquant.eval.codebook_stats.CodebookUsage`.

    A metric that cannot be computed is None in :meth:`compute` with one sentence in ``unavailable``.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        lpips: bool = True,
        rfid: bool = True,
        fd_effnet: bool = True,
        ms_ssim: bool = True,
        weights_dir: str | Path | None = None,
        codebook_size: int | None = None,
        num_groups: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.metrics: dict[str, object] = {"psnr": PSNR(self.device), "ssim": SSIM(self.device)}
        self.unavailable: dict[str, str] = {}
        if ms_ssim:
            self.metrics["ms_ssim"] = MSSSIM(self.device)
        else:
            self.unavailable["ms_ssim"] = "MS-SSIM was not requested."
        for net in ("vgg", "alex"):
            self._try(f"lpips_{net}", lpips, lambda n=net: LPIPSMetric(n, weights_dir, self.device))
        self._try("rfid", rfid, lambda: self._frechet("inception", weights_dir))
        self._try("fd_effnet_lite0", fd_effnet, lambda: self._frechet("effnet", weights_dir))
        self.codebook = None
        if codebook_size is not None:
            self.codebook = CodebookUsage(codebook_size, num_groups, self.device)

    def _frechet(self, kind: str, weights_dir: str | Path | None) -> object:
        from gaussquant.eval.fid import EffNetLite0Features, FrechetDistance, InceptionFeatures

        if kind == "inception":
            extractor = InceptionFeatures(weights_dir, self.device)
        else:
            extractor = EffNetLite0Features(self.device)
        return FrechetDistance(extractor, self.device)

    def _try(self, name: str, wanted: bool, build) -> None:
        if not wanted:
            self.unavailable[name] = f"{name} was not requested."
            return
        try:
            self.metrics[name] = build()
        except FileNotFoundError as error:  # MissingWeightsError included: reported, never faked
            self.unavailable[name] = str(error)

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, indices: Tensor | None = None) -> None:
        """Add originals and reconstructions ``(B, 3, H, W)`` in [-1, 1] (+ their token indices)."""
        _check_pair(x, x_hat)
        x, x_hat = x.to(self.device), x_hat.to(self.device)
        if "ms_ssim" in self.metrics and min(x.shape[-2:]) < MS_SSIM_MIN_SIZE and self.count == 0:
            del self.metrics["ms_ssim"]
            self.unavailable["ms_ssim"] = (
                f"MS-SSIM (5 scales) needs images of at least {MS_SSIM_MIN_SIZE} px; these are "
                f"{x.shape[-2]}x{x.shape[-1]}."
            )
        for metric in self.metrics.values():
            metric.update(x, x_hat)
        if indices is not None:
            if self.codebook is None:
                raise ValueError("indices given but ReconstructionMetrics has no codebook_size")
            self.codebook.update(indices)

    @property
    def count(self) -> int:
        """Images seen (by every metric: they are checked to agree in :meth:`compute`)."""
        return self.metrics["psnr"].count

    def merge(self, other: "ReconstructionMetrics") -> None:
        """Add the sums of another instance built with the same options."""
        if other.metrics.keys() != self.metrics.keys():
            raise ValueError(f"cannot merge metrics {sorted(other.metrics)} into {sorted(self.metrics)}")
        for name, metric in self.metrics.items():
            metric.merge(other.metrics[name])
        if self.codebook is not None and other.codebook is not None:
            self.codebook.merge(other.codebook)

    def all_reduce(self) -> None:
        """Sum every metric over all ranks (collective; no-op without torch.distributed)."""
        for metric in self.metrics.values():
            metric.all_reduce()
        if self.codebook is not None:
            self.codebook.all_reduce()

    def compute(self) -> dict[str, object]:
        """``num_images, psnr, ssim, ms_ssim, lpips_vgg, lpips_alex, lpips, rfid, fd_effnet_lite0``,
        ``unavailable`` (metric -> sentence), and the codebook keys when configured."""
        counts = {name: metric.count for name, metric in self.metrics.items()}
        if len(set(counts.values())) > 1:
            raise RuntimeError(f"metrics saw different numbers of images: {counts}")
        result: dict[str, object] = {"num_images": self.count}
        unavailable = dict(self.unavailable)
        for name in ("psnr", "ssim", "ms_ssim", "lpips_vgg", "lpips_alex", "rfid", "fd_effnet_lite0"):
            metric = self.metrics.get(name)
            try:
                result[name] = None if metric is None else metric.compute()
            except ValueError as error:  # e.g. a Fréchet distance over fewer than 2 images
                result[name], unavailable[name] = None, str(error)
        result["lpips"] = result["lpips_alex"]
        if result["lpips"] is None and "lpips_alex" in unavailable:
            unavailable["lpips"] = unavailable["lpips_alex"]
        warnings: dict[str, str] = {}
        for name, kid_name in (("rfid", "kid_inception"), ("fd_effnet_lite0", "kid_effnet_lite0")):
            metric = self.metrics.get(name)
            result[kid_name] = result[kid_name + "_std"] = result[kid_name + "_subset_size"] = None
            if metric is None or result[name] is None:
                unavailable[kid_name] = unavailable.get(name, f"{name} was not computed.")
                continue
            if metric.warning:
                warnings[name] = metric.warning
            result[kid_name], result[kid_name + "_std"], result[kid_name + "_subset_size"] = metric.kernel_distance()
        result["warnings"] = warnings
        if self.codebook is not None and self.codebook.count > 0:
            result.update(self.codebook.compute())
        result["unavailable"] = unavailable
        return result

    def protocol(self) -> dict[str, str]:
        """How each metric is computed (printed beside every number)."""
        return {
            "images": "x and x_hat mapped from [-1, 1] to [0, 255] and rounded to uint8 before every metric",
            "psnr": f"per-image 10*log10(255^2/MSE) over all pixels and channels, capped at {PSNR_CAP_DB:g} dB, averaged",
            "ssim": "pytorch-msssim ssim, 11x11 Gaussian window sigma 1.5, K=(0.01, 0.03), data_range 255, per image, averaged",
            "ms_ssim": f"pytorch-msssim ms_ssim, 5 scales, standard weights, data_range 255 (needs >= {MS_SSIM_MIN_SIZE} px)",
            "lpips": "LPIPS v0.1 (AlexNet trunk); lpips_vgg / lpips_alex: v0.1 heads on torchvision ImageNet trunks",
            "rfid": "Frechet distance of Inception-v3 pool3 (2048-d, TorchScript inception-2015-12-05.pt, resized to 299 inside), float64 running statistics, reference = the originals",
            "fd_effnet_lite0": "Frechet distance of pooled EfficientNet-Lite0 features (1280-d, 224x224 bilinear, (x-127)/128); NOT comparable to FID",
            "kid": "unbiased MMD^2, cubic polynomial kernel (x.y/d + 1)^3, on the Frechet features; mean and std over 100 random subsets of min(1000, n) images (one subset when n <= 1000), seed 0",
            "codebook_usage": "fraction of codes used at least once over the whole set, per group, mean over groups; codebook_usage_vs_reachable divides by min(tokens, K) instead of K",
            "entropy": "index entropy in bits from exact counts (plug-in) and Miller-Madow corrected (_mm), per group, mean over groups; joint_entropy_bits: entropy of whole tokens (all groups of a position), beside bits_per_token_rate",
        }
