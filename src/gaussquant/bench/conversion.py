"""Conversion claims on one trained TDC Gaussian VAE (docs/method.md sections 4-5; the paper's ablations).

Only the conversion varies, so every experiment reuses one model (default: the tiny UNet TDC VAE at 8 bits
per group that ``bench quality`` trains, seed 0; trained here with the same recipe when absent):

- ``size``: codebook size sweep, log2 K from target - 4 to target + 4: quality flat above the target,
  falling below (the sizing rule round(log2 K) = round(group KL));
- ``seed``: several codebook seeds (Sobol scramble seed / normal generator seed): spread of the metrics;
- ``method``: Sobol vs i.i.d. normal codebook (mean +- std over the seeds above);
- ``rule``: search rule ablation, ``log_ratio`` beta = 1 (reference), beta = 0 (Mahalanobis), ``nearest``;
- ``gap``: quantized vs continuous (posterior-mean) reconstruction at every K of the sweep.

All on the held-out photo crops with ``evaluate`` (PSNR on uint8, SSIM, fd_effnet_lite0, usage, entropy).
Writes ``OUT/conversion.json`` and ``OUT/figures/conversion_*.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEYS = ("psnr", "ssim", "fd_effnet_lite0", "codebook_usage", "index_entropy_bits")


def load_tdc_model(model: str | Path | None, quality_out: str, steps: int) -> Any:
    """The TDC VAE to convert: ``model`` (run/checkpoint/saved dir), else bench quality's unet tdc-8 run."""
    from gaussquant.bench.quality import QualityConfig, plan, train_unit
    from gaussquant.models.autoencoder import Autoencoder

    if model is not None:
        return Autoencoder.from_pretrained(model)
    cfg = QualityConfig(archs=("unet",), rates=(8,), seeds=(0,), methods=("gq",), steps=steps, out=quality_out)
    return train_unit(cfg, plan(cfg)[0])[0]


def _evaluate(model: Any, data: Any, fd: bool = True, **convert: Any) -> dict[str, Any]:
    from gaussquant.convert import to_gaussian_quant
    from gaussquant.eval.evaluate import evaluate

    gq = to_gaussian_quant(model, **convert)
    r = evaluate(gq, data, batch_size=64, metric_options=dict(lpips=False, rfid=False, ms_ssim=False, fd_effnet=fd))
    log.info("GQ %s: PSNR %.3f", convert, r["psnr"])
    row = {k: r[k] for k in KEYS}
    row.update(bits_per_token=r["bits_per_token"], bpp=r["bpp"], log2_k=math.log2(convert["codebook_size"]),
               continuous={k: r["continuous"][k] for k in ("psnr", "ssim", "fd_effnet_lite0")},
               kl_mean=(r.get("kl_bits") or {}).get("mean"), **{k: v for k, v in convert.items()})
    return row


def run(out: str | Path = "runs/bench-conversion", *, model: str | Path | None = None,
        quality_out: str = "runs/bench-quality", steps: int = 400, target_bits: int = 8, seeds: int = 5,
        eval_crops: int = 128, experiments: tuple[str, ...] = ("size", "seed", "rule"), fd: bool = True
        ) -> dict[str, Any]:
    """Run the experiments; returns ``{"size": [...], "seed": [...], "rule": [...], "summary": {...}}``."""
    from gaussquant.eval.evaluate import build_eval_dataset

    vae = load_tdc_model(model, quality_out, steps)
    data, description = build_eval_dataset(None, 32, eval_crops)
    k0 = 2**target_bits
    result: dict[str, Any] = {"eval_data": description, "target_bits": target_bits}
    if "size" in experiments:
        result["size"] = [_evaluate(vae, data, fd, codebook_size=2**b)
                          for b in range(max(1, target_bits - 4), target_bits + 5)]
    if "seed" in experiments:
        result["seed"] = [_evaluate(vae, data, fd, codebook_size=k0, codebook_method=m, seed=s)
                          for m in ("sobol", "normal") for s in range(seeds)]
        result["summary"] = {m: {k: _mean_std([r[k] for r in result["seed"] if r["codebook_method"] == m])
                                 for k in KEYS} for m in ("sobol", "normal")}
    if "rule" in experiments:
        result["rule"] = [_evaluate(vae, data, fd, codebook_size=k0, rule=rule, beta=beta)
                          for rule, beta in (("log_ratio", 1.0), ("log_ratio", 0.0), ("nearest", 1.0))]
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "conversion.json").write_text(json.dumps(result, indent=1))
    if "size" in result:
        plot_size(result["size"], target_bits, out / "figures" / "conversion_size.png")
    return result


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plot_size(rows: list[dict[str, Any]], target_bits: int, path: Path) -> Path:
    """PSNR / SSIM / FD (quantized and continuous) and usage against log2 K, the target marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    x = [r["log2_k"] for r in rows]
    for i, (key, label) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("fd_effnet_lite0", "FD EffNet-Lite0"),
                                      ("codebook_usage", "codebook usage"))):
        ax = fig.add_subplot(1, 4, i + 1)
        if rows[0][key] is None:
            continue
        ax.plot(x, [r[key] for r in rows], "o-", color="black", label="GQ (quantized)")
        if rows[0]["continuous"].get(key) is not None:
            ax.plot(x, [r["continuous"][key] for r in rows], "--", color="tab:blue", label="continuous (posterior mean)")
        ax.axvline(target_bits, color="tab:red", lw=1, label=f"TDC target {target_bits} bits")
        kl = rows[0].get("kl_mean")
        if kl is not None:
            ax.axvline(kl, color="tab:green", lw=1, ls=":", label=f"measured mean group KL {kl:.2f}")
        ax.set_xlabel("log2 K (bits per group)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    return path


def format_result(result: dict[str, Any]) -> str:
    lines = []

    def row(name: str, r: dict[str, Any]) -> str:
        c = r["continuous"]
        return (f"{name:<28} {r['psnr']:7.2f} {c['psnr']:7.2f} {r['ssim']:7.4f} {r['fd_effnet_lite0'] or float('nan'):8.2f} "
                f"{r['codebook_usage']:6.3f} {r['index_entropy_bits'] / r['log2_k']:6.3f} {r['bpp']:7.4f}")

    head = f"{'conversion':<28} {'PSNR':>7} {'PSNRcon':>7} {'SSIM':>7} {'FD':>8} {'usage':>6} {'H/logK':>6} {'bpp':>7}"
    for name in ("size", "seed", "rule"):
        if name in result:
            lines += [f"== {name}", head]
            for r in result[name]:
                label = (f"log2K={r['log2_k']:g}" if name == "size" else
                         f"{r['codebook_method']} seed {r['seed']}" if name == "seed" else f"{r['rule']} beta={r['beta']:g}")
                lines.append(row(label, r))
    for method, stats in (result.get("summary") or {}).items():
        lines.append(f"{method}: " + ", ".join(f"{k} {v[0]:.4f} ± {v[1]:.4f}" for k, v in stats.items() if v))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a TDC Gaussian VAE (run, checkpoint or saved dir); default: bench "
                        "quality's unet tdc-8 run (trained here when absent)")
    parser.add_argument("--quality-out", default="runs/bench-quality", help="bench quality's --out")
    parser.add_argument("--steps", type=int, default=400, help="steps if the model must be trained here")
    parser.add_argument("--target-bits", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5, help="codebook seeds per method")
    parser.add_argument("--eval-crops", type=int, default=128)
    parser.add_argument("--experiments", default="size,seed,rule")
    parser.add_argument("--no-fd", action="store_true", help="skip fd_effnet_lite0 (the slow part on a CPU)")
    parser.add_argument("--out", default="runs/bench-conversion")


def main(args: argparse.Namespace) -> int:
    result = run(args.out, model=args.model, quality_out=args.quality_out, steps=args.steps,
                 target_bits=args.target_bits, seeds=args.seeds, eval_crops=args.eval_crops,
                 experiments=tuple(e for e in args.experiments.split(",") if e), fd=not args.no_fd)
    print(format_result(result))
    return 0
