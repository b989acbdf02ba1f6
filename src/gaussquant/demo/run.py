"""``gaussquant demo``, end to end (the package docstring lists the steps)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gaussquant.demo.bundled import BUNDLED_MODEL, load_bundled, save_model_dir
from gaussquant.demo.photos import PhotoResult, evaluate_photos, index_usage, mean_psnr
from gaussquant.tiling import Tiling

log = logging.getLogger(__name__)

TILING = Tiling(64, 8)  # encoder/decoder windows: 48-px cores, 8-px margins (gaussquant/tiling.py)
MIN_LIVE_SECONDS = 20.0
PRIOR_SECONDS = 25.0  # default wall clock of the prior's training (demo/generation.py), out of the budget
PRIOR_SHARE = 0.1  # the prior's training never takes more than this fraction of the budget
REPORT_SECONDS = 15.0  # reserved for figures and report.md


@dataclass
class DemoResult:
    """What :func:`run` returns (``results`` is what ``metrics.json`` holds)."""

    out: Path
    report: Path
    model_dir: Path
    token_dir: Path
    results: dict[str, Any]
    photos: list[PhotoResult]
    live_photos: list[PhotoResult] = field(default_factory=list)
    prior: Any = None  # demo.generation.PriorRun, or None when the step was skipped
    warnings: list[str] = field(default_factory=list)
    total_seconds: float = 0.0


class _WarningLog(logging.Handler):
    """Collects every WARNING-or-worse record (and, via ``logging.captureWarnings``, every Python warning)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if record.name == "py.warnings":  # "file:line: Category: text" -> "Category: text"
            message = message.splitlines()[0].split(": ", 1)[-1]
        self.messages.append(f"{record.levelname} {record.name}: {message}")


def choose_threads(requested: int | None) -> int:
    """``requested``, else as many threads as there are idle cores (1-minute load average), at least 1."""
    if requested:
        return int(requested)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, round(cores - load)))


def codebook_sizes(mean_kl_bits: float, target_bits: float | None) -> tuple[int, list[int]]:
    """The main K (2^target bits, else 2^round(mean KL)) and the sweep: half, main and double."""
    main = 2 ** int(round(target_bits if target_bits else mean_kl_bits))
    return main, [main // 2, main, main * 2]


def _convert_all(model: torch.nn.Module, ks: list[int]) -> dict[int, torch.nn.Module]:
    from gaussquant.convert import to_gaussian_quant

    return {k: to_gaussian_quant(model, k) for k in ks}


def _convertibility(photos: list[PhotoResult], model: torch.nn.Module, k: int) -> Any:
    from gaussquant.convertibility import KLAccumulator

    b = model.bottleneck
    acc = KLAccumulator(k, int(b.codebook_dim), str(b.grouping))
    for p in photos:
        assert p.moments is not None
        acc.update(*p.moments)
    return acc.report()


def run(
    out: str | Path = "runs/demo",
    *,
    budget_minutes: float = 6.0,
    live_steps: int | None = None,
    max_side: int = 512,
    threads: int | None = None,
    seed: int = 0,
    model_name: str = BUNDLED_MODEL,
    prior_seconds: float | None = None,
    prior_steps: int | None = None,
) -> DemoResult:
    """Bundled model -> GQ at three K -> whole-photo tokens -> prior samples -> live TDC run -> report. API of
    ``gaussquant demo``.

    Args:
        out: output folder (created; must not hold an earlier demo's live run).
        budget_minutes: wall-clock budget of the whole demo; the live training gets what the other steps
            leave (at least 20 s), and stops when its time is up whatever the step count.
        live_steps: train the live model for exactly this many steps instead (tests).
        max_side: whole photos larger than this on their longer side are shrunk to it.
        threads: torch threads (default: one per idle core).
        prior_seconds: wall clock of the generation step's prior training (default ``PRIOR_SECONDS``; at
            most a tenth of the budget; it comes out of the live training's share); 0 skips the step.
        prior_steps: train the prior for exactly this many steps instead (tests).
    """
    from gaussquant.data.default_photos import whole_held_out_photos
    from gaussquant.demo.live import train_live
    from gaussquant.demo.report import write_demo_report

    if budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be > 0; got {budget_minutes}")
    if live_steps is not None and live_steps < 1:
        raise ValueError(f"--live-steps must be >= 1; got {live_steps}")
    prior_seconds = PRIOR_SECONDS if prior_seconds is None else float(prior_seconds)
    if prior_seconds < 0 or (prior_steps is not None and prior_steps < 1):
        raise ValueError(f"--prior-seconds must be >= 0 and --prior-steps >= 1; got {prior_seconds}, {prior_steps}")
    out = Path(out)
    if (out / "live" / "checkpoints").exists():
        raise FileExistsError(f"{out} already holds a demo run; choose another --out or delete it")
    t0 = time.perf_counter()
    budget = budget_minutes * 60.0
    torch.set_num_threads(choose_threads(threads))
    warnings_log = _WarningLog()
    root = logging.getLogger()
    root.addHandler(warnings_log)
    logging.captureWarnings(True)
    timings: dict[str, float] = {}
    try:
        model, meta = load_bundled(model_name)
        target = float(meta["bottleneck"].get("target_bits") or 0) or None
        main_k, ks = codebook_sizes(target or 8.0, target)
        photos = whole_held_out_photos(max_side, int(model.downsample_factor))
        converted = _convert_all(model, ks)
        token_dir = out / "tokens"
        t = time.perf_counter()
        results = evaluate_photos(model, photos, converted, main_k=main_k, token_dir=token_dir, tiling=TILING)
        timings["bundled_photos_s"] = time.perf_counter() - t
        report = _convertibility(results, model, main_k)
        log.info("bundled model on the held-out photos:\n%s", report.to_text())
        if report.warning:
            log.warning("%s", report.warning)
        gq_model = converted[main_k]
        if gq_model.model_config.tile is None:  # the saved model recommends the windows its tokens were made in
            gq_model.model_config = dataclasses.replace(gq_model.model_config, tile=TILING.window)
        model_dir = save_model_dir(
            gq_model, out / "model",
            extra={"conversion": {"source": f"bundled {model_name}", "convertibility": report.to_dict()}},
        )
        prior = None
        if prior_steps is not None or prior_seconds > 0:
            from gaussquant.demo.generation import train_demo_prior

            t = time.perf_counter()
            prior = train_demo_prior(gq_model, model_dir, out / "prior", min(prior_seconds, PRIOR_SHARE * budget),
                                     steps=prior_steps, seed=seed)
            timings["prior_s"] = time.perf_counter() - t
        # the live run gets what is left, minus its own evaluation (2 of the 4 decodes above) and the report
        elapsed = time.perf_counter() - t0
        reserve = 0.6 * timings["bundled_photos_s"] + REPORT_SECONDS
        live_budget = max(MIN_LIVE_SECONDS, budget - elapsed - reserve)
        log.info("live training: %.0f s of the %.0f s budget (%.0f s used so far)", live_budget, budget, elapsed)
        t = time.perf_counter()
        live = train_live(out / "live", live_budget, seed=seed, steps=live_steps)
        timings["live_train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        live_results = evaluate_photos(live.model, photos, _convert_all(live.model, [main_k]), tiling=TILING)
        timings["live_photos_s"] = time.perf_counter() - t
        live_report = _convertibility(live_results, live.model, main_k)
        if live_report.warning:
            log.warning("live model: %s", live_report.warning)
        demo = DemoResult(out=out, report=out / "report.md", model_dir=model_dir, token_dir=token_dir,
                          results={}, photos=results, live_photos=live_results, prior=prior)
        demo.results = _metrics(demo, model, meta, main_k, ks, report, live, model_name, timings, max_side)
        if prior is not None:
            from gaussquant.demo.generation import prior_metrics

            demo.results["prior"] = prior_metrics(prior, out)
        demo.total_seconds = time.perf_counter() - t0
        demo.results["timings"]["total_s"] = demo.total_seconds
        demo.warnings = warnings_log.messages
        write_demo_report(demo, meta, live, report)
        demo.total_seconds = time.perf_counter() - t0
    finally:
        root.removeHandler(warnings_log)
        logging.captureWarnings(False)
    return demo


def describe_model(meta: dict[str, Any], model: torch.nn.Module, name: str) -> str:
    """One line naming what the model is (architecture, size, latent, training), for the protocol table."""
    from gaussquant.models.presets import ARCH_PRESETS

    m, b = meta["model"], meta["bottleneck"]
    arch = ARCH_PRESETS[m["arch"]]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    mults = "-".join(str(v) for v in getattr(arch, "channel_mults", ()))
    steps = meta.get("source_step") or meta.get("step")
    return (f"bundled {name}: {m['arch']} UNet Gaussian VAE (base {getattr(arch, 'base_channels', '?')} channels, "
            f"mults {mults}, f = {arch.downsample_factor}, {params:.2f} M parameters), {b['latent_channels']} "
            f"latent channels in groups of d = {b['codebook_dim']}, trained with TDC at {b['target_bits']:g} bits "
            f"per group for {steps} steps")


def _metrics(demo: DemoResult, model: torch.nn.Module, meta: dict[str, Any], main_k: int, ks: list[int],
             report: Any, live: Any, name: str, timings: dict[str, float], max_side: int) -> dict[str, Any]:
    """The ``metrics.json`` dict: ``psnr`` (GQ at the main K, decoded from the token files) and
    ``continuous.psnr`` at the top level, as the earlier demo wrote them."""
    photos, live_photos = demo.photos, demo.live_photos
    groups = int(report.num_groups)
    f = int(model.downsample_factor)
    pixels = [p.original.shape[-2] * p.original.shape[-1] for p in photos]
    tokens = [p.indices[main_k].shape[-2] * p.indices[main_k].shape[-1] for p in photos]
    bpp = groups * math.log2(main_k) * sum(tokens) / sum(pixels)
    usage, entropy = index_usage(photos, main_k)
    kl = torch.cat([p.kl_bits.flatten() for p in photos if p.kl_bits is not None])

    def cast(rs: list) -> list[float]:
        return [round(sum(r.cast[c] for r in rs) / len(rs), 2) for c in range(3)]

    def worst(rs: list) -> float:
        return round(max(abs(v) for r in rs for v in r.cast), 2)

    sweep = []
    for k in ks:
        sweep.append({"codebook_size": k, "bits_per_token": groups * math.log2(k),
                      "bpp": groups * math.log2(k) * sum(tokens) / sum(pixels), "psnr": mean_psnr(photos, k)})
    live_kl = live.snapshots[-1].kl_bits
    return {
        "psnr": mean_psnr(photos, main_k),
        "continuous": {"psnr": mean_psnr(photos), "colour_cast_levels": cast([p.continuous for p in photos]),
                       "colour_cast_max_levels": worst([p.continuous for p in photos])},
        "colour_cast_levels": cast([p.gq[main_k] for p in photos]),
        "colour_cast_max_levels": worst([p.gq[main_k] for p in photos]),
        "num_images": len(photos),
        "codebook_size": main_k, "num_groups": groups, "bits_per_token": groups * math.log2(main_k), "bpp": bpp,
        "codebook_usage": usage, "index_entropy_bits": entropy,
        "kl_bits": {"mean": float(kl.mean()), "min": float(kl.min()), "max": float(kl.max())},
        "fraction_in_band": float(report.fraction_in_band),
        "per_photo": {
            p.name: {"size": [int(p.original.shape[-2]), int(p.original.shape[-1])],
                     "continuous_psnr": p.continuous.psnr, "psnr": p.gq[main_k].psnr,
                     "colour_cast_levels": [round(c, 2) for c in p.gq[main_k].cast],
                     "token_file": str(p.token_file.relative_to(demo.out)) if p.token_file else None}
            for p in photos},
        "rate_quality": sweep,
        "live": {"steps": live.steps, "train_seconds": live.seconds,
                 "continuous_psnr": mean_psnr(live_photos), "psnr": mean_psnr(live_photos, main_k),
                 "kl_bits_mean_start": float(live.snapshots[0].kl_bits.mean()),
                 "kl_bits_mean_end": float(live_kl.mean()),
                 "fraction_in_band_end": float(((live_kl - math.log2(main_k)).abs() <= 0.5).double().mean())},
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "threads": torch.get_num_threads(),
        "max_side": max_side,
        "protocol": {
            "model": describe_model(meta, model, name),
            "bottleneck": f"GQ (to_gaussian_quant, no training): Sobol codebook of K = {main_k} standard-Gaussian "
                          f"vectors of d = {report.codebook_dim}, seed 42, log-ratio search (beta 1); "
                          f"{groups} groups per token",
            "data": f"the {len(photos)} held-out photos ({', '.join(p.name for p in photos)}), whole, longer side "
                    f"shrunk to at most {max_side} px, cut to multiples of "
                    f"{f}; never seen in training",
            "windows": f"encoder and decoder run in {TILING.window}-px windows ({TILING.core}-px cores, "
                       f"{TILING.margin}-px margins; gaussquant/tiling.py), the token grid is the whole photo's; "
                       "the token files record them",
            "tokens": "one .npz per photo in tokens/; the GQ numbers are decoded from those files",
            "psnr": "on uint8 images, per photo, then the mean over photos",
            "lpips": "not computed: its weights are not bundled and the demo downloads nothing",
        },
    }
