"""The one protocol every bottleneck follows: the same typed output, and for discrete ones the same index API.

A bottleneck sits between encoder and decoder. It takes the encoder output ``h`` in one of two layouts,
chosen by the tensor's rank:

- channel-first ``(B, C_in, H, W)`` (UNet), or
- token-last ``(B, L, C_in)`` (ViT),

and returns a :class:`BottleneckOutput` whose ``z_hat`` has the same layout with ``latent_channels``
channels. ``C_in`` is ``2 * latent_channels`` for Gaussian bottlenecks (mean, logvar) and
``latent_channels`` for the others.

Discrete bottlenecks also expose ``codebook_size`` (K), ``num_groups`` (G), ``bits_per_token``
(= G * log2 K), ``quantize(h) -> indices`` and ``dequantize(indices) -> z_hat``. Indices are int64 with
shape ``(B, G, H, W)`` for channel-first latents and ``(B, L, G)`` for token-last ones, values in [0, K).
``dequantize(quantize(h))`` equals the eval-mode ``forward(h).z_hat`` exactly.

Train/eval mode changes noise and EMA updates only, never what a bottleneck is.

Every bottleneck keeps the configuration it was built from: the
arguments of the most derived ``__init__`` are recorded when the module is constructed (the way diffusers'
``register_to_config`` does), and :attr:`Bottleneck.config` turns them into the typed config dataclass of
``quantizers/build.py`` (``GQConfig``, ``VQConfig``, ...), so that ``build_bottleneck(b.config)`` rebuilds
the same bottleneck.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from gaussquant.quantizers.build import BottleneckConfig
    from gaussquant.quantizers.posterior import DiagonalGaussian


@dataclass
class BottleneckOutput:
    """What every bottleneck returns.

    Attributes:
        z_hat: the latent the decoder sees, same layout as the input, ``latent_channels`` channels.
        indices: int64 token indices (``(B, G, H, W)`` or ``(B, L, G)``), or None for a continuous bottleneck.
        losses: scalar loss terms as the method defines them (method-internal coefficients such as the VQ
            commitment beta or the LFQ entropy weights included), *not* yet weighted by the objective.
            Names in use: ``rate`` (Gaussian: TDC-weighted or fixed-weight KL, bits per image),
            ``codebook``, ``commitment`` (VQ), ``entropy`` (LFQ, BSQ). The objective multiplies each by its
            configured weight (``rate_weight`` for ``rate``; 1 otherwise).
        stats: detached tensors for logging (e.g. ``kl_bits_mean``, ``kl_bits_min``, ``kl_bits_max``,
            ``multiplier``, ``usage``, ``perplexity``).
        posterior: the diagonal Gaussian posterior, for Gaussian bottlenecks only.
        kl_bits: per-group KL in bits, shape ``(B, ..., G)``, for Gaussian bottlenecks only.
    """

    z_hat: Tensor
    indices: Tensor | None = None
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)
    posterior: "DiagonalGaussian | None" = None
    kl_bits: Tensor | None = None


class Bottleneck(nn.Module):
    """Base class: a continuous or discrete bottleneck.

    Subclasses set ``in_channels`` (what the encoder must emit), ``latent_channels`` (what the decoder
    receives) and ``is_discrete``, and implement ``forward``.
    """

    in_channels: int
    latent_channels: int
    is_discrete: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])  # type: ignore[method-assign]

    @property
    def init_arguments(self) -> dict[str, Any]:
        """The constructor arguments (defaults applied) this bottleneck was built with; tensors as given."""
        return dict(self.__dict__.get("_init_arguments", {}))

    @property
    def config(self) -> "BottleneckConfig":
        """The typed config this bottleneck was built from (``build_bottleneck(self.config)`` rebuilds it)."""
        from gaussquant.quantizers.build import config_of

        return config_of(self)

    def forward(self, h: Tensor) -> BottleneckOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def _recording_init(init: Any) -> Any:
    """Wrap a bottleneck ``__init__`` so that its bound arguments are kept on the module.

    The wrapper of the most derived class runs last and so wins; values are deep-copied (tensors are kept
    by reference: an explicit GQ codebook is also a registered buffer).
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = {k: v if isinstance(v, Tensor) else copy.deepcopy(v)
                     for k, v in list(bound.arguments.items())[1:]}
        self.__dict__["_init_arguments"] = arguments

    return wrapped


class DiscreteBottleneck(Bottleneck):
    """A bottleneck with a finite codebook per group: ``quantize`` / ``dequantize``."""

    is_discrete = True
    codebook_size: int
    num_groups: int

    @property
    def bits_per_token(self) -> float:
        """G * log2 K: the bits one token (spatial position or patch) carries."""
        return self.num_groups * math.log2(self.codebook_size)

    def quantize(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dequantize(self, indices: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def require_discrete(bottleneck: nn.Module | None, what: str) -> None:
    """Raise a clear TypeError unless ``bottleneck`` is discrete (the one "is this a VQ model?" check).

    ``what`` names the operation that needs indices (``tokenize``, ``encode``, ...).
    """
    if not getattr(bottleneck, "is_discrete", False):
        raise TypeError(
            f"{what} needs a discrete bottleneck; this model has {type(bottleneck).__name__}, "
            "which is continuous. Convert a Gaussian VAE to a GQ VQ-VAE first: "
            "gaussquant convert RUN --codebook-size K --out DIR (or gaussquant.to_gaussian_quant)."
        )


def check_latent(h: Tensor, channels: int, what: str) -> None:
    """Raise a clear error unless ``h`` is ``(B, channels, H, W)`` or ``(B, L, channels)``."""
    if h.dim() == 4:
        got = h.shape[1]
    elif h.dim() == 3:
        got = h.shape[-1]
    else:
        raise ValueError(
            f"{what} expects a channel-first (B, C, H, W) or token-last (B, L, C) latent; "
            f"got a tensor of shape {tuple(h.shape)}"
        )
    if got != channels:
        raise ValueError(
            f"{what} expects {channels} latent channels; got {got} (shape {tuple(h.shape)}). "
            "Check that the encoder's output channels match the bottleneck."
        )


def channels_last(h: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, H, W, C)``; token-last ``(B, L, C)`` is returned unchanged."""
    return h.permute(0, 2, 3, 1) if h.dim() == 4 else h


def channels_back(x: Tensor, like_rank: int) -> Tensor:
    """Inverse of :func:`channels_last` for a tensor whose original rank was ``like_rank``."""
    return x.permute(0, 3, 1, 2) if like_rank == 4 else x


def indices_layout(idx_last: Tensor, like_rank: int) -> Tensor:
    """Per-token indices ``(B, H, W, G)`` -> ``(B, G, H, W)``; ``(B, L, G)`` stays."""
    return idx_last.permute(0, 3, 1, 2) if like_rank == 4 else idx_last


def indices_last(indices: Tensor) -> Tensor:
    """Indices ``(B, G, H, W)`` -> ``(B, H, W, G)``; ``(B, L, G)`` stays. Validates the rank."""
    if indices.dim() == 4:
        return indices.permute(0, 2, 3, 1)
    if indices.dim() == 3:
        return indices
    raise ValueError(
        f"indices must be (B, G, H, W) or (B, L, G); got shape {tuple(indices.shape)}"
    )


def check_indices(indices: Tensor, codebook_size: int, num_groups: int) -> None:
    """Raise a clear error for non-integer, out-of-range or wrongly grouped indices."""
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor; got dtype {indices.dtype}")
    g = indices.shape[1] if indices.dim() == 4 else indices.shape[-1]
    if g != num_groups:
        raise ValueError(f"indices have {g} groups per token; this quantizer has {num_groups}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= codebook_size):
        raise ValueError(
            f"indices out of range: found values in [{int(indices.min())}, {int(indices.max())}], "
            f"but the codebook has {codebook_size} entries (valid: 0..{codebook_size - 1})"
        )
