"""FSQ: finite scalar quantization (Mentzer et al. 2023, "VQ-VAE Made Simple"; docs/method.md section 6).

Each of the ``len(levels)`` channels of a group is bounded with a shifted tanh, ``(L-1)/2 * (1+1e-3) *
tanh(z + atanh(offset / half_l)) - offset`` (offset 0.5 for even L, else 0), rounded with a straight-through
gradient and divided by ``L // 2``, so channel i takes L_i values in [-1, 1]. The implicit codebook is the
product of the levels: K = prod(levels) codes, log2 K bits per group exactly (e.g. [8, 8, 8, 5, 5, 5]:
K = 64000, log2 64000 = 15.965784284662087 bits, not 16). ``num_groups`` groups of ``len(levels)`` channels
each give one index per group.

Wraps vector-quantize-pytorch (pinned 1.32.0) ``FSQ``: its ``bound`` and mixed-radix index map are the
paper's Appendix A.1 code, so it is faithful. The wrapper adds the project protocol, int64 indices in the
(B, G, H, W) / (B, L, G) layout, and float32 quantization under *any* autocast (the library only disables
CUDA autocast). The library builds a K x d implicit codebook and computes indices in float32, exact only for
K <= 2^24; larger K per group are refused with a pointer to ``num_groups``.

Index order (``index_order``): a code's index is the mixed-radix number whose digits are the channels' level
numbers (0 .. L_i - 1). ``"first_least_significant"`` (the default; the FSQ paper's Appendix A.1, Google's
reference and vector-quantize-pytorch) gives channel 0 weight 1 and channel i weight L_0 * ... * L_{i-1};
``"first_most_significant"`` (the GQ reference's ``FSQQuantizer``) gives the last channel weight 1 and
channel i weight L_{i+1} * ... * L_{d-1}. The two number the same codes differently, so token files written
with one order decode correctly only with the same order; the codes themselves are identical.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gaussquant.optional import import_optional
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

FSQ = import_optional("vector_quantize_pytorch", package="vector-quantize-pytorch", extra="baselines",
                      needed_for="the FSQ baseline").FSQ

MAX_FSQ_CODEBOOK = 2**24  # float32 integers are exact up to here; the library's index sum is float32
INDEX_ORDERS = ("first_least_significant", "first_most_significant")


class FiniteScalarQuantizer(DiscreteBottleneck):
    """FSQ with ``levels`` per group and ``num_groups`` groups per token (latent_channels = G * len(levels)).

    Args:
        levels: levels per channel, each >= 3 (the library needs its symmetric mode for 2).
        num_groups: G, independent groups per token, each with its own index.
        index_order: ``"first_least_significant"`` (FSQ paper, default) or ``"first_most_significant"``
            (the GQ reference); see the module docstring.
    """

    def __init__(
        self,
        levels: list[int] | tuple[int, ...],
        num_groups: int = 1,
        index_order: str = "first_least_significant",
    ) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or min(levels) < 3:
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 3; got {levels}")
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1; got {num_groups}")
        if index_order not in INDEX_ORDERS:
            raise ValueError(f"FSQ index_order must be one of {INDEX_ORDERS}; got {index_order!r}")
        size = math.prod(levels)
        if size > MAX_FSQ_CODEBOOK:
            raise ValueError(
                f"FSQ levels {levels} give {size} codes per group, above {MAX_FSQ_CODEBOOK} where indices stop "
                "being exact; split the channels into more groups (num_groups) with fewer levels each"
            )
        self.levels = levels
        self.index_order = index_order
        # digit weights of each channel: the library's (first least significant) and the configured order
        little = [math.prod(levels[:i]) for i in range(len(levels))]
        big = [math.prod(levels[i + 1 :]) for i in range(len(levels))]
        self._library_basis = torch.tensor(little, dtype=torch.long)
        self._basis = torch.tensor(little if index_order == INDEX_ORDERS[0] else big, dtype=torch.long)
        self._radix = torch.tensor(levels, dtype=torch.long)
        self.codebook_size, self.num_groups = size, num_groups
        self.codebook_dim = len(levels)
        self.in_channels = self.latent_channels = num_groups * len(levels)
        # keep_num_codebooks_dim=True: library indices are (B, N, G) for any G
        self.fsq = FSQ(levels=levels, num_codebooks=num_groups, keep_num_codebooks_dim=True)

    def _tokens(self, h: Tensor) -> Tensor:
        check_latent(h, self.latent_channels, type(self).__name__)
        last = channels_last(h).float()
        return last.reshape(last.shape[0], -1, self.latent_channels)  # (B, N, C)

    def _renumber(self, indices: Tensor, source: Tensor, target: Tensor) -> Tensor:
        """Indices (..., G) in the digit weights ``source`` -> the same codes in the weights ``target``."""
        if self.index_order == INDEX_ORDERS[0]:
            return indices
        dev = indices.device
        digits = (indices[..., None] // source.to(dev)) % self._radix.to(dev)  # (..., G, d) level numbers
        return (digits * target.to(dev)).sum(dim=-1)

    def _run(self, h: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=h.device.type, enabled=False):
            codes, idx = self.fsq(self._tokens(h))
        shape = channels_last(h).shape[:-1]
        z_hat = channels_back(codes.reshape(*shape, self.latent_channels), h.dim())
        idx = self._renumber(idx.long(), self._library_basis, self._basis)
        return z_hat, indices_layout(idx.reshape(*shape, self.num_groups), h.dim())

    def forward(self, h: Tensor) -> BottleneckOutput:
        """``h`` ``(B, C, H, W)`` or ``(B, L, C)`` (unbounded) -> z_hat in [-1, 1], same layout, float32."""
        z_hat, indices = self._run(h)
        return BottleneckOutput(z_hat=z_hat, indices=indices, stats=code_statistics(indices, self.codebook_size))

    @torch.no_grad()
    def quantize(self, h: Tensor) -> Tensor:
        return self._run(h)[1]

    @torch.no_grad()
    def dequantize(self, indices: Tensor) -> Tensor:
        check_indices(indices, self.codebook_size, self.num_groups)
        last = self._renumber(indices_last(indices).long(), self._basis, self._library_basis)
        codes = self.fsq.indices_to_codes(last.reshape(-1, self.num_groups))  # (N, C) float32
        return channels_back(codes.reshape(*last.shape[:-1], self.latent_channels), indices.dim())

    def extra_repr(self) -> str:
        return (
            f"levels={self.levels}, num_groups={self.num_groups}, index_order={self.index_order}, "
            f"bits_per_token={self.bits_per_token:.6g}"
        )
