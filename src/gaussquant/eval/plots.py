"""Figures of the evaluation report: reconstruction grid, group-KL histogram against
log2 K (docs/method.md sections 2 and 5), codebook usage.

The grid is assembled from exact uint8 pixels with Pillow (no resampling, so what you see is what the metrics
saw); the charts use matplotlib's object API with the Agg canvas (no pyplot global state, no display).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gaussquant.data.transforms import to_uint8
from gaussquant.optional import import_optional

BAND_BITS = 0.5


def to_uint8_hwc(x: Tensor) -> np.ndarray:
    """Images ``(B, 3, H, W)`` in [-1, 1] -> uint8 ``(B, H, W, 3)`` (``to_uint8``'s rounding, as PSNR)."""
    return to_uint8(x.cpu()).permute(0, 2, 3, 1).numpy()


def save_image_grid(columns: Sequence[Tensor], path: str | Path, gap: int = 2) -> Path:
    """Save a grid whose rows are images and whose columns are ``columns`` (e.g. original | continuous |
    quantized), each ``(B, 3, H, W)`` in [-1, 1] with the same B, H, W; white ``gap``-pixel separators."""
    if not columns:
        raise ValueError("save_image_grid needs at least one column of images")
    shape = tuple(columns[0].shape)
    if any(tuple(c.shape) != shape for c in columns):
        raise ValueError(f"all grid columns must have the same shape; got {[tuple(c.shape) for c in columns]}")
    b, _, h, w = shape
    ncol = len(columns)
    canvas = np.full((b * h + (b - 1) * gap, ncol * w + (ncol - 1) * gap, 3), 255, dtype=np.uint8)
    for j, col in enumerate(columns):
        pixels = to_uint8_hwc(col)
        for i in range(b):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = pixels[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


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

