"""Theorem check (docs/method.md section 5): Monte-Carlo large-error probability against log K - KL, exact
curve and both bounds.

Per dimension, K i.i.d. N(0, 1) codewords, rule ``nearest``; R = KL(N(mu, sigma^2) || N(0, 1)) in nats and
t = log K - R. For a few posteriors (mu, sigma), K = round(e^(R + t)) over a grid of t; each point is a
Monte-Carlo estimate over ``--trials`` independent codebooks (``quantizers.theory.monte_carlo_large_error``)
drawn beside the exact (1 - P_q)^K, the achievability upper bound and the converse lower bound. The
check: every estimate lies within 4 standard errors of the exact value, and the exact value between the
bounds. Writes ``OUT/theory.json`` and ``OUT/figures/theory.png``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

POSTERIORS = ((0.0, 0.3), (0.5, 0.2), (1.0, 0.1), (1.5, 0.05))


def run(out: str | Path = "runs/bench-theory", *, trials: int = 4000, seed: int = 0,
        t_values: tuple[float, ...] = tuple(x / 2 for x in range(-6, 7))) -> dict[str, Any]:
    """Compute the grid; returns ``{"rows": [...], "all_within_4se": bool, "bounds_hold": bool}``."""
    from gaussquant.quantizers import theory

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for mu, sigma in POSTERIORS:
        r = float(theory.kl_nats(mu, sigma))
        seen: set[int] = set()
        for t in t_values:
            k = max(1, round(math.exp(r + t)))
            if k in seen:  # small R: several t round to the same K (at least 1)
                continue
            seen.add(k)
            p_mc, se = theory.monte_carlo_large_error(mu, sigma, k, trials, gen)
            exact = float(theory.large_error_probability(mu, sigma, k))
            rows.append({
                "mu": mu, "sigma": sigma, "kl_nats": r, "K": k, "t": math.log(k) - r, "monte_carlo": p_mc,
                "standard_error": se, "exact": exact,
                "achievability_upper": float(theory.achievability_bound(mu, sigma, k)),
                "converse_lower": float(theory.converse_bound(mu, sigma, k)),
            })
    within = all(abs(r["monte_carlo"] - r["exact"]) <= 4 * r["standard_error"] + 1e-12 for r in rows)
    bounds = all(r["converse_lower"] - 1e-9 <= r["exact"] <= r["achievability_upper"] + 1e-9 for r in rows)
    result = {"trials": trials, "seed": seed, "rows": rows, "all_within_4se": within, "bounds_hold": bounds}
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "theory.json").write_text(json.dumps(result, indent=1))
    plot(rows, out / "figures" / "theory.png")
    return result


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    posteriors = sorted({(r["mu"], r["sigma"]) for r in rows})
    fig = Figure(figsize=(3.2 * len(posteriors), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    for i, (mu, sigma) in enumerate(posteriors):
        ax = fig.add_subplot(1, len(posteriors), i + 1)
        pts = sorted((r for r in rows if (r["mu"], r["sigma"]) == (mu, sigma)), key=lambda r: r["t"])
        t = [r["t"] for r in pts]
        ax.plot(t, [r["exact"] for r in pts], "k-", label="exact (1-P_q)^K")
        ax.plot(t, [min(1.0, r["achievability_upper"]) for r in pts], "g--", label="achievability (upper)")
        ax.plot(t, [max(0.0, r["converse_lower"]) for r in pts], "r--", label="converse (lower)")
        ax.errorbar(t, [r["monte_carlo"] for r in pts], yerr=[2 * r["standard_error"] for r in pts], fmt="o",
                    ms=3, color="tab:blue", label="Monte Carlo ± 2 s.e.")
        ax.set_title(f"mu={mu:g}, sigma={sigma:g} (R={pts[0]['kl_nats']:.2f} nats)", fontsize=8)
        ax.set_xlabel("t = log K - KL (nats)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("P(|z_hat - mu| >= sigma)")
    fig.axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=4000, help="independent codebooks per point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-theory")


def main(args: argparse.Namespace) -> int:
    result = run(args.out, trials=args.trials, seed=args.seed)
    print("   mu  sigma   R(nats)      K      t   monte carlo (s.e.)     exact   converse  achievability")
    for r in result["rows"]:
        print(f"{r['mu']:5.2f} {r['sigma']:6.2f} {r['kl_nats']:9.3f} {r['K']:6d} {r['t']:6.2f}   "
              f"{r['monte_carlo']:.4f} ({r['standard_error']:.4f})   {r['exact']:.4f}   "
              f"{r['converse_lower']:8.4f}  {r['achievability_upper']:.4f}")
    print(f"Monte Carlo within 4 s.e. of exact everywhere: {result['all_within_4se']}; "
          f"exact between the bounds everywhere: {result['bounds_hold']}")
    return 0
