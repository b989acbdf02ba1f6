"""Tiled encoding and decoding of whole photos with a model trained on small crops.

Why: the tiny UNet normalises every feature channel over the whole image (GroupNorm with one channel per
group at its first level), so a model trained on 48-pixel crops sees statistics on a 512-pixel photo that
it never saw in training, and its colours drift (a cast of tens of uint8 levels). Running the encoder and
the decoder on overlapping windows of about the training size keeps the statistics it was trained on.

The token grid is still that of the whole photo at full resolution (one token per f x f pixels): windows
of ``core + 2 margin`` pixels (clipped at the photo's border) start every ``core`` pixels, and where two
overlap (``2 margin``) their outputs, latents or pixels, are cross-faded linearly, so neither a seam nor a
step in colour shows where one window meets the next. A window as large as the image is the plain model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


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
    no seam shows where one window's statistics meet the next one's."""
    height, width = x.shape[-2:]
    out_h, out_w = round(height * scale), round(width * scale)
    fade = 2 * margin * scale
    out = total = None
    for wy0, wy1, _, _ in _spans(height, core, margin):
        for wx0, wx1, _, _ in _spans(width, core, margin):
            y = fn(x[..., wy0:wy1, wx0:wx1])
            if out is None:
                out = y.new_zeros((*y.shape[:2], out_h, out_w))
                total = y.new_zeros((out_h, out_w))
            oy0, oy1, ox0, ox1 = round(wy0 * scale), round(wy1 * scale), round(wx0 * scale), round(wx1 * scale)
            weight = torch.outer(_ramp(oy0, oy1, out_h, fade, y.device), _ramp(ox0, ox1, out_w, fade, y.device))
            out[..., oy0:oy1, ox0:ox1] += y * weight
            total[oy0:oy1, ox0:ox1] += weight
    assert out is not None and total is not None
    return out / total


@torch.no_grad()
def tiled_encoder(model: nn.Module, x: Tensor, core: int = 48, margin: int = 8) -> Tensor:
    """The encoder output ``(B, C_enc, H/f, W/f)`` of images ``(B, 3, H, W)``, window by window.

    ``core`` and ``margin`` are in pixels and must be multiples of the model's f (as must H and W).
    ``core >= H, W`` is one window: the plain ``model.encoder(x)``.
    """
    f = int(model.downsample_factor)
    if core % f or margin % f:
        raise ValueError(f"core {core} and margin {margin} must be multiples of the downsampling factor {f}")
    return _tiled(model.encoder, model.check_images(x), core, margin, 1.0 / f)


@torch.no_grad()
def tiled_decode(model: nn.Module, z: Tensor, core: int = 48, margin: int = 8) -> Tensor:
    """Images ``(B, 3, f h, f w)`` from latents ``(B, C, h, w)``, window by window (sizes in pixels)."""
    f = int(model.downsample_factor)
    if core % f or margin % f:
        raise ValueError(f"core {core} and margin {margin} must be multiples of the downsampling factor {f}")
    return _tiled(model.decode, z, core // f, margin // f, float(f))
