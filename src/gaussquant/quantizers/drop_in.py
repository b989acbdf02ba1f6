"""``GaussianQuant``: Gaussian Quant with vector-quantize-pytorch's call shape (docs/method.md sections 2-4).

For code written against vector-quantize-pytorch (``VectorQuantize``, ``FSQ``, ``LFQ``)::

    gq = GaussianQuant(dim=256, codebook_size=2**16, codebook_dim=16, heads=1)
    quantized, indices, aux_loss = gq(x)        # x (B, N, 256) -> (B, N, 256), (B, N), scalar
    codes = gq.indices_to_codes(indices)        # == quantized once quantizing

The two phases of GQ are two explicit states, never a train/eval switch:

1. Gaussian (the start): ``project_in`` maps x to the posterior moments (mean, logvar) of
   ``heads * codebook_dim`` channels; the decoder side gets the reparameterised sample (train mode) or the
   mean (eval mode) through ``project_out``; ``aux_loss = rate_weight *`` the TDC rate loss, which holds each
   group's KL at ``target_bits`` (log2 K by default); ``indices`` are the tokens the posterior would get now.
   In train mode each forward also steps the TDC multipliers (as ``VectorQuantize`` steps its EMA); pass
   ``update_rate=False`` to step them yourself with :meth:`update_rate_controller`.
2. Quantizing (after :meth:`convert`, no training needed): each group's posterior is mapped to one index of
   the fixed random Gaussian codebook (rule ``log_ratio`` by default); ``quantized`` is
   ``project_out(codewords)`` and ``aux_loss`` is zero.

The phase is part of the state dict (``_extra_state``), so a saved quantizing module reloads quantizing.

Layouts follow ``VectorQuantize``: channel-last ``(B, N, dim)`` by default, ``(B, dim, N)`` with
``channel_last=False``, ``(B, dim, H, W)`` with ``accept_image_fmap=True``, a single token ``(B, dim)``.
Indices are int64 ``(B, N)`` / ``(B, H, W)`` / ``(B,)`` for one head, with a trailing ``heads`` axis for more.

The library's own modules do the work (one implementation each): :class:`GaussianBottleneck` (posterior,
sample, per-group KL, TDC) and :class:`GaussianQuantizer` (codebook, search, dequantize).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gaussquant.quantizers.gaussian import GaussianBottleneck
from gaussquant.quantizers.gaussian_quant import GaussianQuantizer

__all__ = ["GaussianQuant"]


class GaussianQuant(nn.Module):
    """Gaussian Quant with ``quantized, indices, aux_loss = gq(x)`` and ``gq.indices_to_codes(indices)``.

    Args:
        dim: feature size of ``x`` (and of ``quantized``).
        codebook_size: K >= 2 codewords, shared by all heads.
        codebook_dim: d, channels per group (default ``dim``, as in ``VectorQuantize``).
        heads: G groups per token, one index each; the latent has ``heads * codebook_dim`` channels.
        channel_last, accept_image_fmap: input layouts, as in ``VectorQuantize``.
        target_bits: TDC target per group in bits (default log2 K, the method's choice).
        rate_weight: ``aux_loss = rate_weight * rate``; ``rate`` is in bits per sample, summed over tokens and
            groups (the library objective's 0.1 pairs it with a per-sample *summed* reconstruction loss;
            with a mean-reduced one, divide by the number of values per sample).
        rule, beta, codebook_method, seed, grouping, straight_through: as in :class:`GaussianQuantizer`.
        tolerance_bits, factor: TDC band and step, as in :class:`GaussianBottleneck`.
        return_indices: in the Gaussian phase, search the codebook to return indices (False: None, faster).
        quantizing: start in the quantizing phase (e.g. to load a converted state dict).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        codebook_dim: int | None = None,
        heads: int = 1,
        channel_last: bool = True,
        accept_image_fmap: bool = False,
        target_bits: float | None = None,
        rate_weight: float = 0.1,
        rule: str = "log_ratio",
        beta: float = 1.0,
        codebook_method: str = "sobol",
        seed: int = 42,
        grouping: str = "contiguous",
        straight_through: bool = False,
        tolerance_bits: float = 0.5,
        factor: float = 1.01,
        return_indices: bool = True,
        quantizing: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("codebook_size", codebook_size), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2; got {codebook_size}")
        if not (math.isfinite(rate_weight) and rate_weight >= 0):
            raise ValueError(f"rate_weight must be finite and >= 0; got {rate_weight}")
        self.dim, self.heads = dim, heads
        self.codebook_dim = dim if codebook_dim is None else codebook_dim
        if isinstance(self.codebook_dim, bool) or not isinstance(self.codebook_dim, int) or self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be a positive integer (or None for dim); got {codebook_dim!r}")
        latent = heads * self.codebook_dim
        self.channel_last, self.accept_image_fmap = channel_last, accept_image_fmap
        self.rate_weight = float(rate_weight)
        self.return_indices = return_indices
        self.quantizing = bool(quantizing)
        self.last_kl_bits: Tensor | None = None  # (B, N, heads), from the last Gaussian-phase call
        self.target_bits = math.log2(codebook_size) if target_bits is None else float(target_bits)
        # (B, N, dim) -> (B, N, 2 * latent): mean, then logvar
        self.project_in = nn.Linear(dim, 2 * latent)
        self.gaussian = GaussianBottleneck(
            latent, self.codebook_dim, target_bits=self.target_bits, grouping=grouping,
            tolerance_bits=tolerance_bits, factor=factor,
        )
        self.quantizer = GaussianQuantizer(
            latent, codebook_size, self.codebook_dim, rule=rule, beta=beta, codebook_method=codebook_method,
            seed=seed, grouping=grouping, straight_through=straight_through,
        )
        self.project_out = nn.Linear(latent, dim) if latent != dim else nn.Identity()

    # -- what it is --------------------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def codebook(self) -> Tensor:
        """The fixed ``(K, codebook_dim)`` Gaussian codebook."""
        return self.quantizer.codebook

    @property
    def bits_per_token(self) -> float:
        """heads * log2 K."""
        return self.quantizer.bits_per_token

    def extra_repr(self) -> str:
        phase = "quantizing" if self.quantizing else "gaussian"
        return f"dim={self.dim}, heads={self.heads}, phase={phase}, target_bits={self.target_bits:g}"

    def get_extra_state(self) -> Tensor:
        return torch.tensor(self.quantizing)

    def set_extra_state(self, state: Tensor) -> None:
        self.quantizing = bool(state)

    def convert(self) -> "GaussianQuant":
        """The explicit conversion of docs/method.md section 4: from now on ``forward`` quantizes. Returns self."""
        self.quantizing = True
        return self

    def update_rate_controller(self, kl_bits: Tensor | None = None) -> None:
        """One TDC step (after ``forward(x, update_rate=False)``) from per-group KLs in bits ``(B, N, heads)``;
        None: those of the last Gaussian-phase call (``self.last_kl_bits``)."""
        kl_bits = self.last_kl_bits if kl_bits is None else kl_bits
        if kl_bits is None:
            raise RuntimeError("no KL to step the TDC multipliers with: call the module in its Gaussian phase first")
        self.gaussian.update_rate_controller(kl_bits.detach())

    # -- layouts -----------------------------------------------------------------------------------------------
    def _to_tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """Any accepted layout -> ``(B, N, dim)`` and the spatial shape to restore (``()`` for one token)."""
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a float tensor; got {type(x).__name__} {getattr(x, 'dtype', '')}")
        if self.accept_image_fmap:
            if x.dim() != 4:
                raise ValueError(f"accept_image_fmap=True expects (B, dim, H, W); got shape {tuple(x.shape)}")
            spatial = tuple(x.shape[2:])
            x = x.flatten(2).transpose(1, 2)  # (B, dim, H, W) -> (B, H*W, dim)
        elif x.dim() == 2:
            spatial, x = (), x[:, None]  # one token: (B, dim) -> (B, 1, dim)
        elif x.dim() == 3:
            x = x if self.channel_last else x.transpose(1, 2)  # (B, dim, N) -> (B, N, dim)
            spatial = (x.shape[1],)
        else:
            raise ValueError(
                f"x must be (B, N, dim), (B, dim) or, with accept_image_fmap=True, (B, dim, H, W); "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected feature size dim={self.dim}; got {x.shape[-1]} (input shape {tuple(x.shape)})")
        return x, spatial

    def _from_tokens(self, y: Tensor, spatial: tuple[int, ...]) -> Tensor:
        """``(B, N, dim)`` -> the input's layout."""
        if self.accept_image_fmap:
            return y.transpose(1, 2).unflatten(2, spatial)  # (B, dim, H, W)
        if not spatial:
            return y[:, 0]
        return y if self.channel_last else y.transpose(1, 2)

    def _indices_out(self, idx: Tensor, spatial: tuple[int, ...]) -> Tensor:
        """``(B, N, G)`` -> ``(B, *spatial[, G])`` (the heads axis only for heads > 1)."""
        idx = idx.reshape(idx.shape[0], *spatial, self.heads)
        return idx[..., 0] if self.heads == 1 else idx

    # -- the call ----------------------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, update_rate: bool | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``x`` -> ``(quantized, indices, aux_loss)`` in vector-quantize-pytorch's layout.

        ``update_rate``: step the TDC multipliers after this call (default: in train mode, Gaussian phase).
        ``generator``: for the posterior sample of the Gaussian phase in train mode.
        """
        tokens, spatial = self._to_tokens(x)
        h = self.project_in(tokens).float()  # (B, N, 2 * latent), the quantizers work in float32
        if self.quantizing:
            out = self.quantizer(h, generator=generator)
            aux_loss = h.new_zeros(())
            indices: Tensor | None = out.indices
        else:
            out = self.gaussian(h, generator=generator)
            aux_loss = self.rate_weight * out.losses["rate"]
            self.last_kl_bits = out.kl_bits.detach()
            if (self.training if update_rate is None else update_rate):
                self.gaussian.update_rate_controller(out.kl_bits.detach())
            indices = None
            if self.return_indices:
                with torch.no_grad():
                    indices = self.quantizer.quantize(h.detach())
        quantized = self._from_tokens(self.project_out(out.z_hat), spatial)
        return quantized, None if indices is None else self._indices_out(indices, spatial), aux_loss

    def indices_to_codes(self, indices: Tensor, project_out: bool = True) -> Tensor:
        """Indices as ``forward`` returns them -> codes in the input layout (``project_out`` applied, as
        ``FSQ``/``LFQ`` do; False gives the raw ``heads * codebook_dim`` codeword channels)."""
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor; got {getattr(indices, 'dtype', type(indices).__name__)}")
        idx = indices if self.heads > 1 else indices[..., None]
        if idx.dim() < 2 or idx.shape[-1] != self.heads:
            raise ValueError(
                f"indices of a {self.heads}-head GaussianQuant end with a heads axis of {self.heads}"
                if self.heads > 1 else f"indices must be at least (B,); got shape {tuple(indices.shape)}"
            )
        batch, spatial = idx.shape[0], tuple(idx.shape[1:-1])
        if self.accept_image_fmap and len(spatial) != 2:
            raise ValueError(f"accept_image_fmap=True expects indices (B, H, W[, heads]); got {tuple(indices.shape)}")
        z = self.quantizer.dequantize(idx.reshape(batch, -1, self.heads).long())  # (B, N, latent), range-checked
        codes = self.project_out(z) if project_out else z
        return self._from_tokens(codes, spatial)

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """``VectorQuantize``'s name for :meth:`indices_to_codes` (with ``project_out``)."""
        return self.indices_to_codes(indices)
