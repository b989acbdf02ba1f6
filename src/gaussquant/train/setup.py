"""Build everything a training run needs from a :class:`TrainConfig` (the only place that reads the tree).

Leaves (models, bottlenecks, losses, data) get plain arguments from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gaussquant.data.config import build_dataset
from gaussquant.data.sampler import ResumableSampler, make_loader
from gaussquant.losses.objective import Objective
from gaussquant.models.discriminator import PatchDiscriminator
from gaussquant.models.presets import build_autoencoder
from gaussquant.pretrained import describe_model, state_digest
from gaussquant.quantizers.build import build_bottleneck
from gaussquant.train.config import TrainConfig, config_to_dict
from gaussquant.train.distributed import DistInfo
from gaussquant.train.ema import EMA
from gaussquant.train.optim import build_optimizer, build_scheduler

PREVIEW_IMAGES = 8
log = logging.getLogger(__name__)


@dataclass
class Components:
    """Model (``model`` may be DDP/compiled; ``model_module`` is the plain Autoencoder), objective,
    optimisers, EMA, the optional discriminator and the data pipeline."""

    model: nn.Module
    model_module: nn.Module
    objective: Objective
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: EMA | None
    disc: nn.Module | None
    disc_module: nn.Module | None
    disc_optimizer: torch.optim.Optimizer | None
    disc_scheduler: Any
    sampler: ResumableSampler
    loader: DataLoader
    preview: Tensor
    disc_ready: bool = False


def build_objective(cfg: TrainConfig) -> Objective:
    """The objective of ``cfg.loss``; LPIPS is loaded only when its weight is non-zero."""
    loss = cfg.loss
    perceptual = None
    if loss.perceptual_weight:
        from gaussquant.losses.perceptual import LPIPS

        perceptual = LPIPS(net=loss.perceptual_net, weights_dir=loss.perceptual_weights_dir)
    return Objective(
        l1_weight=loss.l1_weight, l2_weight=loss.l2_weight, perceptual=perceptual,
        perceptual_weight=loss.perceptual_weight, learned_logvar=loss.learned_logvar,
        rate_weight=loss.rate_weight, aux_weights=loss.aux_weights,
    )


def _wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    # broadcast_buffers=False: buffers that matter (TDC multipliers) are kept equal by all-reduced updates
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def _data(cfg: TrainConfig, info: DistInfo) -> tuple[ResumableSampler, DataLoader, Tensor]:
    if cfg.data.image_size != cfg.model.image_size:
        raise ValueError(
            f"data.image_size ({cfg.data.image_size}) must equal model.image_size ({cfg.model.image_size})"
        )
    train, evaluation = build_dataset(cfg.data)
    if len(train) < cfg.batch_size * info.world_size:
        raise ValueError(f"the training set has {len(train)} images, fewer than one global batch")
    sampler = ResumableSampler(
        len(train), seed=cfg.seed, shuffle=True, rank=info.rank, world_size=info.world_size, drop_last=True,
        groups=getattr(train, "sample_groups", None), window=cfg.data.shard_window,  # remote shards: by shard
    )
    loader = make_loader(
        train, sampler, cfg.batch_size, cfg.data.num_workers, seed=cfg.seed, drop_last=True,
        pin_memory=info.device.type == "cuda",
    )
    n = min(PREVIEW_IMAGES, len(evaluation))
    preview = torch.stack([_image(evaluation[i]) for i in range(n)])
    return sampler, loader, preview


def _image(item: Any) -> Tensor:
    return item[0] if isinstance(item, (list, tuple)) else item


def build_components(cfg: TrainConfig, info: DistInfo) -> Components:
    """Seeded model init (identical on every rank), then per-rank RNG for noise and dropout."""
    torch.manual_seed(cfg.seed)
    model = build_autoencoder(cfg.model, build_bottleneck(cfg.bottleneck)).to(info.device)
    for name in cfg.freeze:
        getattr(model, name).requires_grad_(False)
    objective = build_objective(cfg).to(info.device)
    disc = None
    if cfg.loss.gan.disc_start is not None:
        d = cfg.loss.gan.disc
        kwargs = {} if d.norm is None else {"norm": d.norm}
        disc = PatchDiscriminator(in_channels=3, base_channels=d.base_channels, n_layers=d.n_layers, **kwargs)
        disc = disc.to(info.device)
    # why: each rank draws different reparameterisation noise; the state is checkpointed per rank
    torch.manual_seed(cfg.seed * 1_000_003 + 7919 * (info.rank + 1))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    params = list(model.parameters()) + objective.extra_parameters()
    o = cfg.optim
    optimizer = build_optimizer(params, name=o.name, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    sched = dict(warmup_steps=o.warmup_steps, total_steps=cfg.steps, schedule=o.schedule)
    scheduler = build_scheduler(optimizer, **sched)
    d_opt = d_sched = None
    if disc is not None:
        d_opt = build_optimizer(
            disc.parameters(), name=o.name, lr=o.disc_lr or o.lr, betas=o.betas, weight_decay=o.weight_decay
        )
        d_sched = build_scheduler(d_opt, **sched)
    forward_model = torch.compile(model) if cfg.compile else model
    sampler, loader, preview = _data(cfg, info)
    return Components(
        model=_wrap(forward_model, info), model_module=model, objective=objective,
        params=[p for p in params if p.requires_grad], optimizer=optimizer, scheduler=scheduler, ema=ema,
        disc=_wrap(disc, info) if disc is not None else None, disc_module=disc, disc_optimizer=d_opt,
        disc_scheduler=d_sched, sampler=sampler, loader=loader, preview=preview,
    )


def init_weights(cfg: TrainConfig, c: Components) -> None:
    """``init_from``: load a trained model's matching weights (train/init_from.py), log the mapping, and
    restart the EMA from them. The optimiser has not stepped yet, so its state is fresh."""
    from gaussquant.train.init_from import init_from_pretrained

    report = init_from_pretrained(c.model_module, cfg.init_from)
    log.info("%s", report.to_text())
    if c.ema is not None:
        c.ema = EMA(c.model_module, cfg.ema_decay)


def checkpoint_meta(cfg: TrainConfig, c: Components, step: int) -> dict[str, Any]:
    """config.json of a checkpoint: the model's own description (``model.config``, weight digests) + step +
    the training config."""
    meta = describe_model(c.model_module)
    if c.ema is not None:
        meta["weights_sha256"]["ema"] = state_digest(c.ema.state_dict())
    meta["step"] = step
    meta["train"] = config_to_dict(cfg)
    return meta
