"""Does TDC converge within the benchmark's budget? The reference controller against the adaptive one.

For each architecture (tiny UNet, tiny ViT) and controller (``reference``: docs/method.md section 3;
``adaptive``: band penalties and steps that grow with the violation, ``gaussquant.quantizers.gaussian``)
one Gaussian VAE is trained with the recipe of ``bench quality`` (same steps, batch, optimizer, seed, data,
TDC factor; one group per token, d = C, target B bits). The trainer's ``metrics.jsonl`` gives the curves
(logged every ``log_every`` steps, one batch each): fraction of group tokens in the band, KL max and 99th
percentile, mean and spread of the posterior means and the aggregate-posterior variance (the prior's are 0,
1 and 1), and the multipliers. At the end each VAE is converted to GQ with K = 2^B and evaluated on the
held-out crops: conversion gap (continuous minus quantized PSNR), codebook usage, index entropy, and the
group-KL band statistics of ``gaussquant eval``. Targets (issue "Evidence that holds"): in band >= 0.5,
max group KL <= 2 T, gap <= 0.2 dB, usage >= 0.95, entropy >= 0.9 log2 K.

Writes ``OUT/results.json``, ``OUT/table.md`` and ``OUT/figures/tdc_convergence.png``; finished runs are
reused (the trainer resumes at its last step).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONTROLLERS = ("reference", "adaptive")
CURVE_KEYS = ("stats/kl_in_band", "stats/kl_bits_max", "stats/kl_bits_p99", "stats/kl_bits_mean",
              "stats/posterior_mean_mean", "stats/posterior_mean_std", "stats/aggregate_var", "stats/multiplier")
TARGETS = {"in_band": 0.5, "max_over_target": 2.0, "gap_db": 0.2, "usage": 0.95, "entropy_frac": 0.9}


def read_curves(metrics_path: Path) -> dict[str, list[float]]:
    """``{"step": [...], key: [...]}`` from a trainer's metrics.jsonl (the keys of ``CURVE_KEYS`` present)."""
    curves: dict[str, list[float]] = {"step": []}
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if "stats/kl_in_band" not in row:
            continue
        curves["step"].append(row["step"])
        for key in CURVE_KEYS:
            curves.setdefault(key, []).append(row.get(key))
    return curves


def first_step_in_band(curves: dict[str, list[float]], level: float = 0.5, window: int = 3) -> int | None:
    """The first logged step from which ``window`` consecutive logged in-band fractions are >= ``level``."""
    values = curves.get("stats/kl_in_band") or []
    for i in range(len(values) - window + 1):
        if all(v is not None and v >= level for v in values[i:i + window]):
            return curves["step"][i]
    return None


def run_one(qcfg: Any, arch: str, controller: str, bits: int, seed: int) -> dict[str, Any]:
    """Train (or reuse) one TDC VAE, convert it at K = 2^bits and evaluate; one result row with curves."""
    import dataclasses

    from gaussquant.bench.quality import Unit, train_config, unit_dir
    from gaussquant.convert import to_gaussian_quant
    from gaussquant.eval.evaluate import build_eval_dataset, evaluate
    from gaussquant.quantizers.build import GaussianConfig

    c = qcfg.latent_channels
    g = GaussianConfig(latent_channels=c, codebook_dim=c, target_bits=float(bits), factor=qcfg.tdc_factor,
                       controller=controller)
    unit = Unit(arch, seed, f"tdc-{bits}-{controller}", g, [("gq", bits)])
    from gaussquant.train.trainer import Trainer

    # the quality recipe, logged every 10 steps for the curves
    tcfg = dataclasses.replace(train_config(qcfg, unit, unit_dir(qcfg, arch, seed, unit.name)), log_every=10)
    t0 = time.perf_counter()
    trainer = Trainer(tcfg)
    trainer.fit()
    model, seconds, steps = trainer.c.model_module.eval(), time.perf_counter() - t0, trainer.step
    curves = read_curves(Path(tcfg.out) / "metrics.jsonl")
    eval_data, description = build_eval_dataset(qcfg.data, qcfg.image_size, qcfg.eval_crops)
    r = evaluate(to_gaussian_quant(model, 2**bits), eval_data, batch_size=64,
                 metric_options=dict(lpips=False, rfid=False, ms_ssim=False, fd_effnet=False))
    kl = r.get("kl_bits") or {}
    continuous = (r.get("continuous") or {}).get("psnr")
    return {
        "arch": arch, "controller": controller, "bits": bits, "seed": seed, "steps": steps,
        "train_seconds": seconds, "psnr": r["psnr"], "continuous_psnr": continuous,
        "gap_db": None if continuous is None else continuous - r["psnr"],
        "usage": r["codebook_usage"], "usage_vs_min_tokens_k": r.get("codebook_usage_vs_reachable"),
        "entropy_frac": r["index_entropy_bits"] / bits, "entropy_mm_frac": (r.get("index_entropy_bits_mm") or 0) / bits,
        "num_tokens": r.get("num_tokens"), "in_band": kl.get("in_band"), "kl_mean": kl.get("mean"),
        "kl_max": kl.get("max"), "kl_p99": (kl.get("percentiles") or {}).get("99"),
        "first_step_half_in_band": first_step_in_band(curves), "eval_images": r["num_images"],
        "eval_data": description, "curves": curves,
    }


def meets(row: dict[str, Any]) -> dict[str, bool | None]:
    """Which targets a result row meets (None when the number is missing)."""
    def ok(value: Any, test) -> bool | None:
        return None if value is None else bool(test(value))

    return {"in_band": ok(row["in_band"], lambda v: v >= TARGETS["in_band"]),
            "max<=2T": ok(row["kl_max"], lambda v: v <= TARGETS["max_over_target"] * row["bits"]),
            "gap": ok(row["gap_db"], lambda v: v <= TARGETS["gap_db"]),
            "usage": ok(row["usage"], lambda v: v >= TARGETS["usage"]),
            "entropy": ok(row["entropy_frac"], lambda v: v >= TARGETS["entropy_frac"])}


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (arch, controller) with the end-of-training numbers and the targets met."""
    head = ("arch", "controller", "steps", "in band", "KL mean", "KL p99", "KL max", "PSNR GQ", "PSNR cont.",
            "gap dB", "usage", "H/log2K", "first step >= 0.5 in band", "targets met")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    fmt = lambda v, s="{:.3f}": "n/a" if v is None else s.format(v)  # noqa: E731
    for r in rows:
        met = meets(r)
        lines.append("| " + " | ".join([
            r["arch"], r["controller"], str(r["steps"]), fmt(r["in_band"]), fmt(r["kl_mean"], "{:.2f}"),
            fmt(r["kl_p99"], "{:.2f}"), fmt(r["kl_max"], "{:.2f}"), fmt(r["psnr"], "{:.2f}"),
            fmt(r["continuous_psnr"], "{:.2f}"), fmt(r["gap_db"], "{:.2f}"), fmt(r["usage"]), fmt(r["entropy_frac"]),
            str(r["first_step_half_in_band"]), f"{sum(bool(v) for v in met.values())}/{len(met)} "
            f"({', '.join(k for k, v in met.items() if v) or 'none'})"]) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """In-band fraction, KL max / p99, posterior-mean spread and aggregate variance against steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = (("stats/kl_in_band", "fraction of group tokens in T ± tau"), ("stats/kl_bits_p99", "KL p99 (bits)"),
              ("stats/kl_bits_max", "KL max (bits)"), ("stats/posterior_mean_std", "std of posterior means (prior 1)"),
              ("stats/aggregate_var", "aggregate posterior variance (prior 1)"))
    fig = Figure(figsize=(16, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for r in rows:
            c = r["curves"]
            pts = [(s, v) for s, v in zip(c["step"], c.get(key) or []) if isinstance(v, (int, float))]
            if pts:
                ax.plot(*zip(*pts), lw=1.2, ls="-" if r["controller"] == "adaptive" else "--",
                        label=f"{r['arch']} {r['controller']}")
        if key in ("stats/kl_bits_max", "stats/kl_bits_p99") and rows:
            ax.axhline(2 * rows[0]["bits"], color="grey", lw=0.8)
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gaussquant.bench.quality import QualityConfig

    d = QualityConfig()
    strs = lambda s: tuple(v for v in s.split(",") if v)  # noqa: E731
    parser.add_argument("--archs", type=strs, default=("unet", "vit"), help="unet,vit")
    parser.add_argument("--controllers", type=strs, default=CONTROLLERS, help="reference,adaptive")
    parser.add_argument("--bits", type=int, default=8, help="target bits per token (one group, d = C)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=d.steps, help=f"training steps ({d.steps}, as bench quality)")
    parser.add_argument("--tdc-factor", type=float, default=d.tdc_factor)
    parser.add_argument("--eval-crops", type=int, default=d.eval_crops)
    parser.add_argument("--out", default="runs/bench-tdc-convergence")


def main(args: argparse.Namespace) -> int:
    from gaussquant.bench.quality import QualityConfig

    bad = [c for c in args.controllers if c not in CONTROLLERS]
    if bad:
        raise SystemExit(f"unknown controllers {bad}; choose from {CONTROLLERS}")
    qcfg = QualityConfig(archs=args.archs, rates=(args.bits,), seeds=(args.seed,), steps=args.steps,
                         tdc_factor=args.tdc_factor, eval_crops=args.eval_crops, out=args.out, jobs=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = [run_one(qcfg, arch, ctrl, args.bits, args.seed) for arch in args.archs for ctrl in args.controllers]
    (out / "results.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows}, indent=1))
    table = format_table(rows)
    (out / "table.md").write_text(table + "\n")
    plot(rows, out / "figures" / "tdc_convergence.png")
    print(table)
    print(f"{len(rows)} runs in {time.perf_counter() - t0:.0f} s; results in {out}")
    return 0
