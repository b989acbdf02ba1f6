"""TDC vs a vanilla KL weight: the spread of KL over groups and dimensions (docs/method.md section 3).

The paper reports per-dimension KL spanning 0.26-27.29 bits without TDC against 2.93-5.63 bits with it.
Here, on the held-out photo crops, three tiny-UNet Gaussian VAEs of ``bench quality`` (same recipe, seed 0):
the vanilla VAE (fixed KL weight), the TDC VAE at 8 bits per group of d = 4, and the TDC VAE at d = 1 with
2 bits per dimension (the same mean rate of 2 bits per dimension, 8 per token). For each: the mean, min,
max and histogram of the KL per token and dimension, and of the KL per group of 4 dimensions (per token),
against the band log2 K +- 0.5. Models missing from ``--quality-out`` are trained with the same recipe.
Writes ``OUT/spread.json`` and ``OUT/figures/tdc_spread.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

MODELS = (("vanilla", "vanilla (fixed KL weight)"), ("tdc-8", "TDC d=4, 8 bits/group"),
          ("tdc-d1-8", "TDC d=1, 2 bits/dim"))


@torch.no_grad()
def kl_values(model: Any, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (token, dimension) KL bits (N,) and per (token, group of 4 contiguous dims) KL bits (N / 4,)."""
    dims, groups = [], []
    for i in range(0, len(data), 64):
        x = torch.stack([data[j] for j in range(i, min(i + 64, len(data)))])
        post = model.encode(x).posterior
        kl = post.kl_bits()  # (B, C, h, w) per dimension
        per_dim = kl.movedim(1, -1)  # (B, h, w, C)
        dims.append(per_dim.reshape(-1))
        c = per_dim.shape[-1]
        groups.append(per_dim.reshape(-1, c // 4 if c >= 4 else 1, min(4, c)).sum(-1).reshape(-1))
    return torch.cat(dims).double(), torch.cat(groups).double()


def run(out: str | Path = "runs/bench-spread", *, quality_out: str = "runs/bench-quality", steps: int = 400,
        vanilla_kl_weight: float = 0.3, eval_crops: int = 128) -> dict[str, Any]:
    from gaussquant.bench.quality import QualityConfig, plan, train_unit
    from gaussquant.eval.evaluate import build_eval_dataset

    cfg = QualityConfig(archs=("unet",), rates=(8,), seeds=(0,), methods=("gq", "tokenbridge", "tokenbridge_tdc"),
                        steps=steps, out=quality_out, vanilla_kl_weight=vanilla_kl_weight)
    units = {u.name: u for u in plan(cfg)}
    data, description = build_eval_dataset(None, 32, eval_crops)
    result: dict[str, Any] = {"eval_data": description, "models": {}}
    values = {}
    for name, label in MODELS:
        model = train_unit(cfg, units[name])[0]
        per_dim, per_group = kl_values(model, data)
        values[name] = (per_dim, per_group)
        result["models"][name] = {
            "label": label,
            "per_dimension": _stats(per_dim),
            "per_group_of_4": _stats(per_group),
            "fraction_groups_in_8pm0.5": float(((per_group - 8).abs() <= 0.5).double().mean()),
            "kl_weight": getattr(units[name].bottleneck, "kl_weight", None),
        }
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "spread.json").write_text(json.dumps(result, indent=1))
    plot(values, out / "figures" / "tdc_spread.png")
    return result


def _stats(v: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(v, torch.tensor([0.01, 0.5, 0.99], dtype=v.dtype))
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "p01": float(q[0]),
            "median": float(q[1]), "p99": float(q[2])}


def plot(values: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    labels = dict(MODELS)
    for i, (title, idx, band) in enumerate((("KL per token and dimension (bits)", 0, 2.0),
                                            ("KL per group of 4 dimensions (bits)", 1, 8.0))):
        ax = fig.add_subplot(1, 2, i + 1)
        hi = max(float(v[idx].max()) for v in values.values())
        bins = torch.linspace(0, hi, 60).tolist()
        for name, v in values.items():
            ax.hist(v[idx].numpy(), bins=bins, histtype="step", lw=1.5, density=True, label=labels[name])
        ax.axvspan(band - 0.5, band + 0.5, color="tab:red", alpha=0.15, label=f"target {band:g} ± 0.5")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("bits")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quality-out", default="runs/bench-quality", help="bench quality's --out")
    parser.add_argument("--steps", type=int, default=400, help="steps if a model must be trained here")
    parser.add_argument("--vanilla-kl-weight", type=float, default=0.3)
    parser.add_argument("--eval-crops", type=int, default=128)
    parser.add_argument("--out", default="runs/bench-spread")


def main(args: argparse.Namespace) -> int:
    result = run(args.out, quality_out=args.quality_out, steps=args.steps, vanilla_kl_weight=args.vanilla_kl_weight,
                 eval_crops=args.eval_crops)
    print(f"{'model':<28} {'dim mean':>9} {'dim min':>8} {'dim max':>8} {'grp mean':>9} {'grp min':>8} "
          f"{'grp max':>8} {'in 8±0.5':>8}")
    for m in result["models"].values():
        d, g = m["per_dimension"], m["per_group_of_4"]
        print(f"{m['label']:<28} {d['mean']:9.3f} {d['min']:8.3f} {d['max']:8.3f} {g['mean']:9.3f} {g['min']:8.3f} "
              f"{g['max']:8.3f} {m['fraction_groups_in_8pm0.5']:8.3f}")
    return 0
