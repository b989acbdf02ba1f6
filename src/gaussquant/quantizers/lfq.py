"""LFQ: lookup-free quantization (Yu et al. 2023, MAGVIT-v2, section 3.1; docs/method.md section 6).

Each channel is quantized to its sign, ``q = +1 if z > 0 else -1``; ``num_groups`` codebooks of
``codebook_bits`` channels each give one index per group, K = 2^codebook_bits, bits per token
= num_groups * codebook_bits exactly. Index bits are most-significant first within a group.

Entropy penalty (MAGVIT-v2 eq. 5) with soft assignments ``p(k | z) = softmax_k(2 * inv_temperature * <z, c_k>)``
over each group's 2^bits codes: ``entropy = entropy_weight * (mean_tokens H(p) - diversity_gamma * H(mean_tokens p))``;
``commitment = commitment_weight * ||z - sg[q]||^2`` (mean). Reference weights at 16 bits/token: 2 codebooks
x 8 bits, entropy 0.1, commitment 0.025, temperature 0.01 (inv_temperature 100).

Codebook entropy, ``codebook_entropy``: ``"pooled"`` (default, the GQ reference's LFQ baseline) averages the
soft assignments over the tokens *and* the G codebooks into one distribution over the 2^bits codes and takes
its entropy; ``"per_codebook"`` (one option away) takes each codebook's entropy and averages them, as the
library does. Pooling only asks the codes to be used evenly across both codebooks together.

Wraps vector-quantize-pytorch (pinned 1.32.0) ``LFQ`` for the quantization, the per-sample entropy, the
per-codebook entropy and the commitment term. The wrapper adds: float32 quantization under *any* autocast
(the library disables only CUDA autocast, so on CPU its entropy einsum would run in bf16), the pooled codebook
entropy (computed here from the same soft assignments, the pooled distribution averaged across ranks like the
library's), and the protocol (int64 indices, losses as named terms).
"""

from __future__ import annotations

import torch
import torch.distributed.nn as dist_nn
from torch import Tensor

from gaussquant.distributed import rank_and_world
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

LFQ = import_optional("vector_quantize_pytorch", package="vector-quantize-pytorch", extra="baselines",
                      needed_for="the LFQ baseline").LFQ

CODEBOOK_ENTROPIES = ("pooled", "per_codebook")
MAX_LFQ_BITS = 16  # the entropy term materialises (tokens x 2^bits) probabilities per group


class LookupFreeQuantizer(DiscreteBottleneck):
    """LFQ with ``num_groups`` codebooks of ``codebook_bits`` sign channels (latent_channels = G * bits).

    Args:
        codebook_bits: channels (bits) per group; K = 2^codebook_bits.
        num_groups: G codebooks per token.
        entropy_weight: weight of the entropy penalty inside ``losses["entropy"]`` (0.1).
        commitment_weight: weight of ``losses["commitment"]`` (0.025).
        diversity_gamma: weight of the codebook-entropy (batch) term relative to the per-sample term (1).
        inv_temperature: inverse temperature of the soft assignment (100).
        codebook_entropy: ``"pooled"`` (default, the reference's) or ``"per_codebook"`` (the library's).
    """

    def __init__(
        self,
        codebook_bits: int,
        num_groups: int = 1,
        *,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.025,
        diversity_gamma: float = 1.0,
        inv_temperature: float = 100.0,
        codebook_entropy: str = "pooled",
    ) -> None:
        super().__init__()
        if not 1 <= codebook_bits <= MAX_LFQ_BITS:
            raise ValueError(f"codebook_bits must be in [1, {MAX_LFQ_BITS}]; got {codebook_bits}. "
                             "Use more groups (num_groups) for higher rates.")
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1; got {num_groups}")
        if codebook_entropy not in CODEBOOK_ENTROPIES:
            raise ValueError(f"codebook_entropy must be one of {CODEBOOK_ENTROPIES}; got {codebook_entropy!r}")
        self.codebook_entropy = codebook_entropy
        self.codebook_bits, self.num_groups = codebook_bits, num_groups
        self.codebook_size = 2**codebook_bits
        self.in_channels = self.latent_channels = codebook_bits * num_groups
        self.entropy_weight, self.commitment_weight = entropy_weight, commitment_weight
        self.inv_temperature = inv_temperature
        self.lfq = LFQ(
            dim=self.latent_channels, codebook_size=self.codebook_size, num_codebooks=num_groups,
            keep_num_codebooks_dim=True, entropy_loss_weight=entropy_weight,
            commitment_loss_weight=commitment_weight, diversity_gamma=diversity_gamma, has_projections=False,
        )

    def _run(self, h: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        check_latent(h, self.latent_channels, type(self).__name__)
        last = channels_last(h)
        with torch.autocast(device_type=h.device.type, enabled=False):
            tokens = last.float().reshape(last.shape[0], -1, self.latent_channels)
            (codes, idx, _), parts = self.lfq(tokens, inv_temperature=self.inv_temperature,
                                              return_loss_breakdown=True)
        losses = {}
        if self.training:
            batch_entropy = parts.batch_entropy
            if self.codebook_entropy == "pooled":
                batch_entropy = self._pooled_entropy(tokens)
            losses["entropy"] = self.entropy_weight * (parts.per_sample_entropy
                                                      - self.lfq.diversity_gamma * batch_entropy)
            losses["commitment"] = self.commitment_weight * parts.commitment
        else:  # the library computes no auxiliary terms in eval mode
            zero = codes.new_zeros(())
            losses = {"entropy": zero, "commitment": zero}
        z_hat = channels_back(codes.reshape(*last.shape[:-1], self.latent_channels), h.dim())
        indices = indices_layout(idx.long().reshape(*last.shape[:-1], self.num_groups), h.dim())
        return z_hat, indices, losses

    def _pooled_entropy(self, tokens: Tensor) -> Tensor:
        """Entropy (nats) of the soft assignments averaged over tokens and codebooks. ``tokens``: (B, N, C) f32."""
        z = tokens.reshape(-1, self.num_groups, self.codebook_bits)  # (T, G, bits)
        codes = self.lfq.codebook.float()  # (K, bits), entries +-1
        # p(k | z) = softmax_k(2 * inv_temperature * <z, c_k>), as the library's per-codebook term
        probs = torch.softmax(2.0 * self.inv_temperature * z @ codes.T, dim=-1)  # (T, G, K)
        pooled = probs.reshape(-1, self.codebook_size).mean(0)  # (K,)
        world = rank_and_world()[1]
        if world > 1:
            pooled = dist_nn.all_reduce(pooled) / world
        return -(pooled * pooled.clamp_min(1e-5).log()).sum()

    def forward(self, h: Tensor) -> BottleneckOutput:
        """``h`` ``(B, C, H, W)`` or ``(B, L, C)`` -> z_hat in {-1, +1}, same layout, float32."""
        z_hat, indices, losses = self._run(h)
        return BottleneckOutput(z_hat=z_hat, indices=indices, losses=losses,
                                stats=code_statistics(indices, self.codebook_size))

    @torch.no_grad()
    def quantize(self, h: Tensor) -> Tensor:
        """Sign bits packed most-significant first: ``(B, G, H, W)`` or ``(B, L, G)`` int64."""
        check_latent(h, self.latent_channels, type(self).__name__)
        with torch.autocast(device_type=h.device.type, enabled=False):
            bits = channels_last(h).float().unflatten(-1, (self.num_groups, self.codebook_bits)) > 0
        weights = 2 ** torch.arange(self.codebook_bits - 1, -1, -1, device=h.device)
        return indices_layout((bits.long() * weights).sum(-1), h.dim())

    @torch.no_grad()
    def dequantize(self, indices: Tensor) -> Tensor:
        check_indices(indices, self.codebook_size, self.num_groups)
        last = indices_last(indices).long()
        codes = self.lfq.indices_to_codes(last.reshape(1, -1, self.num_groups))  # (1, N, C)
        return channels_back(codes.reshape(*last.shape[:-1], self.latent_channels).float(), indices.dim())

    def extra_repr(self) -> str:
        return (f"codebook_bits={self.codebook_bits}, num_groups={self.num_groups}, "
                f"entropy_weight={self.entropy_weight}, commitment_weight={self.commitment_weight}, "
                f"codebook_entropy={self.codebook_entropy!r}")
