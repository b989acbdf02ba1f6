"""Resume with a changed config: refuse what breaks the run, apply the rest and say so (issue 16, item 3).

On resume the trainer compares the new resolved config with the one recorded in the checkpoint
(``config.json`` key ``train``), field by dotted field:

- **refused** (a ValueError listing every such change): the model and bottleneck (architecture, latent
  size, target bits, grouping, ...), ``batch_size``, ``seed``, the optimiser kind and gradient accumulation,
  how the training data are made (source, image size, crops, flips, data seed, held-out photos), the
  objective's structure (learned log-variance, perceptual network and whether it is on, the discriminator's
  size, and whether there is a discriminator or EMA at all). These change what the saved weights, optimiser
  state or data position mean.
- **applied** (each one logged as ``old -> new``): everything else, e.g. ``steps``, ``optim.lr``,
  ``optim.betas``, ``optim.weight_decay``, the schedule and warm-up, ``grad_clip``, loss weights,
  ``loss.gan.disc_start`` (a step), ``ema_decay`` (a value), ``data.path``, logging and checkpoint intervals,
  ``precision``, ``device``. Optimiser hyperparameters saved inside the optimiser state are overwritten
  with the new values (:func:`apply_optim_settings`), so the recorded ``config.yaml`` is what runs.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

# dotted prefixes whose change is refused (a prefix ending in "." covers a whole section)
REFUSED = (
    "model.", "bottleneck.", "batch_size", "seed", "optim.name", "optim.grad_accum",
    "data.source", "data.image_size", "data.num_crops", "data.eval_crops", "data.random_crop", "data.flip",
    "data.seed", "data.eval_photos", "loss.learned_logvar", "loss.perceptual_net", "loss.gan.disc.",
)
OPTIM_KEYS = ("steps", "optim.lr", "optim.betas", "optim.weight_decay", "optim.warmup_steps",
              "optim.schedule", "optim.disc_lr")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree and not prefix.endswith("aux_weights."):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _refused(key: str, old: Any, new: Any) -> bool:
    if any(key == p or (p.endswith(".") and key.startswith(p)) for p in REFUSED):
        return True
    # switching a part on or off changes which weights and optimiser states exist
    on_off = ("ema_decay", "loss.gan.disc_start", "loss.perceptual_weight")
    return key in on_off and (not old) != (not new)


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(refused, applied)``: one ``"key: old -> new"`` line per changed field of two config dicts."""
    a, b = _flatten(old), _flatten(new)
    refused, applied = [], []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, "<absent>"), b.get(key, "<absent>")
        if (before, after) in (("<absent>", None), (None, "<absent>")):  # a field added later, left at None
            continue
        if before == after or (isinstance(before, (int, float)) and isinstance(after, (int, float))
                               and not isinstance(before, bool) and float(before) == float(after)):
            continue
        (refused if _refused(key, before, after) else applied).append(f"{key}: {before!r} -> {after!r}")
    return refused, applied


def check_resume_config(old: dict[str, Any] | None, new: dict[str, Any], source: str) -> list[str]:
    """Raise ValueError for refused changes; log and return the applied ones (see the module docstring)."""
    if old is None:
        log.warning("%s records no training config; cannot check the resumed settings against it", source)
        return []
    refused, applied = config_changes(old, new)
    if refused:
        raise ValueError(
            f"cannot resume {source} with these changed settings, which would break the run: "
            f"{'; '.join(refused)}. Undo them (the checkpoint's config.json records the run's config), "
            "or start a new run with another --out"
        )
    for line in applied:
        log.warning("resume: applying the changed setting %s", line)
    return applied


def apply_optim_settings(
    optimizer: torch.optim.Optimizer, scheduler: Any, *, lr: float, betas: tuple[float, float], weight_decay: float
) -> None:
    """Overwrite the hyperparameters a loaded optimiser state carries with the new config's, and set the lr
    of the next step from the (new) schedule: ``lr * schedule(step)``."""
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
        group["weight_decay"] = weight_decay
        if "betas" in group:
            group["betas"] = tuple(betas)
        elif "momentum" in group:
            group["momentum"] = betas[0]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
