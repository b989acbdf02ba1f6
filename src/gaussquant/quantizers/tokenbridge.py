"""TokenBridge: post-training per-channel quantization of a Gaussian VAE latent (docs/method.md section 6).

Wang et al. 2025, "Bridging Continuous and Discrete Tokens for Autoregressive Visual Generation", section 3.2.
Each latent channel of a trained Gaussian VAE is quantized independently to one of 2^b levels (b bits per
channel, one index per channel: G = C groups of size 1, K = 2^b, bits per token = C * b):

- edges: standard-normal quantiles ``Phi^-1(k / 2^b)``, k = 0..2^b, the outer two clamped to
  ``[-edge_clamp, edge_clamp]`` (TokenBridge: 3; ``None`` keeps them infinite);
- level values: the truncated-normal conditional means of the bins,
  ``E[x | a < x < b] = (phi(a) - phi(b)) / (Phi(b) - Phi(a))`` (closed form, float64);
- index: the nearest level (bisection over the midpoints between levels; ties to the lower index).

Input (``input``): ``"sample"`` by default, as TokenBridge quantizes ``posterior.sample()`` (its
reconstruction and generation code); ``"mean"`` (the posterior mean) is one option away. The sample's noise
comes from a local generator: the caller's, or else one seeded with ``noise_seed`` at every call, so the
same input batch always gives the same tokens (``quantize`` and ``forward`` agree) and no global RNG state is
touched.

Range mapping (the exact map implemented). The latent ``z`` (a posterior sample by default, or the mean) is
mapped per channel to ``u = clamp(z * channel_scale, -edge_clamp, edge_clamp)``, quantized, and decoded as
``z_hat = level / channel_scale``. ``channel_scale`` is a (C,) buffer:

- default (TokenBridge's own): ``scale_factor * std_range / quant_max`` for every channel, i.e. multiply by
  the VAE scale factor, then map [-quant_max, quant_max] = [-5, 5] linearly onto [-std_range, std_range] =
  [-3, 3] (u = 0.6 * scale_factor * z; the decoder sees level * 5/3 / scale_factor). For a unit-variance
  latent this squeezes the data to std 0.6 while the levels are placed for std 1: the mismatch TokenBridge's
  users reported. ``scale_factor`` defaults to 1 because this project's VAEs have an N(0, I) prior.
- fitted: :meth:`TokenBridgeQuantizer.fit_range` sets ``channel_scale = 1 / std_c`` from data so each
  channel is unit-variance when quantized.

TokenBridge is applied after training: z_hat carries no gradient, and train/eval mode changes nothing.
Written by hand: no library implements it.
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
from gaussquant.quantizers.posterior import DiagonalGaussian

INPUTS = ("mean", "sample")


def normal_quantile_edges(bits: int, edge_clamp: float | None = 3.0) -> Tensor:
    """The 2^b + 1 bin edges ``Phi^-1(k / 2^b)`` in float64, outer ones clamped to +-edge_clamp (or +-inf)."""
    probs = torch.arange(2**bits + 1, dtype=torch.float64) / 2**bits
    edges = torch.special.ndtri(probs)  # -inf and +inf at the ends
    if edge_clamp is not None:
        edges = edges.clamp(-edge_clamp, edge_clamp)
    return edges


def truncated_normal_means(edges: Tensor) -> Tensor:
    """E[x | a < x < b] for x ~ N(0, 1) and consecutive edges (a, b): ``(phi(a) - phi(b)) / (Phi(b) - Phi(a))``."""
    a, b = edges[:-1].double(), edges[1:].double()
    pdf = lambda t: torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731 - 0 at +-inf
    # mass from the nearer tail keeps precision for bins far from 0
    mass = torch.where(a >= 0, torch.special.ndtr(-a) - torch.special.ndtr(-b),
                       torch.special.ndtr(b) - torch.special.ndtr(a))
    return (pdf(a) - pdf(b)) / mass


class TokenBridgeQuantizer(DiscreteBottleneck):
    """Per-channel post-training quantization of a Gaussian VAE latent.

    Args:
        latent_channels: C; the encoder emits 2C channels (mean, logvar), ``in_channels = 2C``.
        codebook_bits: b bits per channel (1..16); K = 2^b levels.
        input: ``"sample"`` (reparameterised posterior sample, default, TokenBridge's) or ``"mean"``.
        noise_seed: seed of the sample's noise when no generator is passed (a fresh generator per call).
        scale_factor: TokenBridge's VAE scale factor, applied before the range map (1.0).
        quant_max: the latent range [-quant_max, quant_max] TokenBridge maps onto [-std_range, std_range] (5).
        std_range: see quant_max (3).
        edge_clamp: outer edges and inputs are clamped to +-edge_clamp (3, TokenBridge); None: no clamp.
    """

    def __init__(
        self,
        latent_channels: int,
        codebook_bits: int,
        *,
        input: str = "sample",
        noise_seed: int = 0,
        scale_factor: float = 1.0,
        quant_max: float = 5.0,
        std_range: float = 3.0,
        edge_clamp: float | None = 3.0,
    ) -> None:
        super().__init__()
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1; got {latent_channels}")
        if not 1 <= codebook_bits <= 16:
            raise ValueError(f"codebook_bits (bits per channel) must be in [1, 16]; got {codebook_bits}")
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}; got {input!r}")
        if scale_factor <= 0 or quant_max <= 0 or std_range <= 0 or (edge_clamp is not None and edge_clamp <= 0):
            raise ValueError("scale_factor, quant_max, std_range and edge_clamp must be positive")
        self.latent_channels, self.in_channels = latent_channels, 2 * latent_channels
        self.codebook_bits, self.input, self.noise_seed = codebook_bits, input, int(noise_seed)
        self.codebook_size, self.num_groups = 2**codebook_bits, latent_channels
        self.scale_factor, self.quant_max, self.std_range, self.edge_clamp = scale_factor, quant_max, std_range, edge_clamp
        edges = normal_quantile_edges(codebook_bits, edge_clamp)
        levels = truncated_normal_means(edges)
        self.register_buffer("edges", edges.float(), persistent=False)
        self.register_buffer("levels", levels.float(), persistent=False)
        self.register_buffer("midpoints", ((levels[1:] + levels[:-1]) / 2).float(), persistent=False)
        default = scale_factor * std_range / quant_max
        self.register_buffer("channel_scale", torch.full((latent_channels,), default))

    def _latent(self, h: Tensor, generator: torch.Generator | None) -> tuple[Tensor, DiagonalGaussian]:
        check_latent(h, self.in_channels, type(self).__name__)
        posterior = DiagonalGaussian.from_moments(h.float())
        if self.input == "mean":
            return channels_last(posterior.mode()), posterior
        if generator is None:
            generator = torch.Generator(device=h.device).manual_seed(self.noise_seed)
        z = posterior.sample(generator)
        return channels_last(z), posterior

    def _indices_last(self, z_last: Tensor) -> Tensor:
        u = z_last * self.channel_scale
        if self.edge_clamp is not None:
            u = u.clamp(-self.edge_clamp, self.edge_clamp)
        return torch.searchsorted(self.midpoints, u.contiguous())  # nearest level, ties to the lower one

    def _values_last(self, idx_last: Tensor) -> Tensor:
        return self.levels[idx_last] / self.channel_scale

    def forward(self, h: Tensor, generator: torch.Generator | None = None) -> BottleneckOutput:
        """``h``: ``(B, 2C, H, W)`` or ``(B, L, 2C)`` (mean, logvar) -> z_hat with C channels, float32."""
        with torch.autocast(device_type=h.device.type, enabled=False), torch.no_grad():
            z_last, posterior = self._latent(h, generator)
            idx = self._indices_last(z_last)
            z_hat = channels_back(self._values_last(idx), h.dim())
        stats = code_statistics(idx, self.codebook_size)
        return BottleneckOutput(z_hat=z_hat, indices=indices_layout(idx, h.dim()), stats=stats,
                                posterior=posterior, kl_bits=channels_last(posterior.kl_bits()).detach())

    @torch.no_grad()
    def quantize(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Indices ``(B, C, H, W)`` or ``(B, L, C)``, int64 in [0, 2^b)."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            return indices_layout(self._indices_last(self._latent(h, generator)[0]), h.dim())

    @torch.no_grad()
    def dequantize(self, indices: Tensor) -> Tensor:
        check_indices(indices, self.codebook_size, self.num_groups)
        return channels_back(self._values_last(indices_last(indices).long()), indices.dim())

    @torch.no_grad()
    def fit_range(self, latents: Tensor) -> Tensor:
        """Fit ``channel_scale = 1 / std_c`` from latents so each channel is unit-variance when quantized.

        Args:
            latents: the quantizer's input values (posterior means, or samples), ``(B, C, H, W)`` or
                ``(B, L, C)`` with C = latent_channels (not the 2C moments).
        Returns:
            the new ``channel_scale`` (C,).
        """
        check_latent(latents, self.latent_channels, "TokenBridgeQuantizer.fit_range")
        flat = channels_last(latents).reshape(-1, self.latent_channels).double()
        if flat.shape[0] < 2:
            raise ValueError("fit_range needs at least two latent vectors to estimate a standard deviation")
        std = flat.std(dim=0)
        if bool((std <= 0).any()):
            raise ValueError(f"channels {torch.nonzero(std <= 0).flatten().tolist()} are constant; cannot fit a range")
        self.channel_scale.copy_((1.0 / std).to(self.channel_scale.dtype))
        return self.channel_scale.clone()

    def extra_repr(self) -> str:
        return (f"latent_channels={self.latent_channels}, codebook_bits={self.codebook_bits}, input={self.input!r}, "
                f"scale_factor={self.scale_factor}, edge_clamp={self.edge_clamp}")
