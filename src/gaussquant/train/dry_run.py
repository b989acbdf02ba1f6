"""``gaussquant train --dry-run``: size a run before renting GPUs (parameters, activation memory, step time).

Nothing is written and no data are read: the model, objective and optimiser of the config are built on the
current device and fed random images in [-1, 1] of the configured size.

- **parameters**: of the autoencoder (and of the discriminator, when the config has one);
- **activation memory per image**: the bytes of the tensors autograd saves for the backward pass of one
  forward + objective + backward (counted with :func:`torch.autograd.graph.saved_tensors_hooks`, each
  storage once, parameters excluded), at batch 1 and batch 2: ``per image = A(2) - A(1)`` and
  ``fixed = A(1) - per image``. This is what grows with the batch; weights, gradients and Adam's two moments
  (4 x the parameter bytes in fp32) come on top, and allocator overheads and temporaries are not counted
  (on a GPU the measured peak is printed as well);
- **step time**: wall time of ``steps`` full optimiser steps (forward, objective, backward, Adam) after the
  two measuring passes, which serve as warm-up. On a GPU the batch is the configured per-rank ``batch_size``;
  on a CPU it is 1, and when the first (batch-1) step already took over :data:`SLOW_STEP_S` its time is
  reported instead of running another (a paper preset on CPU: three passes, minutes); the report says so.

Not measured: the discriminator's passes (its parameters are counted), ``torch.compile`` (the model runs
eagerly), and the data loader. ``precision: bf16`` is honoured (autocast as in training).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gaussquant.train.config import TrainConfig

SLOW_STEP_S = 5.0  # on CPU, a first step slower than this is the step time (no third pass)


@dataclass
class DryRunReport:
    """What :func:`dry_run` measured; ``notes`` say what was left out or changed."""

    device: str
    image_size: int
    precision: str
    params: int
    disc_params: int
    activation_bytes_per_image: int
    activation_bytes_fixed: int
    step_batch: int
    step_seconds: float
    peak_device_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        mib = 2.0**20
        lines = [
            f"device: {self.device}   image: {self.image_size}x{self.image_size}   precision: {self.precision}",
            f"parameters: {self.params:,} ({self.params * 4 / mib:.1f} MiB in fp32; with gradients and Adam "
            f"moments {self.params * 16 / mib:.1f} MiB)",
        ]
        if self.disc_params:
            lines.append(f"discriminator parameters: {self.disc_params:,}")
        lines += [
            f"activation memory: {self.activation_bytes_per_image / mib:.1f} MiB per image "
            f"(+ {max(0, self.activation_bytes_fixed) / mib:.1f} MiB per step, whatever the batch)",
            f"step time: {self.step_seconds:.3f} s at batch {self.step_batch} "
            f"({self.step_batch / self.step_seconds:.3g} img/s)",
        ]
        if self.peak_device_bytes is not None:
            lines.append(f"peak device memory during the step: {self.peak_device_bytes / mib:.1f} MiB")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def saved_tensor_bytes(run: callable, exclude: list[Tensor]) -> int:  # type: ignore[valid-type]
    """Bytes of the distinct storages autograd saves while ``run()`` builds its graph (``exclude``:
    tensors whose storage is not counted, e.g. the parameters)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr not in seen:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available; use --set device=cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _objective(cfg: TrainConfig, notes: list[str]) -> nn.Module:
    from gaussquant.train.setup import build_objective

    try:
        return build_objective(cfg)
    except (FileNotFoundError, OSError, RuntimeError) as error:
        cfg.loss.perceptual_weight = 0.0
        notes.append(f"the perceptual (LPIPS) loss is left out: its weights could not be loaded ({error})")
        return build_objective(cfg)


def dry_run(cfg: TrainConfig, *, steps: int = 1, seed: int = 0) -> DryRunReport:
    """Measure ``cfg`` on the device it would train on (see the module docstring)."""
    from gaussquant.models.discriminator import PatchDiscriminator
    from gaussquant.models.presets import build_autoencoder
    from gaussquant.quantizers.build import build_bottleneck
    from gaussquant.train.optim import build_optimizer

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = _device(cfg.device)
    notes: list[str] = ["random images, no data read; no run folder written"]
    torch.manual_seed(cfg.seed)
    model = build_autoencoder(cfg.model, build_bottleneck(cfg.bottleneck)).to(device)
    objective = _objective(cfg, notes).to(device)
    disc_params = 0
    if cfg.loss.gan.disc_start is not None:
        d = cfg.loss.gan.disc
        kwargs = {} if d.norm is None else {"norm": d.norm}
        disc = PatchDiscriminator(in_channels=3, base_channels=d.base_channels, n_layers=d.n_layers, **kwargs)
        disc_params = sum(p.numel() for p in disc.parameters())
        notes.append("the discriminator's passes are not measured (its parameters are counted)")
    if cfg.compile:
        notes.append("torch.compile is not applied: the model runs eagerly")
    params = list(model.parameters()) + list(objective.extra_parameters())
    o = cfg.optim
    optimizer = build_optimizer(params, name=o.name, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    generator = torch.Generator().manual_seed(seed)
    size = cfg.model.image_size
    frozen = list(model.parameters()) + list(objective.parameters())

    def images(batch: int) -> Tensor:
        return (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(device)

    def forward_backward(x: Tensor) -> None:
        with amp:
            out = model(x)
            loss = objective(x, out.x_hat, out.bottleneck).loss
        loss.backward()

    measured, first_step = [], 0.0
    for batch in (1, 2):
        x = images(batch)
        start = time.perf_counter()
        measured.append(saved_tensor_bytes(lambda: forward_backward(x), frozen))
        if batch == 1:
            optimizer.step()  # a whole first step: its time stands in for the timed one when that is slow
            first_step = time.perf_counter() - start
        optimizer.zero_grad(set_to_none=True)
    per_image = measured[1] - measured[0]
    step_batch = cfg.batch_size if device.type == "cuda" else 1
    if device.type != "cuda" and cfg.batch_size != 1:
        notes.append(f"on CPU the step is timed at batch 1, not the configured batch_size {cfg.batch_size}")
    if device.type != "cuda" and first_step > SLOW_STEP_S:
        # why: bounded on CPU: a paper preset's step takes a minute or more; do not run a third one
        notes.append(f"the step took over {SLOW_STEP_S:.0f} s: its time is that of the first (measuring) step")
        return _report(cfg, device, model, disc_params, measured, per_image, 1, first_step, None, notes)
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    x = images(step_batch)
    start = time.perf_counter()
    for _ in range(steps):
        forward_backward(x)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device))
    seconds = (time.perf_counter() - start) / steps
    return _report(cfg, device, model, disc_params, measured, per_image, step_batch, seconds, peak, notes)


def _report(cfg: TrainConfig, device: torch.device, model: nn.Module, disc_params: int, measured: list[int],
            per_image: int, step_batch: int, seconds: float, peak: int | None, notes: list[str]) -> DryRunReport:
    return DryRunReport(
        device=str(device), image_size=cfg.model.image_size, precision=cfg.precision,
        params=sum(p.numel() for p in model.parameters()), disc_params=disc_params,
        activation_bytes_per_image=per_image, activation_bytes_fixed=measured[0] - per_image,
        step_batch=step_batch, step_seconds=seconds, peak_device_bytes=peak, notes=notes,
    )
