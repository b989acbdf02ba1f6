"""Gaussian Quant: a Gaussian posterior quantized to a fixed random Gaussian codebook (docs/method.md section 4).

The encoder emits 2C channels (mean, logvar). Each token's C channels form G = C / d groups (``contiguous``
or ``strided``); every group's posterior N(mu, diag sigma^2) is mapped to one index of a shared, never
trained (K, d) codebook by :func:`~gaussquant.quantizers.search.gq_search` (rule ``log_ratio`` with
prior exponent beta, or ``nearest``); the decoder sees the codeword. ``forward`` returns
``dequantize(quantize(h))`` in train and eval mode alike: turning a Gaussian VAE into a VQ-VAE is an explicit
conversion (:meth:`GaussianQuantizer.from_bottleneck`, or ``gaussquant.convert``), never a mode switch.

Options (docs/method.md section 3): ``straight_through`` passes the gradient of z_hat to the reparameterised
sample (train mode) or the mean (eval mode) while the forward value stays the codeword exactly;
``target_bits`` adds a TDC rate loss so that a converted model can be fine-tuned.

The codebook is a persistent buffer, regenerated from its :class:`CodebookSpec` at construction (or given
explicitly), and its SHA-256 fingerprint is stored beside it in the state dict (``codebook_sha256``, 32
bytes, so it survives safetensors). Loading a state whose codebook does not match its stored fingerprint or
the codebook this quantizer was built with is an error that says so.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gaussquant.quantizers.base import (
    BottleneckOutput,
    DiscreteBottleneck,
    channels_back,
    channels_last,
    check_indices,
    check_latent,
    indices_last,
    indices_layout,
)
from gaussquant.quantizers.code_stats import code_statistics
from gaussquant.quantizers.codebooks import CodebookSpec, codebook_fingerprint
from gaussquant.quantizers.gaussian import GaussianBottleneck, RateController, kl_stats
from gaussquant.quantizers.grouping import check_grouping, from_groups, to_groups
from gaussquant.quantizers.posterior import DiagonalGaussian
from gaussquant.quantizers.search import RULES, gq_search

__all__ = ["GaussianQuantizer"]


class _StraightThrough(torch.autograd.Function):
    """Forward: the codeword, bit for bit. Backward: the gradient goes to ``z`` unchanged."""

    @staticmethod
    def forward(ctx, z_q: Tensor, z: Tensor) -> Tensor:  # type: ignore[override]
        return z_q.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        return None, grad


class GaussianQuantizer(DiscreteBottleneck):
    """GQ bottleneck: ``in_channels = 2 * latent_channels``, G = latent_channels / codebook_dim indices per token.

    Args:
        latent_channels: C, the channels the decoder receives.
        codebook_size: K >= 2 (any integer).
        codebook_dim: d, channels per group; divides C.
        rule: ``"log_ratio"`` (default) or ``"nearest"``; beta: prior exponent of log_ratio (>= 0).
        codebook_method, seed: the codebook spec (``"sobol"``, 42: the reference's).
        grouping: ``"contiguous"`` or ``"strided"``.
        straight_through: forward the codeword, backpropagate through the Gaussian sample.
        codebook: an explicit (K, d) codebook instead of the spec's (then ``spec`` is None).
        target_bits: if given, a TDC :class:`RateController` and a ``rate`` loss (for fine-tuning).
        max_memory_bytes: working-memory bound of the search (default 64 MiB).
    """

    def __init__(
        self,
        latent_channels: int,
        codebook_size: int,
        codebook_dim: int,
        *,
        rule: str = "log_ratio",
        beta: float = 1.0,
        codebook_method: str = "sobol",
        seed: int = 42,
        grouping: str = "contiguous",
        straight_through: bool = False,
        codebook: Tensor | None = None,
        target_bits: float | None = None,
        max_memory_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.num_groups = check_grouping(latent_channels, codebook_dim, grouping)
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}; got {rule!r}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be finite and >= 0; got {beta}")
        self.latent_channels = latent_channels
        self.in_channels = 2 * latent_channels
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.rule, self.beta = rule, float(beta)
        self.grouping = grouping
        self.straight_through = bool(straight_through)
        self.max_memory_bytes = max_memory_bytes
        if codebook is None:
            self.spec: CodebookSpec | None = CodebookSpec(codebook_method, codebook_size, codebook_dim, seed)
            codebook = self.spec.build()
        else:
            self.spec = None
            codebook = self._check_explicit(codebook, codebook_size, codebook_dim)
        self._fingerprint = codebook_fingerprint(codebook)
        self.register_buffer("codebook", codebook)
        self.register_buffer("codebook_sha256", torch.tensor(list(bytes.fromhex(self._fingerprint)), dtype=torch.uint8))
        self.rate_controller = None if target_bits is None else RateController(target_bits)

    @staticmethod
    def _check_explicit(codebook: Tensor, codebook_size: int, codebook_dim: int) -> Tensor:
        if not isinstance(codebook, Tensor) or codebook.shape != (codebook_size, codebook_dim):
            shape = tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__
            raise ValueError(f"codebook must be a ({codebook_size}, {codebook_dim}) tensor; got {shape}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2; got {codebook_size}")
        codebook = codebook.detach().to(dtype=torch.float32).clone().contiguous()
        if not bool(torch.isfinite(codebook).all()):
            raise ValueError("codebook contains NaN or infinite values")
        return codebook

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the float32 codebook this quantizer was built with (and must keep)."""
        return self._fingerprint

    def extra_repr(self) -> str:
        source = f"spec={self.spec}" if self.spec is not None else "explicit codebook"
        return (
            f"latent_channels={self.latent_channels}, codebook_size={self.codebook_size}, "
            f"codebook_dim={self.codebook_dim}, num_groups={self.num_groups}, rule={self.rule}, "
            f"beta={self.beta:g}, grouping={self.grouping}, straight_through={self.straight_through}, {source}, "
            f"sha256={self._fingerprint[:12]}"
        )

    @classmethod
    def from_bottleneck(
        cls, bottleneck: GaussianBottleneck, codebook_size: int, codebook_dim: int | None = None, **kwargs
    ) -> "GaussianQuantizer":
        """The GQ quantizer for a trained :class:`GaussianBottleneck`: same channels and grouping; d defaults
        to its group size. Keyword arguments are passed to the constructor."""
        if not isinstance(bottleneck, GaussianBottleneck):
            raise TypeError(f"from_bottleneck expects a GaussianBottleneck; got {type(bottleneck).__name__}")
        kwargs.setdefault("grouping", bottleneck.grouping)
        dim = bottleneck.codebook_dim if codebook_dim is None else codebook_dim
        quantizer = cls(bottleneck.latent_channels, codebook_size, dim, **kwargs)
        return quantizer.to(bottleneck_device(bottleneck))

    # -- state loading: the codebook must match its fingerprint and this quantizer's codebook ---------------
    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:  # type: ignore[override]
        # args: local_metadata, strict, missing_keys, unexpected_keys, error_msgs (torch's signature)
        error_msgs = args[-1]
        key, fp_key = prefix + "codebook", prefix + "codebook_sha256"
        if key in state_dict and state_dict[key].dtype != torch.float32:
            error_msgs.append(
                f"{key}: the codebook is stored as {state_dict[key].dtype}, but GQ codebooks are float32 (their "
                "fingerprint is of the float32 values, and rounding moves tokens); save the model in float32"
            )
        elif key in state_dict and fp_key in state_dict:
            stored = bytes(state_dict[fp_key].to(torch.uint8).tolist()).hex()
            actual = codebook_fingerprint(state_dict[key])
            if actual != stored:
                error_msgs.append(
                    f"{key}: the codebook in this state (sha256 {actual[:12]}) does not match the fingerprint "
                    f"stored with it ({stored[:12]}); the checkpoint's codebook was altered"
                )
            elif stored != self._fingerprint:
                built = f"its spec {self.spec}" if self.spec is not None else "an explicit codebook"
                error_msgs.append(
                    f"{key}: the state's codebook (sha256 {stored[:12]}) is not the codebook this quantizer was "
                    f"built with from {built} (sha256 {self._fingerprint[:12]}). Build the quantizer with the "
                    "checkpoint's codebook spec, or pass its codebook explicitly; a changed codebook generator "
                    "would change every token"
                )
        super()._load_from_state_dict(state_dict, prefix, *args)

    # -- quantize / dequantize --------------------------------------------------------------------------------
    def _groups(self, x: Tensor) -> Tensor:
        """Latent (B, C, H, W) / (B, L, C) -> (B, H, W, G, d) / (B, L, G, d)."""
        return to_groups(channels_last(x), self.codebook_dim, self.grouping)

    def _search(self, posterior: DiagonalGaussian) -> Tensor:
        """Indices in token-last layout (B, H, W, G) / (B, L, G)."""
        mean = self._groups(posterior.mean.detach())
        std = self._groups(posterior.std.detach())
        lead = mean.shape[:-1]
        flat = gq_search(
            mean.reshape(-1, self.codebook_dim),
            std.reshape(-1, self.codebook_dim),
            self.codebook,
            rule=self.rule,
            beta=self.beta,
            max_memory_bytes=self.max_memory_bytes,
        )
        return flat.reshape(lead)

    def quantize(self, h: Tensor) -> Tensor:
        """Encoder output (B, 2C, H, W) / (B, L, 2C) -> int64 indices (B, G, H, W) / (B, L, G) in [0, K)."""
        check_latent(h, self.in_channels, type(self).__name__)
        return indices_layout(self._search(DiagonalGaussian.from_moments(h)), h.dim())

    def dequantize(self, indices: Tensor) -> Tensor:
        """Indices (B, G, H, W) / (B, L, G) -> codewords in the latent layout (B, C, H, W) / (B, L, C), float32."""
        last = indices_last(indices)
        check_indices(indices, self.codebook_size, self.num_groups)
        codes = self.codebook[last.long()]  # (B, H, W, G, d)
        return channels_back(from_groups(codes, self.grouping), indices.dim())

    def update_rate_controller(self, kl_bits: Tensor) -> None:
        """One TDC step when built with ``target_bits``; a no-op otherwise."""
        if self.rate_controller is not None:
            self.rate_controller.update(kl_bits)

    def forward(self, h: Tensor, generator: torch.Generator | None = None) -> BottleneckOutput:
        """``h`` (B, 2C, H, W) / (B, L, 2C) -> z_hat = dequantize(quantize(h)) (B, C, H, W) / (B, L, C)."""
        check_latent(h, self.in_channels, type(self).__name__)
        posterior = DiagonalGaussian.from_moments(h)
        idx_last = self._search(posterior)
        indices = indices_layout(idx_last, h.dim())
        z_hat = self.dequantize(indices)
        if self.straight_through and torch.is_grad_enabled() and h.requires_grad:
            z = posterior.sample(generator) if self.training else posterior.mode()
            z_hat = _StraightThrough.apply(z_hat, z)
        kl_bits = posterior.group_kl_bits(self.codebook_dim, self.grouping)
        stats = kl_stats(kl_bits)
        stats.update(code_statistics(indices, self.codebook_size))
        losses: dict[str, Tensor] = {}
        if self.rate_controller is not None:
            losses["rate"] = self.rate_controller.loss(kl_bits)
            stats.update(self.rate_controller.stats())
        return BottleneckOutput(
            z_hat=z_hat, indices=indices, losses=losses, stats=stats, posterior=posterior, kl_bits=kl_bits
        )


def bottleneck_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")
