"""Optimisers and learning-rate schedules (docs/method.md section 7: Adam, lr 1e-4 for GQ).

A schedule is a pure function of the step, so resuming needs only the step (the scheduler state is saved
anyway, for completeness).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def build_optimizer(
    params: Iterable[nn.Parameter],
    *,
    name: str,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam (``name="adam"``, L2 decay), AdamW (``"adamw"``, decoupled decay) or SGD (``"sgd"``, momentum
    ``betas[0]``; its update is linear in the gradient, which makes multi-process equivalence testable)."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=weight_decay)
    raise ValueError(f"unknown optimiser {name!r}; use adam, adamw or sgd")


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warm-up, then constant or cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {schedule!r}; use constant or cosine")


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, schedule: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over :func:`lr_factor`."""
    lr_factor(0, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule)  # validate now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule),
    )
