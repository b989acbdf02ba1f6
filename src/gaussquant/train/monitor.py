"""Rank-0 run outputs: progress bar, ``metrics.jsonl``, TensorBoard scalars and reconstruction grids.

The grid is written with PIL (torchvision is deliberately not a dependency): originals on the top row,
reconstructions below, 2-pixel white gutters.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

log = logging.getLogger(__name__)


def image_grid(rows: list[Tensor], pad: int = 2) -> np.ndarray:
    """Tile image rows into one uint8 HWC array.

    Args:
        rows: each ``(N, C, H, W)`` in [-1, 1] (C = 1 or 3), all the same shape.
        pad: gutter in pixels.

    Returns:
        ``(R * (H + pad) + pad, N * (W + pad) + pad, 3)`` uint8.
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    n, c, h, w = rows[0].shape
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        if images.shape != rows[0].shape:
            raise ValueError(f"grid rows differ in shape: {tuple(images.shape)} vs {tuple(rows[0].shape)}")
        pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = pixels.expand(-1, 3, -1, -1) if c == 1 else pixels
        hwc = pixels.permute(0, 2, 3, 1).cpu().numpy()
        for i in range(n):
            top, left = pad + r * (h + pad), pad + i * (w + pad)
            grid[top : top + h, left : left + w] = hwc[i]
    return grid


def save_grid(rows: list[Tensor], path: str | Path) -> Path:
    """Write :func:`image_grid` as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(rows)).save(path)
    return path


def _scalar(value: Any) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


class Monitor:
    """Progress bar + JSONL + TensorBoard for the main process; a silent no-op elsewhere.

    Args:
        out: the run directory.
        total_steps: the bar's length; ``start_step``: where a resumed run begins.
        enabled: False on ranks other than 0.
        tensorboard: write ``out/tb`` event files.
    """

    BAR_KEYS = ("loss", "kl_mean", "kl_min", "kl_max", "multiplier", "img_per_s")

    def __init__(self, out: Path, *, total_steps: int, start_step: int, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.out = out
        self.bar = None
        self.writer = None
        if not enabled:
            return
        self.metrics_path = out / "metrics.jsonl"
        self._truncate_after(start_step)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)

    def _truncate_after(self, step: int) -> None:
        """After a resume, drop lines logged past the checkpoint by the interrupted process."""
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by the crash
                continue
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        """Write one JSONL line and TensorBoard scalars; update the bar. Returns the floats."""
        values = {k: _scalar(v) for k, v in metrics.items()}
        if not self.enabled:
            return values
        values = {k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, float):
                    self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            shown = {k: f"{values[k]:.4g}" for k in self.BAR_KEYS if isinstance(values.get(k), float)}
            self.bar.set_postfix(shown, refresh=False)
        return values

    def image(self, step: int, x: Tensor, x_hat: Tensor) -> Path | None:
        if not self.enabled:
            return None
        return save_grid([x, x_hat], self.out / "images" / f"step_{step:06d}.png")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
