"""``gaussquant train``: train an autoencoder from a YAML config or a packaged preset.

Ctrl-C or SIGTERM stops at the next step boundary, saves a checkpoint of the unsaved steps and prints one
line, ``interrupted at step N; rerun the same command to resume`` (exit status 130, or 143 for SIGTERM).
``--set max_seconds=S`` stops after S seconds of wall clock, whatever the step count.

Also runs under ``torchrun --nproc-per-node=N -m gaussquant train ...`` (DDP; rank 0 logs and saves).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a YAML training config")
    src.add_argument("--preset", help="a packaged preset name (see --list-presets), e.g. unet-tiny-gq")
    src.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    parser.add_argument("--data", help="train on this image folder (sets data.source=folder, data.path=DIR)")
    parser.add_argument("--steps", type=int, help="optimiser steps (overrides the config)")
    parser.add_argument("--out", help="run directory (overrides the config); resumes when it has checkpoints")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=3e-4 --set loss.gan.disc_start=null (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="require a checkpoint in --out and resume from it")
    parser.add_argument(
        "--init-from", metavar="MODEL",
        help="start from the weights of a trained model (save dir, checkpoint or run dir): weights only, fresh "
        "optimizer; the bottleneck may differ (e.g. a vanilla VAE fine-tuned with TDC); prints what was loaded",
    )
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print parameters, activation memory per image and a measured step time on this device "
        "(random images, batch 1 on CPU), then exit without writing anything",
    )


def main(args: argparse.Namespace) -> int:
    # imported here so that ``gaussquant --help`` does not import torch models
    from gaussquant.train.config import load_config, preset_names

    if args.list_presets:
        print("\n".join(preset_names()))
        return 0
    overrides = list(args.overrides)
    if args.data:
        overrides += ["data.source=folder", f"data.path={args.data}"]
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    if args.out:
        overrides.append(f"out={args.out}")
    if args.init_from:
        overrides.append(f"init_from={args.init_from}")
    config = load_config(args.config or args.preset, overrides)
    if getattr(args, "dry_run", False):
        from gaussquant.train.dry_run import dry_run

        print(f"dry run of {args.config or args.preset}\n{dry_run(config).to_text()}")
        return 0
    from gaussquant.tokens import check_output_path

    check_output_path(config.out)
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise ValueError(f"cannot use {config.out!r} as the run folder: it is a file; choose another --out")
    from gaussquant.train.interrupt import TrainingInterrupted
    from gaussquant.train.trainer import run

    try:
        result = run(config, resume=args.resume)
    except TrainingInterrupted as stop:  # Ctrl-C / SIGTERM: the trainer saved what was due
        print(stop, file=sys.stderr, flush=True)
        return stop.exit_code
    except KeyboardInterrupt:  # before the loop started, or a second Ctrl-C
        print("interrupted before the next checkpoint; rerun the same command to resume", file=sys.stderr)
        return 130
    if result.checkpoint is not None or result.step:
        kl = {k: result.metrics[k] for k in ("kl_mean", "kl_min", "kl_max") if k in result.metrics}
        log.info(
            "trained to step %d in %.1f s (%.1f img/s); %s; checkpoint %s",
            result.step, result.seconds, result.images_per_second,
            ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in kl.items()) or "no KL", result.checkpoint,
        )
    return 0
