"""``gaussquant demo``: parsing only; the whole job is :func:`gaussquant.demo.run`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--steps", type=int, help="fixed training steps (default: fit --budget-minutes)")
    parser.add_argument("--budget-minutes", type=float, default=5.0,
                        help="training wall-clock budget when --steps is not given (default 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from gaussquant.demo import format_summary, run

    result = run(args.out, steps=args.steps, budget_minutes=args.budget_minutes, device=args.device,
                 seed=args.seed)
    print(format_summary(result))
    print(f"report: {result.report}  (model: {result.model_dir}, tokens: {result.tokens}; "
          f"{result.total_seconds:.0f} s in all)")
    return 0
