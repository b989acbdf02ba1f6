"""Fixed Gaussian codebooks of Gaussian Quant, regenerated from a spec (docs/method.md section 4).

A codebook is K x d, never trained, and fully determined by (method, K, d, seed):

- ``sobol`` (the reference's default, seed 42): the first K points of PyTorch's scrambled Sobol sequence,
  ``SobolEngine(d, scramble=True, seed=seed).draw(K)`` in float32, mapped through the standard normal
  inverse CDF evaluated in float64 on those float32 values (``torch.special.ndtri``), then cast to float32.
  This reproduces the reference's codebook bit for bit; drawing the Sobol points in float64 instead moves
  codewords by up to 4e-3 and changes tokens.
- ``normal``: K x d i.i.d. N(0, 1) from a local ``torch.Generator`` seeded with ``seed`` (the paper's words).

Edge case of ``sobol``: the scrambled points are multiples of 2^-30 in [0, 1), but a point above
1 - 2^-25 rounds to exactly 1.0 in float32 (and a point can be exactly 0), where the inverse CDF is
infinite; the reference would then hold an infinite codeword that breaks every search. We clamp such values
to the nearest float32 strictly inside (0, 1) (1 - 2^-24 and 2^-30, i.e. codewords near +5.3 / -6.1) and log
a warning saying how many were clamped; no paper configuration (K = 2^16, d in {1, 4, 8, 16}, seed 42)
contains one, so those codebooks are unaffected.

Checkpoints store the codebook together with :func:`codebook_fingerprint` (SHA-256 of its float32
little-endian bytes), so that a changed generator is detected rather than silently used.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = ["CODEBOOK_METHODS", "CodebookSpec", "gaussian_codebook", "codebook_fingerprint"]

logger = logging.getLogger(__name__)

CODEBOOK_METHODS = ("sobol", "normal")
_UNIFORM_LOW = 2.0**-30  # the Sobol grid step: the smallest positive value the engine can produce
_UNIFORM_HIGH = 1.0 - 2.0**-24  # the largest float32 below 1


def _check_sizes(codebook_size: int, codebook_dim: int) -> None:
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 2:
        raise ValueError(f"codebook_size must be an integer K >= 2; got {codebook_size!r}")
    if isinstance(codebook_dim, bool) or not isinstance(codebook_dim, int) or codebook_dim < 1:
        raise ValueError(f"codebook_dim must be a positive integer d; got {codebook_dim!r}")


# peak bytes per codebook entry while building: float32 draw, a mask, the float64 transform and the result
_BUILD_BYTES_PER_VALUE = 25


def _check_memory(codebook_size: int, codebook_dim: int) -> None:
    """Estimate the memory a build needs before allocating, so that a huge K is one clear sentence."""
    need = _BUILD_BYTES_PER_VALUE * codebook_size * codebook_dim
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not available on this platform: let the build try
        return
    if need > total:
        raise ValueError(
            f"a codebook of K={codebook_size} codewords of dimension {codebook_dim} needs about "
            f"{need / 2**30:.1f} GiB of memory to build (estimated: {_BUILD_BYTES_PER_VALUE} bytes per value), "
            f"more than this machine's {total / 2**30:.1f} GiB; choose a smaller codebook size"
        )


def _sobol_codebook(codebook_size: int, codebook_dim: int, seed: int) -> Tensor:
    if codebook_dim > torch.quasirandom.SobolEngine.MAXDIM:
        raise ValueError(
            f"the sobol codebook supports codebook_dim <= {torch.quasirandom.SobolEngine.MAXDIM}; "
            f"got {codebook_dim}. Use method='normal' for larger d."
        )
    engine = torch.quasirandom.SobolEngine(codebook_dim, scramble=True, seed=seed)
    uniform = engine.draw(codebook_size, dtype=torch.float32)  # float32 on purpose: see module docstring
    outside = (uniform <= 0) | (uniform >= 1)
    if bool(outside.any()):
        logger.warning(
            "sobol codebook (K=%d, d=%d, seed=%d): %d Sobol value(s) round to 0 or 1 in float32; clamped "
            "into (0, 1) so that no codeword is infinite",
            codebook_size, codebook_dim, seed, int(outside.sum()),
        )
        uniform = uniform.clamp(_UNIFORM_LOW, _UNIFORM_HIGH)
    return torch.special.ndtri(uniform.double()).float()


def gaussian_codebook(codebook_size: int, codebook_dim: int, *, method: str = "sobol", seed: int = 42) -> Tensor:
    """The fixed (K, d) float32 codebook of standard-Gaussian codewords for a spec.

    Args:
        codebook_size: K >= 2 (any integer; not only powers of two).
        codebook_dim: d >= 1 (``sobol`` supports d <= 21201, PyTorch's Sobol limit).
        method: ``"sobol"`` (reference default) or ``"normal"``.
        seed: scrambling seed (``sobol``) or generator seed (``normal``).

    Returns:
        (K, d) float32 CPU tensor; values are finite, roughly N(0, 1) per entry.
    """
    _check_sizes(codebook_size, codebook_dim)
    _check_memory(codebook_size, codebook_dim)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if method == "sobol":
        return _sobol_codebook(codebook_size, codebook_dim, seed)
    if method == "normal":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(codebook_size, codebook_dim, generator=generator, dtype=torch.float32)
    raise ValueError(f"codebook method must be one of {CODEBOOK_METHODS}; got {method!r}")


def codebook_fingerprint(codebook: Tensor) -> str:
    """SHA-256 hex digest of the codebook's float32, C-contiguous, little-endian bytes."""
    if not isinstance(codebook, Tensor) or not codebook.is_floating_point():
        raise TypeError(f"codebook must be a floating-point tensor; got {type(codebook).__name__}")
    array = codebook.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return hashlib.sha256(array.astype("<f4", copy=False).tobytes()).hexdigest()


@dataclass(frozen=True)
class CodebookSpec:
    """What determines a codebook: ``gaussian_codebook(codebook_size, codebook_dim, method=, seed=)``."""

    method: str = "sobol"
    codebook_size: int = 2**16
    codebook_dim: int = 16
    seed: int = 42

    def __post_init__(self) -> None:
        _check_sizes(self.codebook_size, self.codebook_dim)
        if self.method not in CODEBOOK_METHODS:
            raise ValueError(f"codebook method must be one of {CODEBOOK_METHODS}; got {self.method!r}")

    def build(self) -> Tensor:
        """The (K, d) float32 codebook of this spec."""
        return gaussian_codebook(self.codebook_size, self.codebook_dim, method=self.method, seed=self.seed)

    def to_dict(self) -> dict:
        return asdict(self)
