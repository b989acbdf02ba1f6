"""The ``gaussquant demo`` command line (parsing and printing only; :func:`gaussquant.demo.run.run` works)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--budget-minutes", type=float, default=6.0,
                        help="wall-clock budget of the whole demo; the live training gets what the rest "
                             "leaves and stops when its time is up (default 6)")
    parser.add_argument("--live-steps", type=int, default=None,
                        help="train the live model for exactly N steps instead of filling the budget")
    parser.add_argument("--max-side", type=int, default=512,
                        help="shrink held-out photos whose longer side exceeds this (default 512)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: one per idle core, from the load average)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the live run and of the prior's samples")
    parser.add_argument("--prior-seconds", type=float, default=None,
                        help="seconds of training for the tiny prior whose samples end the report (at most a "
                             "tenth of the budget, taken from the live training; 0 skips it; default 25)")
    parser.add_argument("--prior-steps", type=int, default=None,
                        help="train the prior for exactly N steps instead")


def main(args: argparse.Namespace) -> int:
    from gaussquant.demo.report import format_summary
    from gaussquant.demo.run import run
    from gaussquant.train.interrupt import TrainingInterrupted

    try:
        result = run(args.out, budget_minutes=args.budget_minutes, live_steps=args.live_steps,
                     max_side=args.max_side, threads=args.threads, seed=args.seed,
                     prior_seconds=args.prior_seconds, prior_steps=args.prior_steps)
    except TrainingInterrupted as stop:
        print(f"demo interrupted during the live training at step {stop.step}; its outputs so far are in "
              f"{args.out}", flush=True)
        return stop.exit_code
    print(format_summary(result))
    for warning in result.warnings:
        print(f"warning (also in the report): {warning}")
    print(f"report: {result.report}  (model: {result.model_dir}, tokens: {result.token_dir}; "
          f"{result.total_seconds:.0f} s in all)")
    return 0
