"""Training checkpoints that survive crashes (design.md convention 3).

``OUT/checkpoints/step_XXXXXXXX/`` holds:

- ``config.json``: the pretrained.py model config plus ``step`` and the resolved training config ``train``;
- ``model.safetensors`` (and ``ema.safetensors``, ``discriminator.safetensors`` when used);
- ``training_state.pt``: optimiser/scheduler states, RNG states (torch global + the trainer's generators),
  sampler position, step and the objective's learned log-variance. Loaded with ``weights_only=True``: no
  pickle code runs on load. TDC multipliers are model buffers, so they live in model.safetensors.

Every step directory is written under a temporary name, each file fsynced, then renamed; ``latest`` (a small
text file naming the newest step directory) is replaced atomically after that. Only the last ``keep_last``
step directories are kept. A crash at any point leaves the previous checkpoint intact and ``latest``
pointing at a complete directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaussquant.pretrained import fsync_file, fsync_write, load_state_safetensors, save_state_safetensors

log = logging.getLogger(__name__)

STEP_PREFIX = "step_"


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _non_finite(tree: Any, where: str) -> str | None:
    """The name of the first floating tensor under ``tree`` holding NaN or inf, else None."""
    if isinstance(tree, Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            return where
        return None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _check_finite(weights: dict[str, dict[str, Tensor]], training_state: dict[str, Any], step: int) -> None:
    """Refuse to write NaN/inf weights or optimiser state (a poisoned checkpoint would replace good ones)."""
    found = _non_finite(weights, "") or _non_finite(training_state, "training_state")
    if found is not None:
        raise ValueError(
            f"refusing to write the checkpoint of step {step}: {found} holds NaN or infinite values "
            "(the run diverged); the earlier checkpoints are kept unchanged"
        )


def save_checkpoint(
    ckpt_root: str | Path,
    step: int,
    *,
    meta: dict[str, Any],
    weights: dict[str, dict[str, Tensor]],
    training_state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write one checkpoint atomically and prune old ones.

    Args:
        ckpt_root: ``OUT/checkpoints`` (created).
        step: completed optimiser steps.
        meta: config.json content.
        weights: file stem -> state dict, e.g. ``{"model": ..., "ema": ...}`` -> ``model.safetensors``.
        training_state: tensors / numbers / lists / dicts only (loaded with ``weights_only=True``).
        keep_last: number of step directories to keep.

    Returns:
        The final step directory.

    Raises:
        ValueError: a floating tensor in ``weights`` or ``training_state`` is NaN or infinite (nothing is
            written).
    """
    _check_finite(weights, training_state, step)
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for stem, state in weights.items():
        save_state_safetensors(state, tmp / f"{stem}.safetensors")
    torch.save(training_state, tmp / "training_state.pt")
    fsync_file(tmp / "training_state.pt")
    fsync_write(tmp / "config.json", json.dumps(meta, indent=2).encode())
    _fsync_dir(tmp)
    if final.exists():  # an older run wrote this step: replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_write(root / "latest", (final.name + "\n").encode())
    _fsync_dir(root)
    prune(root, keep_last)
    return final


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete step directories, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)]
    return sorted(dirs, key=lambda p: p.name)


def prune(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step directories (and stale temp dirs)."""
    for stale in ckpt_root.glob(".tmp-*"):
        if stale.is_dir() and not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(ckpt_root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """The directory named by ``latest``, or None when there is no checkpoint yet."""
    root = Path(ckpt_root)
    latest = root / "latest"
    if not latest.is_file():
        return None
    step_dir = root / latest.read_text().strip()
    if not step_dir.is_dir():
        raise FileNotFoundError(f"{str(latest)!r} names {step_dir.name!r}, which does not exist")
    return step_dir


def load_checkpoint(
    step_dir: str | Path, *, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read ``(meta, weights by stem, training_state)``; truncated files are errors saying so."""
    step_dir = Path(step_dir)
    try:
        meta = json.loads((step_dir / "config.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {str(step_dir)!r} has no config.json") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(step_dir / 'config.json')!r} is truncated or corrupt ({err})") from None
    weights = {p.stem: load_state_safetensors(p, map_location) for p in sorted(step_dir.glob("*.safetensors"))}
    state_path = step_dir / "training_state.pt"
    if not state_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(step_dir)!r} has no training_state.pt")
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{str(state_path)!r} is truncated or corrupt ({err})") from None
    return meta, weights, state
