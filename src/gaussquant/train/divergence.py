"""Stop a diverging run before it poisons anything (issue 16, item 1).

A step whose loss, KL or gradient norm is NaN or infinite is caught before the optimiser applies it: the
run stops with :class:`TrainingDiverged`, one sentence naming the step and the last good checkpoint, and
nothing non-finite is written (the checkpoint writer refuses non-finite tensors as a second line of
defence). Checking costs one host synchronisation per optimiser step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


class TrainingDiverged(RuntimeError):
    """The loss, KL or gradients of a step are not finite; the run stopped before applying the step."""


def check_finite_step(step: int, values: dict[str, Tensor], last_checkpoint: Path | None) -> None:
    """Raise :class:`TrainingDiverged` when any tensor in ``values`` holds NaN or inf.

    Args:
        step: the 1-based number of the step being taken.
        values: name -> tensor (any shape) to check, e.g. ``{"loss": ..., "gradient norm": ...}``.
        last_checkpoint: the newest checkpoint this run wrote or resumed from (None: none yet).
    """
    names = list(values)
    if not names:
        return
    flags = torch.stack([torch.isfinite(values[n].detach()).all().to("cpu") for n in names]).tolist()
    bad = [n for n, ok in zip(names, flags) if not ok]
    if not bad:
        return
    if last_checkpoint is not None:
        where = (
            f"the last good checkpoint is {str(last_checkpoint)!r}; lower optim.lr (or set optim.grad_clip) "
            "and rerun the same command to resume from it"
        )
    else:
        where = "no checkpoint was written yet; lower optim.lr (or set optim.grad_clip) and start again"
    raise TrainingDiverged(
        f"training diverged at step {step}: the {', '.join(bad)} became NaN or infinite, so the step was "
        f"not applied and nothing was saved; {where}"
    )
