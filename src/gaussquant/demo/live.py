"""The demo's live part: a fresh Gaussian VAE trained with TDC for the minutes the budget leaves.

Same preset as the bundled model (``unet-demo-gq``: tiny UNet, f = 4, 8 latent channels in 2 groups of
d = 4, target 8 bits per group, 48-pixel crops of the training photos) with three changes that suit a run
of a few minutes whose length is set by the wall clock: a constant learning rate after a short warm-up
(no cosine: the final step is not known in advance), ``bottleneck.factor = 1.03`` (the TDC multiplier moves
3 % per step instead of 1 %, so the KL reaches its target in tens of steps instead of hundreds) and
``max_seconds`` (the trainer stops at the first step boundary past it).

While it trains, snapshots of the per-group KL of a fixed batch of held-out crops are taken at evenly spaced
times: the histogram moving onto log2 K is TDC at work (docs/method.md section 3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

SNAPSHOTS = 6
KL_CROPS = 16


@dataclass
class KLSnapshot:
    """Group KL (bits) of the fixed held-out batch after ``step`` steps, ``seconds`` into training."""

    step: int
    seconds: float
    kl_bits: Tensor  # (N,) one value per latent group


@dataclass
class LiveRun:
    """What :func:`train_live` returns."""

    model: nn.Module
    config: Any
    steps: int
    seconds: float
    snapshots: list[KLSnapshot] = field(default_factory=list)
    log: list[dict[str, float]] = field(default_factory=list)


def live_config(out: Path, *, max_seconds: float, seed: int = 0, steps: int = 100_000) -> Any:
    """The live run's :class:`~gaussquant.train.config.TrainConfig` (module docstring)."""
    from gaussquant.train.config import load_config

    overrides = [
        f"out={out}", f"seed={seed}", f"steps={steps}", f"max_seconds={max_seconds:.1f}",
        "optim.schedule=constant", "optim.warmup_steps=20", "optim.lr=0.002",
        # why: f = 1.01 (the paper's, for 10^5+ steps) moves lambda too slowly for a few hundred steps
        "bottleneck.factor=1.03",
        "data.num_crops=8192", "log_every=10", "image_every=100000", "ckpt_every=100000", "keep_last=1",
        "device=cpu",
    ]
    return load_config("unet-demo-gq", overrides)


@torch.no_grad()
def group_kl(model: nn.Module, x: Tensor) -> Tensor:
    """Per-group KL in bits of images ``x`` under ``model``'s posterior, flattened to ``(N,)``."""
    was_training = model.training
    model.eval()
    try:
        out = model.encode(x)
    finally:
        model.train(was_training)
    return out.kl_bits.detach().flatten().cpu()


def train_live(out: Path, max_seconds: float, *, seed: int = 0, steps: int | None = None) -> LiveRun:
    """Train a fresh model for ``max_seconds`` of wall clock (or exactly ``steps`` steps) in ``out``."""
    import json

    from gaussquant.data.default_photos import DefaultPhotoCrops
    from gaussquant.train import distributed as tdist
    from gaussquant.train.trainer import Trainer

    cfg = live_config(out, max_seconds=max_seconds, seed=seed, steps=steps or 100_000)
    if steps is not None:
        cfg.max_seconds = None
    trainer = Trainer(cfg)
    if trainer.step:
        raise FileExistsError(f"{out} already holds a checkpoint; choose another --out or delete it")
    crops = DefaultPhotoCrops("eval", image_size=cfg.model.image_size, num_crops=KL_CROPS, seed=seed, flip=False)
    fixed = torch.stack([crops[i] for i in range(len(crops))])
    model = trainer.c.model_module
    t0 = time.perf_counter()
    snapshots = [KLSnapshot(0, 0.0, group_kl(model, fixed))]
    every = (max_seconds if steps is None else float("inf")) / SNAPSHOTS
    step_every = max(1, (steps or 0) // SNAPSHOTS)

    def snapshot(tr: Trainer, logs: dict[str, Tensor]) -> None:
        elapsed = time.perf_counter() - t0
        due = elapsed >= every * len(snapshots) if steps is None else tr.step % step_every == 0
        if due and tr.step > snapshots[-1].step:
            snapshots.append(KLSnapshot(tr.step, elapsed, group_kl(tr.c.model_module, fixed)))

    try:
        result = trainer.fit(on_step=snapshot)
    finally:
        tdist.cleanup()
    if snapshots[-1].step != result.step:
        snapshots.append(KLSnapshot(result.step, time.perf_counter() - t0, group_kl(model, fixed)))
    metrics = out / "metrics.jsonl"
    log = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return LiveRun(model=model.eval(), config=cfg, steps=result.step, seconds=result.seconds,
                   snapshots=snapshots, log=log)
