"""VQ (VQGAN): a learned codebook, nearest-neighbour assignment, straight-through (docs/method.md section 6).

van den Oord et al. 2017 (VQ-VAE) eq. 3 and Esser et al. 2021 (VQGAN). Per group of ``codebook_dim`` channels
``z`` (G = C / d groups per token share one codebook of K vectors)::

    k*   = argmin_k ||z - e_k||^2                      (blocked search, memory-bounded: search.nearest_search)
    z_q  = e_k*                                         decoder input, straight-through gradient to z
    codebook   = ||sg[z] - z_q||^2    (moves the codebook; absent from the gradient with EMA updates)
    commitment = ||z - sg[z_q]||^2    (keeps the encoder near its code)

``beta`` (0.25) placement: by default (``legacy=True``) on the *codebook* term, as taming-transformers and the
GQ reference's VQ baseline have it (taming keeps this known bug for backward compatibility); ``legacy=False``
puts it on the commitment term, as the VQ-VAE paper writes it (the corrected placement, one option away).
The returned losses already carry beta (a method-internal coefficient); the objective adds them with weight 1.

Grouping (G > 1 groups per token): ``grouping="strided"`` by default, as the reference (group g holds
channels {g, g+G, g+2G, ...}); ``"contiguous"`` as an option (quantizers/grouping.py). With one group both
are the same.

Options: ``l2_normalize`` (ViT-VQGAN: search and decode on the unit sphere), ``ema`` codebook updates
(decay, Laplace-smoothed counts; statistics all-reduced across ranks so every rank keeps the same codebook),
dead-code restarts (a code whose running usage falls below ``restart_threshold`` assignments per step is
replaced by a batch latent that rank 0 draws and broadcasts). Quantization runs in float32 even under bf16
autocast. Written by hand: vector-quantize-pytorch's VectorQuantize searches with a full N x K distance
matrix (gigabytes at K = 2^16) and returns its own tuple; the project needs the shared memory-bounded search.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from gaussquant.distributed import distributed_ready
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
from gaussquant.quantizers.grouping import check_grouping, from_groups, to_groups
from gaussquant.quantizers.code_stats import code_statistics


def _all_reduce_sum_(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks in place (a no-op without an initialised process group)."""
    if distributed_ready():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class VectorQuantizer(DiscreteBottleneck):
    """VQGAN vector quantizer over G = C / d groups sharing one codebook.

    Args:
        latent_channels: C, channels of the encoder output and of ``z_hat``.
        codebook_size: K codewords.
        codebook_dim: d, must divide C (default C: one group per token).
        beta: the 0.25 coefficient of one of the two terms.
        legacy: True (default, the reference's / taming's placement): beta on the codebook term; False: on
            the commitment term (the VQ-VAE paper's).
        grouping: ``"strided"`` (default, the reference's) or ``"contiguous"`` channel groups.
        l2_normalize: normalise latents and codewords to unit length before search and decoding.
        ema: update the codebook by exponential moving averages instead of by gradient.
        ema_decay, ema_eps: EMA decay and Laplace smoothing of the counts.
        restart_threshold: restart codes whose running usage (assignments per step, EMA with
            ``ema_decay``) is below this; 0 disables restarts.
        seed: seeds the codebook initialisation and the restart draws (local generators).
        max_memory_bytes: memory bound of the nearest search (None: the search's default).
    """

    def __init__(
        self,
        latent_channels: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        *,
        beta: float = 0.25,
        legacy: bool = True,
        grouping: str = "strided",
        l2_normalize: bool = False,
        ema: bool = False,
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        restart_threshold: float = 0.0,
        seed: int = 0,
        max_memory_bytes: int | None = None,
    ) -> None:
        super().__init__()
        d = latent_channels if codebook_dim is None else codebook_dim
        if latent_channels < 1 or d < 1 or latent_channels % d:
            raise ValueError(f"codebook_dim {d} must be >= 1 and divide latent_channels {latent_channels}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2; got {codebook_size}")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1); got {ema_decay}")
        if restart_threshold < 0:
            raise ValueError(f"restart_threshold must be >= 0; got {restart_threshold}")
        self.in_channels = self.latent_channels = latent_channels
        self.codebook_size, self.codebook_dim = codebook_size, d
        self.num_groups = check_grouping(latent_channels, d, grouping)
        self.grouping = grouping
        self.beta, self.legacy, self.l2_normalize = beta, legacy, l2_normalize
        self.ema, self.ema_decay, self.ema_eps = ema, ema_decay, ema_eps
        self.restart_threshold, self.max_memory_bytes = restart_threshold, max_memory_bytes
        self._restart_generator = torch.Generator().manual_seed(seed + 1)
        # taming's initialisation: uniform in [-1/K, 1/K]
        init = (torch.rand(codebook_size, d, generator=torch.Generator().manual_seed(seed)) * 2 - 1) / codebook_size
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(codebook_size))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # running assignments per step and code: drives dead-code restarts, checkpointed
        self.register_buffer("usage_ema", torch.ones(codebook_size))

    # -- helpers -------------------------------------------------------------------------------------------

    def _groups(self, h: Tensor) -> Tensor:
        """``h`` in either layout -> float32 ``(N, G, d)`` (normalised when ``l2_normalize``)."""
        check_latent(h, self.latent_channels, type(self).__name__)
        z = to_groups(channels_last(h).float(), self.codebook_dim, self.grouping)  # (..., G, d)
        z = z.reshape(-1, self.num_groups, self.codebook_dim)  # (N, G, d)
        return F.normalize(z, dim=-1) if self.l2_normalize else z

    def _codewords(self) -> Tensor:
        cb = self.codebook.float()
        return F.normalize(cb, dim=-1) if self.l2_normalize else cb

    def _search(self, z: Tensor, codebook: Tensor) -> Tensor:
        from gaussquant.quantizers.search import nearest_search

        idx = nearest_search(z.detach().reshape(-1, self.codebook_dim), codebook.detach(),
                             max_memory_bytes=self.max_memory_bytes)
        return idx.reshape(z.shape[:-1])

    def _to_layout(self, flat: Tensor, h: Tensor) -> Tensor:
        last = channels_last(h)
        return channels_back(flat.reshape(*last.shape[:-1], flat.shape[-1]), h.dim())

    # -- protocol ------------------------------------------------------------------------------------------

    def forward(self, h: Tensor) -> BottleneckOutput:
        """``h``: ``(B, C, H, W)`` or ``(B, L, C)`` -> z_hat (same layout, float32), indices, losses, stats."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            z = self._groups(h)
            codebook = self._codewords()
            idx = self._search(z, codebook)  # (N, G)
            z_q = F.embedding(idx, codebook)  # (N, G, d), differentiable w.r.t. the codebook
            codebook_loss = F.mse_loss(z_q, z.detach())
            commitment = F.mse_loss(z, z_q.detach())
            if self.legacy:
                codebook_loss = self.beta * codebook_loss
            else:
                commitment = self.beta * commitment
            # value exactly z_q (so dequantize(quantize(h)) matches), gradient identity to z
            z_hat = z_q.detach() + (z - z.detach())
            if self.training:
                self._update(z.detach(), idx)
        stats = code_statistics(idx, self.codebook_size)
        stats["dead_codes"] = (self.usage_ema < self.restart_threshold).float().sum()
        indices = indices_layout(idx.reshape(*channels_last(h).shape[:-1], self.num_groups), h.dim())
        return BottleneckOutput(
            z_hat=self._to_layout(from_groups(z_hat, self.grouping), h),
            indices=indices,
            losses={"codebook": codebook_loss, "commitment": commitment},
            stats={k: v.detach() for k, v in stats.items()},
        )

    @torch.no_grad()
    def quantize(self, h: Tensor) -> Tensor:
        """Indices ``(B, G, H, W)`` or ``(B, L, G)``, int64 in [0, K)."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            idx = self._search(self._groups(h), self._codewords())
        return indices_layout(idx.reshape(*channels_last(h).shape[:-1], self.num_groups), h.dim())

    @torch.no_grad()
    def dequantize(self, indices: Tensor) -> Tensor:
        """Codewords in the latent layout: ``(B, C, H, W)`` from ``(B, G, H, W)``, ``(B, L, C)`` from ``(B, L, G)``."""
        check_indices(indices, self.codebook_size, self.num_groups)
        last = indices_last(indices).long()
        z_q = from_groups(F.embedding(last, self._codewords()), self.grouping)  # (..., G, d) -> (..., C)
        return channels_back(z_q, indices.dim())

    # -- training-time codebook maintenance ------------------------------------------------------------------

    @torch.no_grad()
    def _update(self, z: Tensor, idx: Tensor) -> None:
        """EMA statistics and restarts from one training batch; ``z`` (N, G, d), ``idx`` (N, G)."""
        flat_z, flat_idx = z.reshape(-1, self.codebook_dim), idx.reshape(-1)
        counts = torch.bincount(flat_idx, minlength=self.codebook_size).float()
        _all_reduce_sum_(counts)
        self.usage_ema.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, flat_idx, flat_z)
            _all_reduce_sum_(sums)
            self.ema_count.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
            self.ema_sum.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.ema_eps) / (n + self.codebook_size * self.ema_eps) * n
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        if self.restart_threshold > 0:
            self._restart(flat_z)

    @torch.no_grad()
    def _restart(self, flat_z: Tensor) -> None:
        """Replace codes used less than ``restart_threshold`` times per step by latents rank 0 draws."""
        dead = self.usage_ema < self.restart_threshold  # identical on all ranks: usage is all-reduced
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        pick = torch.randint(flat_z.shape[0], (num_dead,), generator=self._restart_generator)
        new = flat_z[pick.to(flat_z.device)].to(self.codebook.dtype)
        if distributed_ready():
            dist.broadcast(new, src=0)
        self.codebook.data[dead] = new
        self.usage_ema[dead] = 1.0
        if self.ema:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = new

    def extra_repr(self) -> str:
        return (f"latent_channels={self.latent_channels}, codebook_size={self.codebook_size}, "
                f"codebook_dim={self.codebook_dim}, grouping={self.grouping!r}, beta={self.beta}, "
                f"legacy={self.legacy}, "
                f"l2_normalize={self.l2_normalize}, ema={self.ema}, bits_per_token={self.bits_per_token:.4g}")


__all__ = ["VectorQuantizer", "code_statistics"]
