"""The training loop (docs/method.md sections 3 and 7): data -> autoencoder -> objective -> step, with TDC.

One optimiser step ("step") = ``optim.grad_accum`` micro-batches of ``batch_size`` per process. Before
``loss.gan.disc_start`` every batch trains the generator only (no discriminator forward at all). From then
on each step is a generator update followed by a discriminator update on the same batch, using the
generator's detached reconstructions (no extra encode/decode, no wasted batch). The TDC multipliers are
updated once per generator step, from the KL of the whole global batch (the RateController all-reduces).

Determinism: model init from ``seed``; the reparameterisation noise from a local ``torch.Generator``
seeded per rank (``seed``, rank), and anything else random (dropout) from the global RNG, also seeded per
rank; both states are checkpointed for every rank. Data order comes from the :class:`ResumableSampler`
whose position is checkpointed. A resumed run therefore continues bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gaussquant.data.summary import describe_training_data
from gaussquant.distributed import distributed_ready
from gaussquant.losses.adversarial import adaptive_weight, hinge_d_loss, hinge_g_loss
from gaussquant.train import distributed as tdist
from gaussquant.train.checkpoint import RunLock, find_resume_checkpoint, save_checkpoint
from gaussquant.train.config import TrainConfig, config_to_dict, save_config_yaml
from gaussquant.train.divergence import check_finite_step
from gaussquant.train.interrupt import StopRequests, TrainingInterrupted
from gaussquant.train.monitor import Monitor
from gaussquant.train.resume_config import OPTIM_KEYS, apply_optim_settings, check_resume_config
from gaussquant.train.setup import Components, build_components, checkpoint_meta, init_weights

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`run` returns: the run directory, the steps done, the last checkpoint, the last
    logged metrics (floats), wall seconds and training throughput (images/s over all ranks)."""

    out: Path
    step: int
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0


class Trainer:
    """Owns the components, the step counter and the data position; :meth:`fit` trains to ``steps``.

    Holds the run folder's lock (train/checkpoint.py ``RunLock``) from construction until :meth:`fit` ends or
    :meth:`release` is called; another Trainer on the same folder meanwhile raises RuntimeError.
    """

    def __init__(self, cfg: TrainConfig, *, resume: bool = False) -> None:
        self.cfg = cfg
        self.info = tdist.setup(cfg.device)
        self.out = Path(cfg.out)
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.c: Components = build_components(cfg, self.info)
        if self.info.is_main:
            log.info("%s", describe_training_data(self.c.loader.dataset))
        self.step = 0
        self.epoch = 0
        self.consumed = 0  # samples of this epoch used by finished steps (this rank)
        self.noise = None  # the bottleneck's sampling generator, when its forward takes one
        self.last_checkpoint: Path | None = None  # named when a step diverges
        if "generator" in inspect.signature(self.c.model_module.bottleneck.forward).parameters:
            self.noise = torch.Generator(device=self.info.device)
            self.noise.manual_seed(cfg.seed * 1_000_003 + 7919 * (self.info.rank + 1) + 1)
        # a second trainer on this folder fails here, before it reads or writes anything (train/checkpoint.py)
        self._lock = RunLock(self.out).acquire() if self.info.is_main else None
        try:
            found = find_resume_checkpoint(self.out / "checkpoints", map_location=self.info.device)
            if found is not None:
                self._restore(found[0], found[1:])
            elif resume:
                raise FileNotFoundError(f"--resume: {str(self.out)!r} holds no checkpoint to resume from")
            elif cfg.init_from:
                init_weights(cfg, self.c)  # a new run from a trained model's weights (train/setup.py)
            if self.info.is_main:
                save_config_yaml(cfg, self.out / "config.yaml")
        except BaseException:
            self.release()
            raise
        self._iter = None
        self._amp = torch.autocast(self.info.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def release(self) -> None:
        """Unlock the run folder (:meth:`fit` does this when it ends; safe to call twice)."""
        if self._lock is not None:
            self._lock.release()

    # ------------------------------------------------------------------ data

    def _next_batch(self) -> Tensor:
        """The next micro-batch; a finished epoch starts the next one from the sampler's new permutation."""
        while True:
            if self._iter is None:
                self.c.sampler.load_state_dict({"epoch": self.epoch, "position": self.consumed})
                self._iter = iter(self.c.loader)
            try:
                x = next(self._iter)
            except StopIteration:
                self._iter, self.epoch, self.consumed = None, self.epoch + 1, 0
                continue
            x = x[0] if isinstance(x, (list, tuple)) else x
            self.consumed += x.shape[0]
            return x.to(self.info.device, non_blocking=True)

    # ------------------------------------------------------------------ steps

    def _sync(self, module: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        # why: with gradient accumulation only the last micro-batch all-reduces gradients
        if isinstance(module, nn.parallel.DistributedDataParallel) and not last:
            return module.no_sync()
        return contextlib.nullcontext()

    def _generator_step(self, xs: list[Tensor], gan: bool) -> tuple[dict[str, Tensor], list[Tensor]]:
        c, cfg = self.c, self.cfg
        logs: dict[str, Tensor] = {}
        kls, fakes, losses = [], [], []
        if c.disc is not None:
            c.disc_module.requires_grad_(False)  # the G pass must not touch D's gradients
        for i, x in enumerate(xs):
            with self._sync(c.model, i == len(xs) - 1), self._amp:
                out = c.model(x) if self.noise is None else c.model(x, generator=self.noise)
                obj = c.objective(x, out.x_hat, out.bottleneck)
                loss = obj.loss
                if gan:
                    g_loss = hinge_g_loss(c.disc_module(out.x_hat))
                    weight = torch.tensor(cfg.loss.gan.disc_weight, device=x.device)
                    if cfg.loss.gan.adaptive_weight:
                        weight = weight * adaptive_weight(obj.nll, g_loss, c.model_module.last_layer_weight)
                    loss = loss + weight * g_loss
                    obj.logs.update(g_loss=g_loss.detach(), d_weight=weight.detach())
                (loss / len(xs)).backward()
            losses.append(loss.detach())
            logs = obj.logs
            logs.update({f"stats/{k}": v for k, v in out.bottleneck.stats.items() if v.numel() == 1})
            if out.bottleneck.kl_bits is not None:
                kls.append(out.bottleneck.kl_bits.detach())
            fakes.append(out.x_hat.detach())
        tdist.all_reduce_mean_([p.grad for p in c.objective.extra_parameters() if p.grad is not None])
        watch = {"loss": torch.stack(losses)}
        if kls:
            watch["KL"] = torch.cat([k.reshape(-1) for k in kls])
        logs["grad_norm"] = self._clip_and_step(c.params, c.optimizer, c.scheduler, watch)
        update = getattr(c.model_module.bottleneck, "update_rate_controller", None)
        if update is not None and kls:
            update(torch.cat(kls))
        if kls:
            kl = torch.cat(kls).float()
            logs.update(kl_mean=kl.mean(), kl_min=kl.min(), kl_max=kl.max())
        if c.ema is not None:
            c.ema.update(c.model_module)
        return logs, fakes

    def _clip_and_step(
        self, params: list[nn.Parameter], opt: torch.optim.Optimizer, sched: Any, watch: dict[str, Tensor]
    ) -> Tensor:
        clip = self.cfg.optim.grad_clip
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            norm = torch.stack(grads).norm() if grads else torch.zeros(())
        # a NaN/inf loss, KL or gradient stops the run before the step is applied (train/divergence.py)
        check_finite_step(self.step + 1, {**watch, "gradient norm": norm}, self.last_checkpoint)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return norm.detach()

    def _init_discriminator(self, x: Tensor) -> None:
        """First use: data-dependent norms (ActNorm) see a real batch, then rank 0's weights win."""
        c = self.c
        with torch.no_grad():
            c.disc_module(x)
        if distributed_ready():
            for t in list(c.disc_module.parameters()) + list(c.disc_module.buffers()):
                dist.broadcast(t.data, src=0)
        self.c.disc_ready = True

    def _discriminator_step(self, xs: list[Tensor], fakes: list[Tensor]) -> dict[str, Tensor]:
        c = self.c
        c.disc_module.requires_grad_(True)
        for i, (x, fake) in enumerate(zip(xs, fakes)):
            with self._sync(c.disc, i == len(xs) - 1), self._amp:
                d_loss = hinge_d_loss(c.disc(x), c.disc(fake))
                (d_loss / len(xs)).backward()
        watch = {"discriminator loss": d_loss.detach()}
        norm = self._clip_and_step(list(c.disc_module.parameters()), c.disc_optimizer, c.disc_scheduler, watch)
        return {"d_loss": d_loss.detach(), "d_grad_norm": norm}

    def train_step(self) -> dict[str, Tensor]:
        """One optimiser step (generator, then discriminator once it has started)."""
        cfg, c = self.cfg, self.c
        xs = [self._next_batch() for _ in range(cfg.optim.grad_accum)]
        gan = c.disc is not None and self.step >= cfg.loss.gan.disc_start
        if gan and not c.disc_ready:
            self._init_discriminator(xs[0])
        c.model.train()
        logs, fakes = self._generator_step(xs, gan)
        if gan:
            logs.update(self._discriminator_step(xs, fakes))
        logs["lr"] = torch.tensor(c.scheduler.get_last_lr()[0])
        self.step += 1
        return logs

    # ------------------------------------------------------------------ outputs

    def _multipliers(self) -> dict[str, Tensor]:
        rc = getattr(self.c.model_module.bottleneck, "rate_controller", None)
        names = ("multiplier", "multiplier_max", "multiplier_min")
        return {n: getattr(rc, n).detach().reshape(-1)[0] for n in names if rc is not None and hasattr(rc, n)}

    @torch.no_grad()
    def write_images(self) -> None:
        model = self.c.model_module
        was_training = model.training
        model.eval()
        x = self.c.preview.to(self.info.device)
        with self._amp:
            x_hat = model(x).x_hat
        model.train(was_training)
        self.monitor.image(self.step, x, x_hat)

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0 writes; every rank contributes its RNG state)."""
        c = self.c
        rng = {"torch": torch.get_rng_state()}
        if self.noise is not None:
            rng["noise"] = self.noise.get_state()
        if self.info.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.info.device)
        rngs = [rng]
        if distributed_ready():
            rngs = [None] * self.info.world_size
            dist.all_gather_object(rngs, rng)
            rngs = [{k: v.cpu() for k, v in r.items()} for r in rngs]
        if not self.info.is_main:
            return None
        state = {
            "step": self.step,
            "sampler": {**c.sampler.state_dict(consumed=self.consumed), "epoch": self.epoch},
            "rng": rngs,
            "optimizer": c.optimizer.state_dict(),
            "scheduler": c.scheduler.state_dict(),
            "objective": c.objective.state_dict(),
            "num_threads": torch.get_num_threads(),  # bitwise resume on CPU needs the same count
        }
        weights = {"model": c.model_module.state_dict()}
        if c.ema is not None:
            weights["ema"] = c.ema.state_dict()
        if c.disc is not None:
            weights["discriminator"] = c.disc_module.state_dict()
            state["disc_optimizer"] = c.disc_optimizer.state_dict()
            state["disc_scheduler"] = c.disc_scheduler.state_dict()
            state["disc_ready"] = c.disc_ready
        meta = checkpoint_meta(self.cfg, c, self.step)
        self.last_checkpoint = save_checkpoint(
            self.out / "checkpoints", self.step, meta=meta, weights=weights, training_state=state,
            keep_last=self.cfg.keep_last,
        )
        return self.last_checkpoint

    def _restore(self, step_dir: Path, loaded: tuple) -> None:
        from gaussquant.pretrained import load_state_strict

        c = self.c
        meta, weights, state = loaded
        changed = check_resume_config(meta.get("train"), config_to_dict(self.cfg), str(step_dir))
        load_state_strict(c.model_module, weights["model"], str(step_dir / "model.safetensors"))
        if c.ema is not None:
            if "ema" not in weights:
                raise ValueError(f"{str(step_dir)!r} has no ema.safetensors but this run uses ema_decay")
            c.ema.load_state_dict(weights["ema"])
        c.optimizer.load_state_dict(state["optimizer"])
        c.scheduler.load_state_dict(state["scheduler"])
        c.objective.load_state_dict(state["objective"])
        if c.disc is not None and "discriminator" in weights:
            load_state_strict(c.disc_module, weights["discriminator"], str(step_dir / "discriminator.safetensors"))
            c.disc_optimizer.load_state_dict(state["disc_optimizer"])
            c.disc_scheduler.load_state_dict(state["disc_scheduler"])
            c.disc_ready = bool(state["disc_ready"])
        c.sampler.load_state_dict(state["sampler"])  # validates seed, length and world size
        self.epoch, self.consumed = int(state["sampler"]["epoch"]), int(state["sampler"]["position"])
        rngs = state["rng"]
        if len(rngs) != self.info.world_size:
            raise ValueError(f"checkpoint was written by {len(rngs)} processes; resume with the same number")
        torch.set_rng_state(rngs[self.info.rank]["torch"].cpu())
        if self.noise is not None:
            self.noise.set_state(rngs[self.info.rank]["noise"].cpu())
        if "cuda" in rngs[self.info.rank] and self.info.device.type == "cuda":
            torch.cuda.set_rng_state(rngs[self.info.rank]["cuda"].cpu(), self.info.device)
        self.step = int(state["step"])
        self.last_checkpoint = step_dir
        threads = int(state.get("num_threads", torch.get_num_threads()))
        if threads != torch.get_num_threads():
            log.warning(
                "checkpoint %s was written with %d CPU threads, this process uses %d: the resumed run will not "
                "be bit-identical to an uninterrupted one on CPU (set OMP_NUM_THREADS=%d for that)",
                step_dir, threads, torch.get_num_threads(), threads,
            )
        if any(line.split(":")[0] in OPTIM_KEYS for line in changed):  # new lr / schedule / betas run from now
            o = self.cfg.optim
            apply_optim_settings(c.optimizer, c.scheduler, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
            if c.disc is not None:
                apply_optim_settings(c.disc_optimizer, c.disc_scheduler, lr=o.disc_lr or o.lr, betas=o.betas,
                                     weight_decay=o.weight_decay)
        log.info("resumed from %s at step %d", step_dir, self.step)

    # ------------------------------------------------------------------ loop

    def _should_stop(self, stops: StopRequests, deadline: float | None) -> str | None:
        """``"signal"``, ``"time"`` or None, agreed by every rank (one tiny all-reduce when distributed)."""
        flag = 2 if stops.signum is not None else 1 if deadline is not None and time.perf_counter() >= deadline else 0
        if dist.is_initialized():
            t = torch.tensor([flag], device=self.info.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t.item())
        return {0: None, 1: "time", 2: "signal"}[flag]

    def fit(self, on_step: Callable[[Trainer, dict[str, Tensor]], None] | None = None) -> TrainResult:
        """Train to ``cfg.steps``, or until ``cfg.max_seconds`` of wall clock (checked after every step),
        or until SIGINT / SIGTERM (then the unsaved steps are checkpointed and
        :class:`~gaussquant.train.interrupt.TrainingInterrupted` is raised). ``on_step(trainer, logs)``
        runs after every step (its time counts against the budget)."""
        cfg = self.cfg
        self.monitor = Monitor(self.out, total_steps=cfg.steps, start_step=self.step, enabled=self.info.is_main)
        start_step, t0 = self.step, time.perf_counter()
        deadline = t0 + cfg.max_seconds if cfg.max_seconds is not None else None
        last_ckpt, values, window_t, window_steps = None, {}, time.perf_counter(), 0
        images_per_step = cfg.batch_size * cfg.optim.grad_accum * self.info.world_size
        stop = None
        try:
            with StopRequests() as stops:
                while self.step < cfg.steps:
                    logs = self.train_step()
                    window_steps += 1
                    self.monitor.advance()
                    if on_step is not None:
                        on_step(self, logs)
                    stop = self._should_stop(stops, deadline)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps or stop:
                        now = time.perf_counter()
                        logs["img_per_s"] = torch.tensor(images_per_step * window_steps / (now - window_t))
                        values = self.monitor.log(self.step, {**logs, **self._multipliers()})
                        window_t, window_steps = now, 0
                    if self.step % cfg.image_every == 0 or self.step == cfg.steps or stop == "time":
                        self.write_images()
                    if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or (stop and self.step > start_step):
                        last_ckpt = self.save() or last_ckpt
                    if stop:
                        break
        finally:
            self.monitor.close()
            self.release()
        tdist.barrier()
        if stop == "signal":
            raise TrainingInterrupted(self.step, stops.signum or signal.SIGINT)
        if stop == "time":
            log.info("wall-clock budget of %.0f s reached at step %d of %d", cfg.max_seconds, self.step, cfg.steps)
        seconds = time.perf_counter() - t0
        done = self.step - start_step
        return TrainResult(
            out=self.out, step=self.step, checkpoint=last_ckpt, metrics=values, seconds=seconds,
            images_per_second=images_per_step * done / seconds if done else 0.0,
        )


def run(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Train ``config`` (Python API behind ``gaussquant train``).

    Resumes automatically when ``config.out`` already holds checkpoints; ``resume=True`` additionally makes
    a missing checkpoint an error. Under ``torchrun`` every process calls this; rank 0 writes outputs.
    """
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.fit()
    finally:
        del trainer  # its DDP wrapper holds the process group; let it go before the group is destroyed
        tdist.cleanup()
