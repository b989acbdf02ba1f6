"""Training checkpoints that survive crashes: every state that matters is saved, and loading is strict.

``OUT/checkpoints/step_XXXXXXXX/`` holds:

- ``config.json``: the pretrained.py model config plus ``step`` and the resolved training config ``train``;
- ``model.safetensors`` (and ``ema.safetensors``, ``discriminator.safetensors`` when used);
- ``training_state.pt``: optimiser/scheduler states, RNG states (torch global + the trainer's generators),
  sampler position, step and the objective's learned log-variance. Loaded with ``weights_only=True``: no
  pickle code runs on load. TDC multipliers are model buffers, so they live in model.safetensors.

Every step directory is written under a temporary name, each file fsynced, then renamed; ``latest`` (a small
text file naming the newest step directory) is replaced atomically after that. A crash at any point leaves
the previous checkpoint intact and ``latest`` pointing at a complete directory.

Pruning keeps the directory just written and the ``keep_last - 1`` newest older ones; it never touches a
step directory newer than the one just written (left by a run that was resumed from an earlier step).
Resuming (:func:`find_resume_checkpoint`) loads the directory ``latest`` names, and when ``latest`` is
missing, names something that is not a step directory of this folder, or its files do not load, the newest
step directory that does load, saying so. ``latest`` is only ever read as a plain ``step_XXXXXXXX`` name, so
it cannot point outside its run folder.

A run folder is locked (:class:`RunLock`, an ``fcntl.flock`` on ``OUT/.lock``) while a trainer writes to it:
a second trainer gets a clear error; the kernel drops the lock of a killed process, so a stale lock never
blocks a new run.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaussquant.pretrained import fsync_file, fsync_write, load_state_safetensors, save_state_safetensors

log = logging.getLogger(__name__)

STEP_PREFIX = "step_"
_STEP_NAME = re.compile(r"step_\d{8}")


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
    prune(root, keep_last, keep=final)
    return final


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete step directories, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)]
    return sorted(dirs, key=lambda p: p.name)


def prune(ckpt_root: Path, keep_last: int, keep: Path | None = None) -> None:
    """Delete stale temp dirs and old step directories.

    With ``keep`` (the directory just written) it is always kept, with the ``keep_last - 1`` newest step
    directories older than it; newer ones are left alone. Without ``keep``: the newest ``keep_last``.
    """
    for stale in ckpt_root.glob(".tmp-*"):
        if stale.is_dir() and not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    dirs = list_checkpoints(ckpt_root)
    if keep is not None:
        dirs = [d for d in dirs if d.name < keep.name]  # same-width names: string order is step order
        keep_last -= 1
    for old in dirs[: max(0, len(dirs) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)


def read_latest(ckpt_root: str | Path) -> Path | None:
    """The step directory ``latest`` names, or None when ``latest`` is missing or does not name a step
    directory of ``ckpt_root`` (anything but a plain ``step_XXXXXXXX`` name, e.g. ``../other``, is ignored)."""
    root = Path(ckpt_root)
    latest = root / "latest"
    if not latest.is_file():
        return None
    try:
        name = latest.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _STEP_NAME.fullmatch(name):
        log.warning("ignoring %s: it names %r, which is not a step directory of this run folder", latest, name[:80])
        return None
    step_dir = root / name
    if not step_dir.is_dir() or step_dir.is_symlink():
        return None
    return step_dir


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """The directory named by ``latest`` if valid, else the newest step directory, else None."""
    found = read_latest(ckpt_root)
    if found is None:
        dirs = list_checkpoints(ckpt_root)
        found = dirs[-1] if dirs else None
    return found


def find_resume_checkpoint(
    ckpt_root: str | Path, *, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any], dict[str, dict[str, Tensor]], dict[str, Any]] | None:
    """The checkpoint to resume from, loaded: ``(step_dir, meta, weights, training_state)``, or None.

    Tries the directory ``latest`` names, then every other step directory, newest first, and returns the
    first that loads; a missing or broken ``latest`` and every skipped directory are logged as warnings.
    Raises ValueError when step directories exist but none loads (nothing is deleted).
    """
    root = Path(ckpt_root)
    named = read_latest(root)
    candidates = ([named] if named is not None else []) + [d for d in reversed(list_checkpoints(root)) if d != named]
    if not candidates:
        return None
    problems = []
    for step_dir in candidates:
        try:
            meta, weights, state = load_checkpoint(step_dir, map_location=map_location)
        except (ValueError, FileNotFoundError, OSError) as err:
            log.warning("skipping checkpoint %s: %s", step_dir, err)
            problems.append(f"{step_dir.name}: {err}")
            continue
        if step_dir != named:
            log.warning("%s is missing or broken; resuming from the newest loadable checkpoint %s",
                        root / "latest", step_dir)
        return step_dir, meta, weights, state
    raise ValueError(
        f"{str(root)!r} holds {len(candidates)} checkpoints and none loads ({problems[0]}); move the folder "
        "aside to start a new run, or pass another --out"
    )


class RunLock:
    """An exclusive lock on a run folder while a trainer writes to it (``fcntl.flock`` on ``OUT/.lock``).

    The lock file records pid, host and start time for the error message. The kernel releases the lock when
    the holding process ends, however it ends, so a lock left by a killed trainer never blocks the next one.
    Where ``fcntl`` does not exist (Windows) no lock is taken and a warning says so.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fh = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise RuntimeError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Linux/macOS
            log.warning("cannot lock %s on this platform: do not run two trainers on one folder", self.path.parent)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RuntimeError(
                f"run folder {str(self.path.parent)!r} is in use by another training ({holder}); wait for it "
                "to finish or pass another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its content is only read while someone holds the lock)."""
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
    if not (step_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"checkpoint {str(step_dir)!r} has no model.safetensors")
    weights = {p.stem: load_state_safetensors(p, map_location) for p in sorted(step_dir.glob("*.safetensors"))}
    state_path = step_dir / "training_state.pt"
    if not state_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(step_dir)!r} has no training_state.pt")
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{str(state_path)!r} is unsafe: it holds pickled objects that could run code, which safe loading "
            f"refused ({str(err).splitlines()[0][:120]}); it was not loaded. Delete this checkpoint folder, or "
            "resume from a checkpoint written by gaussquant"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{str(state_path)!r} is truncated or corrupt ({err})") from None
    return meta, weights, state
