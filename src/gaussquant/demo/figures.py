"""The demo's figures: labelled photo grid, rate-quality curve, KL histograms (bundled and live).

All drawn with Pillow (grids) or matplotlib's object API on the Agg canvas (charts), like eval/plots.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from gaussquant.eval.plots import BAND_BITS, _figure, compose_grid, grid_scale, upscale_nearest, to_uint8_hwc


def _pixels(x: Tensor) -> np.ndarray:
    return to_uint8_hwc(x[None])[0]


def photo_grid(rows: Sequence[tuple[str, Sequence[tuple[Tensor, str]]]], labels: Sequence[str], path: Path,
               min_tile: int = 384) -> Path:
    """One row per photo: ``(name, [(image (3, H, W) in [-1, 1], caption), ...])``; columns ``labels``.

    Photos smaller than ``min_tile`` on their longer side are enlarged by pixel repetition."""
    tiles, captions = [], []
    for name, cells in rows:
        h, w = cells[0][0].shape[-2:]
        factor = grid_scale(h, w, min_tile)
        tiles.append([upscale_nearest(_pixels(image), factor) for image, _ in cells])
        size = f"{name} {w}x{h}" + (f", shown x{factor}" if factor > 1 else "")
        captions.append([f"{size}: {cells[0][1]}" if j == 0 else c for j, (_, c) in enumerate(cells)])
    return compose_grid(tiles, path, column_labels=labels, captions=captions, gap=6, font_size=18)


def sample_grid(references: Tensor, samples: Tensor, path: Path, min_tile: int = 192, per_row: int = 4) -> Path:
    """Training crops decoded from their tokens (first row) above generated samples, ``per_row`` a row,
    each ``(N, 3, S, S)`` in [-1, 1], enlarged by pixel repetition to at least ``min_tile`` px and captioned."""
    factor = grid_scale(samples.shape[-2], samples.shape[-1], min_tile)
    tiles = [[upscale_nearest(_pixels(x), factor) for x in references[:per_row]]]
    captions = [[f"training crop {i + 1}" for i in range(len(tiles[0]))]]
    for start in range(0, samples.shape[0], per_row):
        row = samples[start:start + per_row]
        tiles.append([upscale_nearest(_pixels(x), factor) for x in row])
        captions.append([f"sample {start + i + 1}" for i in range(len(row))])
    return compose_grid(tiles, path, captions=captions, gap=6, font_size=16)


def rate_quality(points: Sequence[tuple[int, float, float]], continuous: float, path: Path,
                 target_bits: float | None = None) -> Path:
    """PSNR against bpp for GQ conversions at several K: ``points`` = ``[(K, bpp, psnr)]``; the dashed line
    is the continuous (posterior mean) PSNR, which no K can exceed by much."""
    fig, ax = _figure(6.0, 3.8)
    ks, bpps, psnrs = zip(*points)
    ax.plot(bpps, psnrs, "o-", color="#4c72b0", label="GQ tokens (decoded)")
    for k, b, p in points:
        ax.annotate(f"K = {k}", (b, p), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.axhline(continuous, color="#dd8452", linestyle="--", label=f"continuous {continuous:.2f} dB")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB), mean over held-out photos")
    title = "rate-quality of the GQ conversion"
    ax.set_title(title + (f" (trained at {target_bits:g} bits per group)" if target_bits else ""), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def live_kl(snapshots: Sequence[tuple[int, float, Tensor]], log: Sequence[dict], target_bits: float,
            path: Path) -> Path:
    """Left: histograms of group KL at successive steps (light to dark) against log2 K; right: the logged
    mean / min / max group KL of the training batches against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    values = np.concatenate([s[2].numpy() for s in snapshots])
    hi = float(min(np.percentile(values, 99.5), 4 * target_bits))
    edges = np.linspace(0.0, max(hi, target_bits + 2), 41)
    cmap = _cmap()
    for i, (step, seconds, kl) in enumerate(snapshots):
        counts, _ = np.histogram(np.clip(kl.numpy(), 0, edges[-1]), bins=edges)
        shade = cmap(0.25 + 0.75 * i / max(1, len(snapshots) - 1))
        left.step(edges[:-1], counts / max(1, counts.sum()), where="post", color=shade,
                  label=f"step {step} ({seconds:.0f} s): mean {kl.mean():.2f}")
    left.axvspan(target_bits - BAND_BITS, target_bits + BAND_BITS, color="#dd8452", alpha=0.25)
    left.axvline(target_bits, color="#dd8452", linewidth=2, label=f"log2 K = {target_bits:g}")
    left.set_xlabel("group KL (bits), fixed held-out crops")
    left.set_ylabel("fraction of group tokens")
    left.set_title("TDC at work: the KL histogram moves onto log2 K", fontsize=10)
    left.legend(fontsize=7, loc="upper right")
    rows = [r for r in log if "kl_mean" in r]
    if rows:
        steps = [r["step"] for r in rows]
        right.plot(steps, [r["kl_mean"] for r in rows], color="#4c72b0", label="mean")
        right.fill_between(steps, [r["kl_min"] for r in rows], [min(r["kl_max"], hi) for r in rows],
                           color="#4c72b0", alpha=0.15, label="min-max (clipped)")
        right.axhline(target_bits, color="#dd8452", linewidth=2, label="log2 K")
        right.set_xlabel("training step")
        right.set_ylabel("group KL (bits) of the training batch")
        right.set_title("per-group KL during the live run", fontsize=10)
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _cmap():
    from matplotlib import colormaps

    return colormaps["Blues"]
