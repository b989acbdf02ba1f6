"""Windowed encoding and decoding of images larger than the crops a model was trained on.

Why: a convolutional model that normalises over space (the tiny UNet's GroupNorm has one channel per group
at its first level, so it normalises every feature channel over the whole image) sees, on a 512-pixel
photo, statistics it never saw on its 48-pixel training crops, and its colours drift (a cast of tens of
uint8 levels; docs/demo_model.md measures 16.35 dB in one pass against 24.24 dB in windows). Running the
encoder and the decoder on overlapping windows of about the training size keeps the statistics it was
trained on.

The token grid is still that of the whole image at full resolution (one token per f x f pixels): windows
of ``window = core + 2 margin`` pixels (clipped at the image's border) start every ``core`` pixels, and where
two overlap (``2 margin``) their outputs, latents or pixels, are cross-faded linearly (the weights of every
output pixel sum to 1), so neither a seam nor a step in colour shows where one window meets the next. An
image no larger than one window is run in one plain pass. The quantizer works token by token, so only the
encoder and the decoder are windowed: ``tiled_tokenize`` = windowed encoder + ``bottleneck.quantize``,
``tiled_detokenize`` = ``bottleneck.dequantize`` + windowed decoder.

A model may recommend a window (``ModelConfig.tile``, e.g. 64 for the bundled demo model); ``gaussquant
encode`` records the tiling it used in the token file so that ``gaussquant decode`` uses the same by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


AUTO = "auto"  # resolve_tiling: the token file's record, else the model's recommendation


@dataclass(frozen=True)
class Tiling:
    """Windows of ``window`` pixels overlapping their neighbours by ``margin`` pixels on each side.

    Both are multiples of the model's downsampling factor f (:meth:`check`); ``core = window - 2 margin``
    pixels of each window are its own, the margins are cross-faded with the neighbours'.
    """

    window: int
    margin: int

    @property
    def core(self) -> int:
        return self.window - 2 * self.margin

    def check(self, downsample_factor: int, what: str = "--tile") -> "Tiling":
        """Return self, or raise ValueError when the sizes do not fit a model of factor ``downsample_factor``."""
        f = int(downsample_factor)
        if self.window < 1 or self.margin < 0:
            raise ValueError(f"{what}: the window must be > 0 pixels and the margin >= 0; got window "
                             f"{self.window}, margin {self.margin}")
        if self.window % f or self.margin % f:
            raise ValueError(
                f"{what}: window {self.window} and margin {self.margin} must be multiples of the model's "
                f"downsampling factor {f} (one token per {f}x{f} pixels); try a window of "
                f"{max(f, self.window // f * f)} pixels"
            )
        if self.core < f:
            raise ValueError(f"{what}: the margins (2 x {self.margin} px) leave no core in a {self.window}-px "
                             f"window; use a margin below {self.window // 2} pixels")
        return self


def default_margin(window: int, downsample_factor: int) -> int:
    """The margin used when none is given: an eighth of the window, rounded down to a multiple of f
    (64 px -> 8 px at f = 4)."""
    f = int(downsample_factor)
    return (window // 8) // f * f


def make_tiling(window: int | None, margin: int | None, downsample_factor: int) -> Tiling | None:
    """``Tiling(window, margin or default_margin)`` checked against f; None when ``window`` is None or 0
    (one pass over the whole image)."""
    if not window:
        if margin:
            raise ValueError("--tile-margin needs --tile SIZE (a window); with one pass there is no margin")
        return None
    margin = default_margin(window, downsample_factor) if margin is None else margin
    return Tiling(int(window), int(margin)).check(downsample_factor)


def recommended_tiling(model: nn.Module) -> Tiling | None:
    """The tiling a model recommends (``model.config.model.tile`` with its default margin), else None."""
    model_config = getattr(model, "model_config", None)
    tile = getattr(model_config, "tile", None)
    if not tile:
        return None
    return make_tiling(int(tile), None, int(model.downsample_factor))


def resolve_tiling(model: nn.Module, tiling: "Tiling | None | str",
                   recorded: tuple[int, int] | None = None) -> Tiling | None:
    """The tiling to run ``model`` with.

    Args:
        tiling: a :class:`Tiling` (checked against the model), None (one pass), or ``"auto"``: the
            ``recorded`` tiling of a token file when there is one, else the model's recommendation
            (:func:`recommended_tiling`), else one pass.
        recorded: ``TokenFile.tiling``: ``(window, margin)``, ``(0, 0)`` for one pass, None if not recorded.
    """
    if tiling is None or isinstance(tiling, Tiling):
        return None if tiling is None else tiling.check(model.downsample_factor)
    if tiling != AUTO:
        raise ValueError(f"tiling must be a Tiling, None (one pass) or {AUTO!r}; got {tiling!r}")
    if recorded is not None:
        window, margin = recorded
        return None if window == 0 else Tiling(window, margin).check(model.downsample_factor, "the token file's tiling")
    return recommended_tiling(model)


def tiling_record(tiling: Tiling | None) -> tuple[int, int]:
    """What a token file records: ``(window, margin)``, or ``(0, 0)`` for one pass."""
    return (0, 0) if tiling is None else (tiling.window, tiling.margin)


def _spans(length: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """``(window_start, window_stop, core_start, core_stop)`` along one axis, all in input units."""
    spans = []
    for start in range(0, length, core):
        stop = min(length, start + core)
        spans.append((max(0, start - margin), min(length, stop + margin), start, stop))
    return spans


def _ramp(start: int, stop: int, length: int, fade: float, device: torch.device) -> Tensor:
    """Blending weights of a window ``[start, stop)`` of an axis of ``length``: 1 inside, falling linearly
    to 0 over ``fade`` units at a side that borders another window (not at the image's own border)."""
    pos = torch.arange(start, stop, device=device, dtype=torch.float32) + 0.5
    w = torch.ones(stop - start, device=device)
    if fade > 0 and start > 0:
        w = torch.minimum(w, (pos - start) / fade)
    if fade > 0 and stop < length:
        w = torch.minimum(w, (stop - pos) / fade)
    return w.clamp_min(1e-3)


def _tiled(fn: Callable[[Tensor], Tensor], x: Tensor, core: int, margin: int, scale: float) -> Tensor:
    """Apply ``fn`` (output size = input size x ``scale``) to overlapping windows of ``x`` (B, C, H, W)
    and blend the outputs: neighbouring windows overlap by ``2 margin`` and cross-fade linearly there, so
    no seam shows where one window's statistics meet the next one's. One window covering ``x``: ``fn(x)``."""
    height, width = x.shape[-2:]
    if height <= core + 2 * margin and width <= core + 2 * margin:
        return fn(x)
    out_h, out_w = round(height * scale), round(width * scale)
    fade = 2 * margin * scale
    out = total = None
    for wy0, wy1, _, _ in _spans(height, core, margin):
        for wx0, wx1, _, _ in _spans(width, core, margin):
            y = fn(x[..., wy0:wy1, wx0:wx1])
            if y.dim() != 4:
                raise ValueError(
                    f"windowed coding needs a model whose latents are (B, C, h, w) grids (a convolutional "
                    f"model); this one gives shape {tuple(y.shape)}: use one pass (--tile none)"
                )
            if out is None:
                out = y.new_zeros((*y.shape[:2], out_h, out_w))
                total = y.new_zeros((out_h, out_w))
            oy0, oy1, ox0, ox1 = round(wy0 * scale), round(wy1 * scale), round(wx0 * scale), round(wx1 * scale)
            weight = torch.outer(_ramp(oy0, oy1, out_h, fade, y.device), _ramp(ox0, ox1, out_w, fade, y.device))
            out[..., oy0:oy1, ox0:ox1] += y * weight  # (B, C, window_h, window_w) * (window_h, window_w)
            total[oy0:oy1, ox0:ox1] += weight
    assert out is not None and total is not None
    return out / total


def _check_sizes(model: nn.Module, core: int, margin: int) -> int:
    f = int(model.downsample_factor)
    if core % f or margin % f or core < f:
        raise ValueError(f"core {core} and margin {margin} must be multiples of the downsampling factor {f} "
                         "(core at least f)")
    return f


@torch.no_grad()
def tiled_encoder(model: nn.Module, x: Tensor, core: int = 48, margin: int = 8) -> Tensor:
    """The encoder output ``(B, C_enc, H/f, W/f)`` of images ``(B, 3, H, W)`` in [-1, 1], window by window.

    ``core`` and ``margin`` are in pixels and must be multiples of the model's f (as must H and W).
    An image within one window (``core + 2 margin``) is the plain ``model.encoder(x)``.
    """
    _check_sizes(model, core, margin)
    return _tiled(model.encoder, model.check_images(x), core, margin, 1.0 / model.downsample_factor)


@torch.no_grad()
def tiled_decode(model: nn.Module, z: Tensor, core: int = 48, margin: int = 8) -> Tensor:
    """Images ``(B, 3, f h, f w)`` from latents ``(B, C, h, w)``, window by window (sizes in pixels)."""
    f = _check_sizes(model, core, margin)
    return _tiled(model.decode, z, core // f, margin // f, float(f))


@torch.no_grad()
def tiled_tokenize(model: nn.Module, x: Tensor, tiling: Tiling | None) -> Tensor:
    """``model.tokenize(x)`` with the encoder run in ``tiling``'s windows (None: one pass).

    Args:
        model: an Autoencoder with a discrete bottleneck.
        x: images ``(B, 3, H, W)`` in [-1, 1], H and W multiples of f.
    Returns:
        int64 indices ``(B, G, H/f, W/f)``, the whole image's token grid.
    """
    if tiling is None:
        return model.tokenize(x)
    from gaussquant.models.autoencoder import check_pixel_range
    from gaussquant.quantizers.base import require_discrete

    require_discrete(model.bottleneck, "tokenize")
    tiling.check(model.downsample_factor)
    x = model.check_images(x)
    check_pixel_range(x)
    return model.bottleneck.quantize(tiled_encoder(model, x, tiling.core, tiling.margin))


@torch.no_grad()
def tiled_detokenize(model: nn.Module, indices: Tensor, tiling: Tiling | None) -> Tensor:
    """``model.detokenize(indices)`` with the decoder run in ``tiling``'s windows (None: one pass):
    indices ``(B, G, h, w)`` -> images ``(B, 3, f h, f w)``."""
    if tiling is None:
        return model.detokenize(indices)
    from gaussquant.quantizers.base import require_discrete

    require_discrete(model.bottleneck, "detokenize")
    tiling.check(model.downsample_factor)
    return tiled_decode(model, model.bottleneck.dequantize(indices), tiling.core, tiling.margin)
