"""``gaussquant demo``: the main job end to end on the built-in photos (README quick start; docs/method.md sections 3-5).

1. Train a tiny UNet Gaussian VAE with TDC (target log2 K bits per group) on seeded crops of the bundled
   training photos, for a wall-clock budget (default 5 minutes) or a fixed ``--steps``.
2. Convert it to a GQ VQ-VAE with no training (``to_gaussian_quant``: Sobol codebook, log-ratio search),
   after printing the convertibility report.
3. Tokenize the three held-out photos (whole, resized) to a tokens ``.npz`` and reconstruct them from
   the tokens; evaluate continuous (posterior mean) vs quantized reconstructions on held-out crops.
4. Write ``OUT/report.md`` (photo grid original | continuous | GQ, crop grid, KL histogram, codebook usage,
   metrics, rate) and return a summary that the command prints as a table.

Step budget: the trainer's own ``train_step`` is timed for a few steps, then the run is extended to the
number of steps that fits the budget (constant learning rate after warm-up, so the schedule does not
depend on the final step count). With a GPU a larger preset is used in the same budget.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CALIBRATION_STEPS = 6
# Per-device recipe: (arch, image_size, latent_channels, codebook_dim, log2 K, batch, max steps).
CPU_RECIPE = ("unet-tiny", 32, 8, 4, 8, 8, 4000)
GPU_RECIPE = ("unet-small", 64, 16, 4, 10, 32, 40000)


@dataclass
class DemoResult:
    """What :func:`run` returns: paths, the evaluation dict (``evaluate`` format), timings and per-photo PSNR."""

    out: Path
    report: Path
    model_dir: Path
    tokens: Path
    results: dict[str, Any]
    steps: int
    train_seconds: float
    total_seconds: float
    photo_psnr: dict[str, tuple[float, float]] = field(default_factory=dict)


def demo_config(out: Path, *, steps: int, cuda: bool, seed: int = 0) -> Any:
    """The demo's :class:`~gaussquant.train.config.TrainConfig` (a Gaussian VAE with TDC)."""
    from gaussquant.train.config import load_config

    arch, size, channels, d, bits, batch, _ = GPU_RECIPE if cuda else CPU_RECIPE
    overrides = [
        f"model.arch={arch}", f"model.image_size={size}", f"data.image_size={size}",
        f"bottleneck.latent_channels={channels}", f"bottleneck.codebook_dim={d}", f"bottleneck.target_bits={bits}",
        # why: f = 1.01 (the paper's, for 10^5+ steps) moves lambda too slowly for a few thousand steps
        "bottleneck.factor=1.03",
        f"batch_size={batch}", f"steps={steps}", f"seed={seed}", f"out={out / 'train'}",
        "log_every=10", "image_every=250", f"ckpt_every={steps}", "keep_last=1", "optim.lr=0.001",
        "optim.schedule=constant", f"device={'cuda' if cuda else 'cpu'}",
    ]
    return load_config("unet-tiny-gq", overrides)


def _train(out: Path, steps: int | None, budget_s: float, cuda: bool, seed: int) -> tuple[Any, Any, float]:
    """Train the Gaussian VAE; returns (trained Autoencoder, its config, training seconds)."""
    from gaussquant.train import distributed as tdist
    from gaussquant.train.trainer import Trainer

    max_steps = (GPU_RECIPE if cuda else CPU_RECIPE)[-1]
    cfg = demo_config(out, steps=steps or max_steps, cuda=cuda, seed=seed)
    trainer = Trainer(cfg)
    if trainer.step:
        raise FileExistsError(f"{out / 'train'} already holds a checkpoint; choose another --out or delete it")
    t0 = time.perf_counter()
    if steps is None:
        # why: measure this machine's real step time (data, model, TDC) and fit the run into the budget
        for _ in range(2):
            trainer.train_step()
        t1 = time.perf_counter()
        for _ in range(CALIBRATION_STEPS):
            trainer.train_step()
        per_step = (time.perf_counter() - t1) / CALIBRATION_STEPS
        spent = time.perf_counter() - t0
        steps = int(min(max_steps, max(200, (budget_s - spent) / (1.1 * per_step) + trainer.step)))
        log.info("%.3f s per step on this machine: training %d steps to fit %.0f s", per_step, steps, budget_s)
        trainer.cfg.steps = steps
        trainer.cfg.ckpt_every = steps
    try:
        trainer.fit()
    finally:
        tdist.cleanup()
    return trainer.c.model_module.eval(), cfg, time.perf_counter() - t0


@torch.no_grad()
def _photos(gq: torch.nn.Module, out: Path, photo_size: int) -> tuple[Path, Path, dict[str, tuple[float, float]]]:
    """Tokenize the whole held-out photos, write tokens.npz, decode them; grid original | continuous | GQ."""
    from gaussquant.data.default_photos import held_out_photos
    from gaussquant.eval.metrics import psnr_uint8
    from gaussquant.eval.plots import save_image_grid
    from gaussquant.tokens import TokenWriter, model_fingerprint

    names, images = zip(*held_out_photos(photo_size))
    device = next(gq.parameters()).device
    x = torch.stack(images).to(device)
    indices = gq.tokenize(x)
    tokens = out / "tokens.npz"
    with TokenWriter(tokens, num_images=len(names), codebook_size=gq.bottleneck.codebook_size,
                     image_size=(photo_size, photo_size), model_fingerprint=model_fingerprint(gq)) as writer:
        writer.write(indices.cpu(), list(names))
        writer.close()
    x_quant = gq.detokenize(indices).clamp(-1, 1)
    x_cont = gq.decode_posterior_mean(x).clamp(-1, 1)
    grid = save_image_grid([x, x_cont, x_quant], out / "photos.png")
    psnr_c, psnr_q = psnr_uint8(x, x_cont).tolist(), psnr_uint8(x, x_quant).tolist()
    return grid, tokens, {n: (c, q) for n, c, q in zip(names, psnr_c, psnr_q)}


def run(
    out: str | Path = "runs/demo",
    *,
    steps: int | None = None,
    budget_minutes: float = 5.0,
    device: str = "auto",
    seed: int = 0,
    photo_size: int = 128,
    eval_crops: int = 128,
) -> DemoResult:
    """Train, convert, tokenize, evaluate and report (module docstring). Python API behind ``gaussquant demo``.

    Args:
        out: output folder (``train/`` run, ``model/`` converted GQ model, ``tokens.npz``, ``report.md``).
        steps: fixed training steps; None = as many as fit ``budget_minutes`` of training on this machine.
        device: ``auto`` (CUDA when present: larger preset), ``cpu`` or ``cuda``.
        photo_size: side of the whole held-out photos tokenized for the grid (a multiple of the model's f).
        eval_crops: held-out crops for the metrics.
    """
    from gaussquant.convert import convertibility_report, to_gaussian_quant
    from gaussquant.eval.evaluate import build_eval_dataset, evaluate

    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1; got {steps}")
    if budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be > 0; got {budget_minutes}")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    out = Path(out)
    t0 = time.perf_counter()
    model, cfg, train_seconds = _train(out, steps, budget_minutes * 60.0, cuda, seed)
    k = 2 ** int(round(cfg.bottleneck.target_bits))
    size = cfg.model.image_size
    crops, _ = build_eval_dataset(None, size, eval_crops)
    report = convertibility_report(model, crops, k)
    log.info("%s", report.to_text())
    gq = to_gaussian_quant(model, k)
    model_dir = gq.save_pretrained(
        out / "model", extra={"conversion": {"convertibility": report.to_dict(), "source": "gaussquant demo"}})
    results = evaluate(gq, crops, batch_size=64, report_dir=out, num_grid=8, progress=True)
    grid, tokens, photo_psnr = _photos(gq, out, photo_size)
    result = DemoResult(out=out, report=out / "report.md", model_dir=model_dir, tokens=tokens, results=results,
                        steps=int(cfg.steps), train_seconds=train_seconds, total_seconds=0.0, photo_psnr=photo_psnr)
    result.total_seconds = time.perf_counter() - t0
    _prepend_report(result, cfg, grid)
    return result


def summary_rows(result: DemoResult) -> list[tuple[str, str, str, str]]:
    """``(quantity, continuous, quantized GQ, gap)`` rows for the terminal and the report."""
    r, cont = result.results, result.results.get("continuous") or {}

    def fmt(v: Any, spec: str) -> str:
        return "n/a" if v is None else spec.format(v)

    rows = []
    crops = f"{r['num_images']} held-out crops"
    for key, label, spec in (("psnr", f"PSNR (dB), {crops}", "{:.2f}"), ("ssim", f"SSIM, {crops}", "{:.4f}"),
                             ("fd_effnet_lite0", f"FD EffNet-Lite0, {crops}", "{:.3f}")):
        q, c = r.get(key), cont.get(key)
        gap = fmt(q - c, "{:+.3f}") if q is not None and c is not None else "n/a"
        rows.append((label, fmt(c, spec), fmt(q, spec), gap))
    for name, (c, q) in result.photo_psnr.items():
        rows.append((f"PSNR whole photo {name} (dB)", f"{c:.2f}", f"{q:.2f}", f"{q - c:+.2f}"))
    k = r["codebook_size"]
    kl = r.get("kl_bits") or {}
    rows += [
        ("codebook usage", "-", f"{r['codebook_usage']:.4f}", ""),
        ("index entropy (bits)", "-", f"{r['index_entropy_bits']:.3f} of log2 K = {math.log2(k):.3f}", ""),
        ("group KL bits mean/min/max", f"{kl.get('mean', float('nan')):.2f} / {kl.get('min', float('nan')):.2f}"
         f" / {kl.get('max', float('nan')):.2f}", "", ""),
        ("bits per token / bpp", "-", f"{r['bits_per_token']:.1f} / {r['bpp']:.4f}", ""),
        ("train steps / seconds", f"{result.steps} / {result.train_seconds:.0f}", "", ""),
    ]
    return rows


def format_summary(result: DemoResult) -> str:
    rows = [("quantity", "continuous", "quantized (GQ)", "gap")] + summary_rows(result)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _prepend_report(result: DemoResult, cfg: Any, grid: Path) -> None:
    r = result.results
    lines = [
        "# gaussquant demo", "",
        f"A {cfg.model.arch} Gaussian VAE with TDC (C = {cfg.bottleneck.latent_channels}, d = "
        f"{cfg.bottleneck.codebook_dim}, target {cfg.bottleneck.target_bits:g} bits per group) trained for "
        f"{result.steps} steps ({result.train_seconds:.0f} s) on {cfg.model.image_size}x{cfg.model.image_size} "
        f"crops of the bundled training photos, then converted to GQ (K = {r['codebook_size']}, Sobol codebook, "
        f"log-ratio search) without training. Rate: {r['bits_per_token']:g} bits per token, "
        f"{r['bpp']:.4f} bpp. Whole run: {result.total_seconds:.0f} s.", "",
        "## Held-out photos, reconstructed from their tokens", "",
        "Columns: original | continuous (posterior mean) | quantized (decoded from `tokens.npz`).", "",
        "![held-out photos](photos.png)", "",
        "| quantity | continuous | quantized (GQ) | gap |", "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(result)], "",
        "The converted model is in `model/` (`gaussquant encode/decode/eval model ...`); the training run in "
        "`train/`.", "", "---", "",
    ]
    text = result.report.read_text() if result.report.is_file() else ""
    result.report.write_text("\n".join(lines) + text)
