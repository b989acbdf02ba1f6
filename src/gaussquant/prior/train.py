"""Train a :class:`~gaussquant.prior.model.TokenPrior` on a tokens file: resumable, atomic checkpoints.

The loop is the plain one: sample a batch of images' token grids (with replacement, from a local generator),
teacher-forced cross-entropy over every position and group, AdamW, gradient clipping at 1, a linear warm-up
then a cosine decay to 10% of the learning rate at ``steps``. Every ``checkpoint_every`` steps and at the
end it writes a checkpoint with the trainer's atomic writer (``gaussquant.train.checkpoint``): weights as
safetensors, the optimiser state, the batch generator's state and the step; a rerun with the same ``--out``
resumes from the newest checkpoint that loads and reaches the same weights as an uninterrupted run (the
model has no dropout and draws nothing from the global RNG). The run folder is locked while training.

Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel, like the tokenizer's trainer
(gloo on CPU, NCCL on CUDA with one GPU per rank): ``batch_size`` is per rank; every rank draws the same global
batch of ``world * batch_size`` rows from the shared seeded generator and trains on its own slice of it (rank r:
rows ``r * batch_size`` to ``(r + 1) * batch_size``), so W ranks of batch B take the steps of one process of batch
W * B (the same rows, gradients averaged by DDP; equal up to float rounding, tested with 2 gloo ranks). Rank 0
holds the run lock and writes the checkpoints; every rank resumes from the same checkpoint, so the weights stay
identical on every rank. A plain ``python`` run has no process group and trains in one process, on CUDA when
asked for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from gaussquant.distributed import barrier, distributed_ready, rank_and_world
from gaussquant.prior.data import TokenLayout, class_labels, class_names_of
from gaussquant.prior.model import PRESETS, TokenPrior, prior_config
from gaussquant.prior.store import prior_meta, read_prior_meta
from gaussquant.tokens import check_output_path, load_tokens

log = logging.getLogger(__name__)

DEFAULT_LR = {"tiny": 1e-3, "small": 6e-4}


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over min(100, steps // 10) steps, then cosine from ``peak`` to ``0.1 * peak`` at ``steps``."""
    warmup = min(100, steps // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_prior(
    tokens_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    preset: str = "tiny",
    steps: int = 2000,
    batch_size: int = 64,
    lr: float | None = None,
    seed: int = 0,
    tokenizer: str | os.PathLike | None = None,
    class_from_folders: bool = False,
    checkpoint_every: int = 250,
    device: str | torch.device = "cpu",
    progress: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    max_seconds: float | None = None,
) -> Path:
    """Train (or resume training) a prior on ``tokens_path``; return the final checkpoint folder.

    Args:
        tokens_path: a tokens ``.npz`` written by ``gaussquant encode``.
        out_dir: run folder; ``out_dir/checkpoints`` receives the checkpoints. An existing run is resumed
            (it must have been trained on tokens of the same tokenizer, with the same preset and seed).
        preset: model size, ``tiny`` or ``small``.
        steps: total optimiser steps (a resumed run trains until it has done this many).
        batch_size: images per step (per rank under torchrun: the global batch is ``world * batch_size``).
        lr: peak learning rate (default: 1e-3 for tiny, 6e-4 for small).
        seed: seeds the weights and the batch order.
        tokenizer: the model that wrote the tokens; its path is stored for ``generate`` and its fingerprint
            must be the token file's.
        class_from_folders: condition on the first folder of each image's file name as its class.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        device: where to train (under torchrun with CUDA: this rank's GPU, ``cuda:LOCAL_RANK``).
        progress: show a tqdm progress bar.
        on_step: called as ``on_step(step, loss_bits_per_token)`` after each step (for monitoring).
        max_seconds: also stop at the first step that ends this many wall-clock seconds after training
            started (the final checkpoint is written then; the schedule still runs towards ``steps``).
    """
    if steps < 1 or batch_size < 1 or checkpoint_every < 1:
        raise ValueError(f"steps, batch size and checkpoint interval must be >= 1; got {steps}, {batch_size}, "
                         f"{checkpoint_every}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 (or None for no time limit); got {max_seconds}")
    if preset not in PRESETS:
        raise ValueError(f"unknown prior preset {preset!r}; choose one of {sorted(PRESETS)}")
    tokens = load_tokens(tokens_path)
    layout = TokenLayout.of(tokens)
    tokenizer_path = _check_tokenizer(tokenizer, layout) if tokenizer is not None else None
    names = class_names_of(tokens.file_names) if class_from_folders else []
    labels = class_labels(tokens.file_names, names) if names else None
    sequences = layout.to_sequences(tokens.indices)  # (N, L, G) int64
    config = prior_config(preset, codebook_size=layout.codebook_size, num_groups=layout.num_groups,
                          seq_len=layout.seq_len, num_classes=len(names), seed=seed)
    peak_lr = DEFAULT_LR[preset] if lr is None else float(lr)
    settings = {"preset": preset, "steps": steps, "batch_size": batch_size, "lr": peak_lr, "seed": seed,
                "tokens_file": str(Path(tokens_path).resolve()), "num_images": tokens.num_images}
    out = check_output_path(out_dir)
    return _train(out, tokens, layout, sequences, labels, names, config, settings, tokenizer_path, peak_lr,
                  steps=steps, batch_size=batch_size, seed=seed, checkpoint_every=checkpoint_every,
                  device=_setup_distributed(torch.device(device)), progress=progress, on_step=on_step,
                  max_seconds=max_seconds)


def _setup_distributed(device: torch.device) -> torch.device:
    """Join torchrun's process group when launched by it (gloo on CPU, NCCL on CUDA) and return this rank's
    device. The group is kept for later calls (as the tokenizer's Trainer keeps it; re-creating a group in one
    process can hang): the caller destroys it (``gaussquant.train.distributed.cleanup``) when done. A plain
    run (no ``WORLD_SIZE`` > 1) changes nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not distributed_ready():
        return device
    from gaussquant.train import distributed as tdist

    return tdist.setup("cuda" if device.type == "cuda" else "cpu").device


class _NLL(nn.Module):
    """The training loss as a module's forward, so that DistributedDataParallel sees (and syncs) the call."""

    def __init__(self, prior: TokenPrior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, batch: Tensor, labels: Tensor | None) -> Tensor:
        return self.prior.nll_bits(batch, labels)  # (B,) bits per image


def _train(out: Path, tokens, layout: TokenLayout, sequences: Tensor, labels: Tensor | None, names: list[str],
           config, settings: dict, tokenizer_path: str | None, peak_lr: float, *, steps: int, batch_size: int,
           seed: int, checkpoint_every: int, device: torch.device, progress: bool,
           on_step: Callable[[int, float], None] | None, max_seconds: float | None = None) -> Path:
    """The loop of :func:`train_prior` (one process, or this rank of a torchrun group)."""
    from gaussquant.train.checkpoint import RunLock, find_resume_checkpoint, save_checkpoint, step_dir_name

    rank, world = rank_and_world()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    barrier()
    with RunLock(out) if rank == 0 else contextlib.nullcontext():
        model = TokenPrior(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=0.01)
        batch_gen = torch.Generator().manual_seed(seed)
        step = 0
        found = find_resume_checkpoint(out / "checkpoints", map_location="cpu")
        if found is not None:
            step_dir, meta, weights, state = found
            _check_resume(meta, config, layout, names, str(step_dir / "config.json"))
            model.load_state_dict(weights["model"])
            optimizer.load_state_dict(state["optimizer"])
            batch_gen.set_state(state["batch_generator"])
            step = int(state["step"])
            if rank == 0:
                log.info("resuming the prior from %s (step %d of %d)", step_dir, step, steps)
        barrier()  # every rank has read the checkpoint before rank 0 may write (and prune) the next one
        loss_fn: nn.Module = _NLL(model)
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            loss_fn = nn.parallel.DistributedDataParallel(loss_fn, device_ids=ids)
        if rank == 0:
            log.info("prior: %s preset, %d parameters, %d images of %d positions x %d groups (K=%d)%s",
                     settings["preset"], model.num_parameters(), tokens.num_images, layout.seq_len,
                     layout.num_groups, layout.codebook_size,
                     f"; {world} ranks x batch {batch_size}" if world > 1 else "")

        def checkpoint(at: int) -> Path:
            step_dir = out / "checkpoints" / step_dir_name(at)
            if rank == 0:
                meta = prior_meta(config, layout, class_names=names, tokenizer=tokenizer_path, step=at,
                                  train={**settings, "world_size": world})
                state = {"optimizer": optimizer.state_dict(), "batch_generator": batch_gen.get_state(), "step": at}
                step_dir = save_checkpoint(out / "checkpoints", at, meta=meta, weights={"model": model.state_dict()},
                                           training_state=state, keep_last=2)
            barrier()
            return step_dir

        bar = _bar(progress and rank == 0, steps, step)
        last = None
        model.train()
        t0 = time.perf_counter()
        while step < steps:
            # the global batch (the same draw on every rank); this rank trains on its slice
            rows = torch.randint(tokens.num_images, (world * batch_size,), generator=batch_gen)  # (W*B,)
            rows = rows[rank * batch_size:(rank + 1) * batch_size]  # (B,)
            batch = sequences[rows].to(device)  # (B, L, G)
            batch_labels = labels[rows].to(device) if labels is not None else None
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, peak_lr)
            bits = loss_fn(batch, batch_labels).mean() / layout.seq_len  # bits per token position
            optimizer.zero_grad(set_to_none=True)
            (bits * math.log(2)).backward()  # DDP averages the ranks' gradients: the global batch's mean
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            loss = _global_mean(bits.detach())
            if not math.isfinite(loss):  # the same value on every rank: all stop together
                raise RuntimeError(f"the prior's loss became {loss} at step {step}; lower --lr and rerun")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(bits_per_token=f"{loss:.3f}", rate=f"{layout.bits_per_token:.2f}")
            if on_step is not None:
                on_step(step, loss)
            out_of_time = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
            if max_seconds is not None and world > 1:  # any rank out of time stops them all at this step
                out_of_time = _global_mean(torch.tensor(float(out_of_time), device=device)) > 0
            if step % checkpoint_every == 0 or step == steps or out_of_time:
                last = checkpoint(step)
            if out_of_time:
                log.info("prior: stopped at step %d after %.1f s (max_seconds)", step, time.perf_counter() - t0)
                break
        if bar is not None:
            bar.close()
        if last is None:  # resumed a run that had already finished
            last = checkpoint(step)
    if rank == 0:
        log.info("prior trained for %d steps; checkpoint %s", step, last)
    return last


def _global_mean(value: Tensor) -> float:
    """The mean of a scalar over the ranks (the value itself without a process group)."""
    from gaussquant.train.distributed import all_reduce_mean_

    total = value.detach().float().clone()  # on this rank's device (NCCL needs CUDA tensors, gloo CPU ones)
    all_reduce_mean_([total])
    return float(total)


def _bar(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="prior", dynamic_ncols=True)


def _check_tokenizer(tokenizer: str | os.PathLike, layout: TokenLayout) -> str:
    """Load the tokenizer, check it wrote these tokens, and return its absolute path."""
    from gaussquant.encode import load_model
    from gaussquant.tokens import model_fingerprint

    model = load_model(tokenizer, torch.device("cpu"))
    fingerprint = model_fingerprint(model)
    if fingerprint != layout.model_fingerprint:
        raise ValueError(
            f"--tokenizer {str(tokenizer)!r} did not write these tokens (its fingerprint is {fingerprint[:12]}..., "
            f"the tokens' is {layout.model_fingerprint[:12]}...); pass the model that encoded them"
        )
    return str(Path(tokenizer).resolve())


def _check_resume(meta: dict, config, layout: TokenLayout, names: list[str], source: str) -> None:
    """Refuse to resume a run folder trained on other tokens or with other settings."""
    saved_config, saved_layout = read_prior_meta(meta, source)
    saved_layout.check_same(layout, "the tokens file")
    if saved_config != config or list(meta.get("class_names") or []) != names:
        raise ValueError(
            f"the run folder's checkpoint ({source}) was trained with other settings (preset, seed or classes: "
            f"{saved_config} vs {config}); pass another --out, or the settings it was started with"
        )
