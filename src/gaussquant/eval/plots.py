"""Figures of the evaluation report: reconstruction grid, group-KL histogram against
log2 K (docs/method.md sections 2 and 5), codebook usage.

The grid is assembled from exact uint8 pixels with Pillow (small images enlarged by integer pixel repetition,
never interpolated, so what you see is what the metrics saw; column labels drawn in the picture); the charts
use matplotlib's object API with the Agg canvas (no pyplot global state, no display).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from gaussquant.data.transforms import to_uint8
from gaussquant.optional import import_optional

BAND_BITS = 0.5


def to_uint8_hwc(x: Tensor) -> np.ndarray:
    """Images ``(B, 3, H, W)`` in [-1, 1] -> uint8 ``(B, H, W, 3)`` (``to_uint8``'s rounding, as PSNR)."""
    return to_uint8(x.cpu()).permute(0, 2, 3, 1).numpy()


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (the bitmap fallback where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def upscale_nearest(pixels: np.ndarray, factor: int) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> ``(factor H, factor W, 3)`` by pixel repetition (no new values)."""
    return pixels if factor <= 1 else np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def grid_scale(height: int, width: int, min_tile: int) -> int:
    """The integer nearest-neighbour factor that brings a tile's longer side to at least ``min_tile`` px."""
    return max(1, math.ceil(min_tile / max(1, height, width)))


def compose_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    *,
    column_labels: Sequence[str] = (),
    captions: Sequence[Sequence[str]] | None = None,
    gap: int = 4,
    font_size: int = 16,
) -> Path:
    """Save a labelled grid of uint8 ``(H, W, 3)`` tiles (tiles of one row may differ in size from other
    rows'); ``column_labels`` go in a band at the top, ``captions[i][j]`` under tile (i, j); white
    background. Tiles are placed pixel for pixel (scale them first with :func:`upscale_nearest`)."""
    if not rows or not rows[0]:
        raise ValueError("compose_grid needs at least one row with one image")
    ncol = max(len(r) for r in rows)
    if column_labels and len(column_labels) != ncol:
        raise ValueError(f"{len(column_labels)} column labels for {ncol} columns")
    font = _font(font_size)
    line = font_size + 6
    widths = [max(r[j].shape[1] for r in rows if j < len(r)) for j in range(ncol)]
    heights = [max(t.shape[0] for t in r) + (line if captions else 0) for r in rows]
    top = line + gap if column_labels else 0
    canvas = Image.new("RGB", (sum(widths) + gap * (ncol + 1), top + sum(heights) + gap * (len(rows) + 1)),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    lefts = [gap + sum(widths[:j]) + gap * j for j in range(ncol)]
    for j, label in enumerate(column_labels):
        draw.text((lefts[j] + widths[j] / 2, gap + line / 2), label, fill=(0, 0, 0), font=font, anchor="mm")
    y = top + gap
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3:
                raise ValueError(f"tile ({i}, {j}) must be uint8 (H, W, 3); got {tile.dtype} {tile.shape}")
            x = lefts[j] + (widths[j] - tile.shape[1]) // 2
            canvas.paste(Image.fromarray(tile), (x, y))
            if captions and j < len(captions[i]) and captions[i][j]:
                draw.text((lefts[j] + widths[j] / 2, y + tile.shape[0] + line / 2), captions[i][j],
                          fill=(0, 0, 0), font=font, anchor="mm")
        y += heights[i] + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def save_image_grid(
    columns: Sequence[Tensor],
    path: str | Path,
    gap: int = 4,
    *,
    labels: Sequence[str] = (),
    min_tile: int = 192,
) -> Path:
    """Save a grid whose rows are images and whose columns are ``columns`` (e.g. original | continuous |
    quantized), each ``(B, 3, H, W)`` in [-1, 1] with the same B, H, W.

    Small images are enlarged by an integer nearest-neighbour factor so that each tile's longer side is at
    least ``min_tile`` px (pixels are repeated, never interpolated: what you see is what the metrics saw);
    ``labels`` (one per column) are written above the columns.
    """
    if not columns:
        raise ValueError("save_image_grid needs at least one column of images")
    shape = tuple(columns[0].shape)
    if any(tuple(c.shape) != shape for c in columns):
        raise ValueError(f"all grid columns must have the same shape; got {[tuple(c.shape) for c in columns]}")
    b, _, h, w = shape
    factor = grid_scale(h, w, min_tile)
    pixels = [to_uint8_hwc(col) for col in columns]
    rows = [[upscale_nearest(p[i], factor) for p in pixels] for i in range(b)]
    return compose_grid(rows, path, column_labels=labels, gap=gap)


def _figure(width: float = 6.0, height: float = 3.5):
    needed_for = "report plots (gaussquant.eval.plots)"
    agg = import_optional("matplotlib.backends.backend_agg", package="matplotlib", extra="eval",
                          needed_for=needed_for)
    figure = import_optional("matplotlib.figure", package="matplotlib", extra="eval", needed_for=needed_for)
    fig = figure.Figure(figsize=(width, height), dpi=100)
    agg.FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_kl_histogram(counts: Sequence[int], edges: Sequence[float], log2_k: float, path: str | Path,
                      title: str = "") -> Path:
    """Bar chart of group-KL counts (bins ``edges``) with log2 K and the +-0.5-bit band marked."""
    fig, ax = _figure()
    widths = np.diff(np.asarray(edges, dtype=float))
    ax.bar(edges[:-1], counts, width=widths, align="edge", color="#4c72b0", edgecolor="white")
    ax.axvspan(log2_k - BAND_BITS, log2_k + BAND_BITS, color="#dd8452", alpha=0.25, label="log2 K +- 0.5")
    ax.axvline(log2_k, color="#dd8452", linewidth=2, label=f"log2 K = {log2_k:.2f}")
    ax.set_xlabel("group KL (bits)")
    ax.set_ylabel("group tokens")
    ax.set_title(title or "per-group KL of the posterior vs codebook rate")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_codebook_usage(counts: Tensor, path: str | Path, title: str = "") -> Path:
    """Rank-frequency curve of code usage per group: ``counts`` ``(G, K)`` index counts.

    Codes are sorted by frequency within each group; a flat line at 1/K is perfectly uniform usage, the
    point where a curve drops to zero marks the unused codes.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() == 1:
        counts = counts[None]
    groups, k = counts.shape
    fig, ax = _figure()
    ranks = np.arange(1, k + 1)
    for g in range(groups):
        total = float(counts[g].sum()) or 1.0
        freq = torch.sort(counts[g], descending=True).values.numpy() / total
        used = int((counts[g] > 0).sum())
        ax.step(ranks, np.where(freq > 0, freq, np.nan), where="post",
                label=f"group {g}: {used}/{k} used" if groups <= 8 else None)
    ax.axhline(1.0 / k, color="black", linestyle="--", linewidth=1, label="uniform 1/K")
    ax.set_yscale("log")
    if k > 64:
        ax.set_xscale("log")
    ax.set_xlabel("code rank (by frequency)")
    ax.set_ylabel("frequency")
    ax.set_title(title or f"codebook usage (K = {k}, G = {groups})")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path

