"""Rate-matched quality: GQ against VQ, FSQ, LFQ, BSQ and TokenBridge at equal bits per token (docs/method.md section 6).

For each architecture (tiny UNet, tiny ViT), rate B (bits per token) and seed, every method gets the same
architecture, data (seeded crops of the bundled training photos, or ``--data DIR``), steps, batch,
optimizer, learning rate and seed:

- ``gq``: a Gaussian VAE with TDC at B bits per group (one group per token, d = C), converted to GQ with
  K = 2^B and no training (Sobol codebook, seed 42, log-ratio search);
- ``vq``, ``fsq``, ``lfq``, ``bsq``: trained end to end with their quantizer (``rate_matched_configs(B)``), at
  the GQ reference's baseline settings: VQ with beta on the codebook term (``legacy=True``) and strided groups,
  BSQ at temperature 0.01, LFQ with the pooled codebook entropy (docs/method.md, "Deliberate differences");
  each row's ``settings`` names them, and so does its run directory;
- ``tokenbridge``: TokenBridge at B / C bits per channel on a vanilla Gaussian VAE (fixed KL weight);
- ``tokenbridge_tdc``: TokenBridge on a Gaussian VAE trained with TDC at d = 1, B / C bits per dimension.
  Both TokenBridge variants quantize a posterior sample (TokenBridge's input; noise seed 0) with a range
  fitted to samples of the training latents (``fit_range``): the fair, tuned variant; TokenBridge's own
  default mapping is the documented mismatch (docs/method.md section 6).

Evaluation (``evaluate``: PSNR on uint8, SSIM, codebook usage against K and against min(tokens, K), plug-in
and Miller-Madow index entropy, joint token entropy; with ``--fd`` also fd_effnet_lite0 and its unbiased KID)
uses images no method trained on: the held-out photos (default), ``DIR/val`` when ``--data DIR`` holds
``train/`` and ``val/`` (a single folder is refused: its images are the training images), or the standard
10,000-image test split with ``--dataset fashion-mnist`` (training on the 60,000-image train split).

Verdict: per (arch, rate, baseline) the paired difference GQ minus baseline over seeds with a 95% t
interval (``gaussquant.bench.paired``): "GQ ahead", "behind" or "within noise". Default grid and its cost
(measured on the idle 2-core machine, one thread per job: a 400-step tiny-UNet training 110 s, ViT 33 s;
an evaluation of 512 crops without the Fréchet features about 7 s, estimated from forward throughput):
both archs, 8 bits per token, all 7 methods, 400 steps, 9 seeds = 126 trainings and 126 evaluations,
about 9,900 core-seconds, i.e. about 83 min with 2 jobs. At the paired standard deviation measured at 400
steps (about 0.75 dB, docs/RESULTS.md) 9 seeds give a 95% half-width of about 0.58 dB: gaps above ~0.6 dB
are resolved; a 0.3 dB gap needs about 28 seeds or a paired spread below ~0.4 dB.
On Fashion-MNIST the evaluation of the 10,000 test images dominates (estimated from the measured training
throughput, forward only: about 115 s per tiny-UNet evaluation and 35 s per ViT evaluation on one core), so
the default there is 5 seeds: about 2,050 core-seconds per seed, 10,250 in all, about 85 min with 2 jobs.
``--fd`` adds about 55 core-seconds per evaluation (EfficientNet features). One training serves every method that shares it (the
vanilla VAE serves TokenBridge at every rate). Trainings run in ``--jobs`` processes of one thread each;
a finished run directory is reused (the trainer resumes at its last step) and so are a finished unit's
result rows (``quality_rows.json`` in its run directory, used only when the recipe and evaluation settings
match), so an interrupted or extended benchmark (e.g. one more seed) continues where it stopped. Writes
``OUT/results.json``, ``OUT/table.md`` and ``OUT/figures/rd_*.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


log = logging.getLogger(__name__)

METHODS = ("gq", "vq", "fsq", "lfq", "bsq", "tokenbridge", "tokenbridge_tdc")
ARCHS = {"unet": "unet-tiny", "vit": "vit-tiny"}
TOKENBRIDGE_INPUT = "sample"  # TokenBridge quantizes a posterior sample; "mean" is the option


def method_settings(method: str, bottleneck: Any) -> str:
    """The settings a row's method used, in words (its ``settings`` column). ``bottleneck``: the unit's config."""
    if method == "vq":
        term = "codebook" if bottleneck.legacy else "commitment"
        return f"beta {bottleneck.beta:g} on the {term} term, {bottleneck.grouping} groups"
    if method == "bsq":
        return f"temperature {1 / bottleneck.inv_temperature:g}"
    if method == "lfq":
        entropy = bottleneck.codebook_entropy.replace("_", "-")
        return f"{entropy} codebook entropy, temperature {1 / bottleneck.inv_temperature:g}"
    if method == "fsq":
        return f"levels {list(bottleneck.levels)}"
    if method in ("tokenbridge", "tokenbridge_tdc"):
        return f"posterior {TOKENBRIDGE_INPUT}, fitted range"
    return f"TDC factor {bottleneck.factor:g}, Sobol codebook seed 42"


def _unit_tag(method: str, bottleneck: Any) -> str:
    """Settings in a baseline's run directory name, so that a run trained with other settings is never reused."""
    if method == "vq":
        placement = "legacy" if bottleneck.legacy else "corrected"
        return placement + ("-strided" if bottleneck.grouping == "strided" else "")
    if method == "bsq":
        return f"t{1 / bottleneck.inv_temperature:g}"
    if method == "lfq":
        return bottleneck.codebook_entropy.replace("_", "-")
    return ""
DATASETS = ("photos", "fashion-mnist")
DEFAULT_SEEDS = {"photos": tuple(range(9)), "fashion-mnist": tuple(range(5))}
QUICK = dict(archs=("unet",), rates=(8,), seeds=(0, 1), methods=("gq", "fsq"), steps=4, eval_crops=8, jobs=1)


@dataclass
class QualityConfig:
    """The benchmark grid and the shared training recipe (same for every method)."""

    archs: tuple[str, ...] = ("unet", "vit")
    rates: tuple[int, ...] = (8,)
    seeds: tuple[int, ...] | None = None  # None: DEFAULT_SEEDS of the dataset
    methods: tuple[str, ...] = METHODS
    steps: int = 400
    batch_size: int = 8
    lr: float = 1e-3
    image_size: int = 32
    latent_channels: int = 4
    tdc_factor: float = 1.03
    vanilla_kl_weight: float = 0.3
    eval_crops: int = 512
    data: str | None = None
    dataset: str = "photos"
    fd: bool = False
    confidence: float = 0.95
    out: str = "runs/bench-quality"
    jobs: int = 2

    def __post_init__(self) -> None:
        if self.seeds is None:
            self.seeds = DEFAULT_SEEDS.get(self.dataset, DEFAULT_SEEDS["photos"])
        bad = [m for m in self.methods if m not in METHODS] + [a for a in self.archs if a not in ARCHS]
        if bad:
            raise ValueError(f"unknown methods/archs {bad}; methods: {METHODS}, archs: {tuple(ARCHS)}")
        for b in self.rates:
            if b % self.latent_channels:
                raise ValueError(f"rate {b} must be divisible by latent_channels {self.latent_channels} (TokenBridge)")
        if self.steps < 1 or self.jobs < 1 or not self.seeds:
            raise ValueError("steps and jobs must be >= 1 and at least one seed is needed")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.data and self.dataset == "photos":
            root = Path(self.data)
            if not ((root / "train").is_dir() and (root / "val").is_dir()):
                raise ValueError(f"--data {self.data!r} must hold train/ and val/ subfolders: the benchmark "
                                 "evaluates on val/ only, never on the images it trained on")


@dataclass
class Unit:
    """One training run and the methods evaluated on it: ``uses`` = [(method, bits)]."""

    arch: str
    seed: int
    name: str
    bottleneck: Any
    uses: list[tuple[str, int]] = field(default_factory=list)


def plan(cfg: QualityConfig) -> list[Unit]:
    """The training units of the grid (each trained once)."""
    from gaussquant.quantizers.build import GaussianConfig
    from gaussquant.quantizers.rates import rate_matched_configs

    c = cfg.latent_channels
    units: dict[tuple[str, int, str], Unit] = {}

    def add(arch: str, seed: int, name: str, bottleneck: Any, method: str, bits: int) -> None:
        unit = units.setdefault((arch, seed, name), Unit(arch, seed, name, bottleneck))
        unit.uses.append((method, bits))

    # seed-major order: an interrupted run still holds the whole grid for the first seeds
    for seed in cfg.seeds:
        for arch in cfg.archs:
            for bits in cfg.rates:
                configs = rate_matched_configs(bits, latent_channels=c)
                for method in cfg.methods:
                    if method == "gq":
                        g = GaussianConfig(latent_channels=c, codebook_dim=c, target_bits=float(bits), factor=cfg.tdc_factor)
                        add(arch, seed, f"tdc-{bits}", g, method, bits)
                    elif method == "tokenbridge":
                        g = GaussianConfig(latent_channels=c, codebook_dim=1, target_bits=None,
                                           kl_weight=cfg.vanilla_kl_weight)
                        add(arch, seed, "vanilla", g, method, bits)
                    elif method == "tokenbridge_tdc":
                        g = GaussianConfig(latent_channels=c, codebook_dim=1, target_bits=float(bits // c),
                                           factor=cfg.tdc_factor)
                        add(arch, seed, f"tdc-d1-{bits}", g, method, bits)
                    else:
                        tag = _unit_tag(method, configs[method])
                        add(arch, seed, f"{method}-{tag + '-' if tag else ''}{bits}", configs[method], method, bits)
    return list(units.values())


def train_config(cfg: QualityConfig, unit: Unit, out: Path) -> Any:
    """The TrainConfig of one unit: the shared recipe, only the bottleneck differs."""
    import torch

    from gaussquant.data.config import DataConfig
    from gaussquant.models.presets import ModelConfig
    from gaussquant.train.config import LossConfig, OptimConfig, TrainConfig

    if cfg.dataset == "fashion-mnist":
        data = DataConfig(source="fashion-mnist", path=cfg.data, image_size=cfg.image_size)
    elif cfg.data:
        data = DataConfig(source="folder", path=cfg.data, image_size=cfg.image_size)
    else:
        data = DataConfig(image_size=cfg.image_size, num_crops=4096)
    return TrainConfig(
        model=ModelConfig(arch=ARCHS[unit.arch], image_size=cfg.image_size), bottleneck=unit.bottleneck,
        data=data, optim=OptimConfig(lr=cfg.lr, betas=(0.5, 0.9), warmup_steps=20),
        loss=LossConfig(l1_weight=1.0, learned_logvar=True, rate_weight=0.1), steps=cfg.steps,
        batch_size=cfg.batch_size, seed=unit.seed, out=str(out), log_every=50, image_every=cfg.steps,
        ckpt_every=cfg.steps, keep_last=1, device="cpu" if not torch.cuda.is_available() else "auto",
    )


def _discrete_model(model: Any, method: str, bits: int, cfg: QualityConfig, train_data: Any) -> Any:
    """The evaluated model: the trained one, its GQ conversion, or TokenBridge on its latent."""
    import torch

    from gaussquant.convert import to_gaussian_quant
    from gaussquant.models.autoencoder import Autoencoder
    from gaussquant.quantizers.tokenbridge import TokenBridgeQuantizer

    if method == "gq":
        return to_gaussian_quant(model, 2**bits)
    if method in ("tokenbridge", "tokenbridge_tdc"):
        tb = TokenBridgeQuantizer(cfg.latent_channels, bits // cfg.latent_channels, input=TOKENBRIDGE_INPUT)
        x = torch.stack([train_data[i] for i in range(min(512, len(train_data)))])
        with torch.no_grad():
            posterior = model.encode(x).posterior
            noise = torch.Generator().manual_seed(0)
            tb.fit_range(posterior.mean if TOKENBRIDGE_INPUT == "mean" else posterior.sample(noise))  # what it sees
        return Autoencoder(model.encoder, tb, model.decoder).eval()
    return model.eval()


def unit_dir(cfg: QualityConfig, arch: str, seed: int, name: str) -> Path:
    """Where the run of one unit lives (reused by the claims benchmarks); one folder per dataset."""
    base = Path(cfg.out) / "runs"
    if getattr(cfg, "dataset", "photos") != "photos":
        base = base / cfg.dataset
    return base / arch / f"seed{seed}" / name


def train_unit(cfg: QualityConfig, unit: Unit) -> tuple[Any, Any, float, int]:
    """Train (or resume / reuse a finished run of) one unit: ``(model in eval mode, TrainConfig, s, steps)``."""
    from gaussquant.train.trainer import Trainer

    tcfg = train_config(cfg, unit, unit_dir(cfg, unit.arch, unit.seed, unit.name))
    t0 = time.perf_counter()
    trainer = Trainer(tcfg)
    trainer.fit()
    return trainer.c.model_module.eval(), tcfg, time.perf_counter() - t0, trainer.step


def run_unit(cfg: QualityConfig, unit: Unit, threads: int | None = None) -> list[dict[str, Any]]:
    """Train (or reuse) one unit, then evaluate every method that uses it; returns result rows."""
    import torch

    from gaussquant.eval.evaluate import evaluate

    if threads:
        torch.set_num_threads(threads)
    cache = unit_dir(cfg, unit.arch, unit.seed, unit.name) / ROWS_FILE
    key = _rows_key(cfg, unit)
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except ValueError:
            saved = {}
        if saved.get("key") == key:  # trained and evaluated with this very recipe: reuse its rows
            return saved["rows"]
    model, tcfg, seconds, steps = train_unit(cfg, unit)
    train_data, eval_data, description = split_datasets(cfg, tcfg)
    rows = []
    for method, bits in unit.uses:
        m = _discrete_model(model, method, bits, cfg, train_data)
        r = evaluate(m, eval_data, batch_size=64,
                     metric_options=dict(lpips=False, rfid=False, ms_ssim=False, fd_effnet=cfg.fd))
        kl = r.get("kl_bits") or {}
        rows.append({
            "arch": unit.arch, "method": method, "rate": bits, "seed": unit.seed, "unit": unit.name,
            "settings": method_settings(method, unit.bottleneck),
            "bits_per_token": r["bits_per_token"], "bpp": r["bpp"], "codebook_size": r["codebook_size"],
            "num_groups": r["num_groups"], "psnr": r["psnr"], "ssim": r["ssim"], "fd": r["fd_effnet_lite0"],
            "usage": r["codebook_usage"], "entropy_bits": r["index_entropy_bits"],
            "max_entropy_bits": r.get("max_entropy_bits"), "continuous_psnr": (r.get("continuous") or {}).get("psnr"),
            "kl_mean": kl.get("mean"), "kl_min": kl.get("min"), "kl_max": kl.get("max"),
            "kl_in_band": kl.get("in_band"), "kid": r.get("kid_effnet_lite0"), "kid_std": r.get("kid_effnet_lite0_std"),
            "usage_vs_reachable": r.get("codebook_usage_vs_reachable"), "entropy_mm_bits": r.get("index_entropy_bits_mm"),
            "joint_entropy_bits": r.get("joint_entropy_bits"), "num_tokens": r.get("num_tokens"),
            "train_seconds": seconds, "steps": steps, "eval_images": r["num_images"], "eval_data": description,
        })
    if steps >= cfg.steps:  # only a finished training's rows are final
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "rows": rows}, indent=1))
        tmp.replace(cache)
    return rows


ROWS_FILE = "quality_rows.json"


def split_datasets(cfg: QualityConfig, tcfg: Any) -> tuple[Any, Any, str]:
    """``(train, eval, description)``: the held-out photo crops, ``DIR/val`` or the Fashion-MNIST test split."""
    from gaussquant.data.config import build_dataset
    from gaussquant.eval.evaluate import build_eval_dataset

    train, held_out = build_dataset(tcfg.data)
    if cfg.dataset == "fashion-mnist":
        return train, held_out, f"Fashion-MNIST test split ({len(held_out)} images, resized to {cfg.image_size})"
    if cfg.data:
        return train, held_out, f"{cfg.data}/val ({len(held_out)} images, center crops {cfg.image_size})"
    eval_data, description = build_eval_dataset(None, cfg.image_size, cfg.eval_crops)
    return train, eval_data, description


def _rows_key(cfg: QualityConfig, unit: Unit) -> dict[str, Any]:
    """Everything a unit's result rows depend on besides its run directory (which holds the training)."""
    bottleneck = asdict(unit.bottleneck) if hasattr(unit.bottleneck, "__dataclass_fields__") else repr(unit.bottleneck)
    return json.loads(json.dumps({
        "uses": unit.uses, "bottleneck": bottleneck, "steps": cfg.steps, "batch_size": cfg.batch_size,
        "settings": [method_settings(m, unit.bottleneck) for m, _ in unit.uses],
        "lr": cfg.lr, "image_size": cfg.image_size, "latent_channels": cfg.latent_channels,
        "eval_crops": cfg.eval_crops, "data": cfg.data, "dataset": cfg.dataset, "fd": cfg.fd,
    }, default=str))


def run(cfg: QualityConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the grid (Python API behind ``gaussquant bench quality``); writes results, table and figures."""
    from gaussquant.bench.quality_report import write_outputs

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    units = plan(cfg)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc="bench quality (trainings)", position=0)
    if cfg.jobs == 1:
        for unit in units:
            rows += run_unit(cfg, unit)
            bar is not None and bar.update()
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        # why: tiny models scale badly over threads; one thread per process uses the cores better
        with ProcessPoolExecutor(cfg.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(run_unit, cfg, unit, 1) for unit in units]
            for fut in as_completed(futures):
                rows += fut.result()
                bar is not None and bar.update()
                (out / "results.partial.json").write_text(json.dumps(rows, indent=1))
    if bar is not None:
        bar.close()
    from gaussquant.bench.paired import paired_rows

    summary = {"config": asdict(cfg), "seconds": time.perf_counter() - t0, "rows": rows,
               "paired": paired_rows(rows, "psnr", cfg.confidence)}
    write_outputs(summary, out)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = QualityConfig()
    ints = lambda s: tuple(int(v) for v in s.split(","))  # noqa: E731
    strs = lambda s: tuple(v for v in s.split(",") if v)  # noqa: E731
    parser.add_argument("--data", help="image folder with train/ and val/ (evaluated on val/ only), or the "
                        "Fashion-MNIST IDX folder with --dataset fashion-mnist; default: the bundled photos")
    parser.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                        help="photos (bundled or --data) or fashion-mnist (train split / 10,000-image test split)")
    parser.add_argument("--fd", action="store_true", help="also Frechet distance and KID of EfficientNet-Lite0 "
                        "features (about 55 core-seconds per evaluation)")
    parser.add_argument("--quick", action="store_true", help="a tiny grid for tests: unet, 8 bits, 2 seeds, gq and "
                        "fsq, 4 steps, 8 eval images (overrides the grid options)")
    parser.add_argument("--rates", type=ints, default=d.rates, help="bits per token, comma separated (8)")
    parser.add_argument("--seeds", type=ints, default=None,
                        help="seeds, comma separated (default 0,...,8 on photos, 0,...,4 on fashion-mnist)")
    parser.add_argument("--archs", type=strs, default=d.archs, help="unet,vit")
    parser.add_argument("--methods", type=strs, default=d.methods, help=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=d.steps, help=f"training steps of every run ({d.steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="learning rate of every method")
    parser.add_argument("--eval-crops", type=int, default=d.eval_crops,
                        help=f"held-out photo crops evaluated ({d.eval_crops}; without --data)")
    parser.add_argument("--vanilla-kl-weight", type=float, default=d.vanilla_kl_weight)
    parser.add_argument("--tdc-factor", type=float, default=d.tdc_factor)
    parser.add_argument("--jobs", type=int, default=d.jobs, help="parallel training processes (1 thread each)")
    parser.add_argument("--out", default=d.out)


def main(args: argparse.Namespace) -> int:
    from gaussquant.bench.quality_report import format_paired, format_table

    grid = dict(archs=args.archs, rates=args.rates, seeds=args.seeds, methods=args.methods, steps=args.steps,
                eval_crops=args.eval_crops, jobs=args.jobs)
    if args.quick:
        grid.update(QUICK)
    cfg = QualityConfig(**grid, batch_size=args.batch_size, lr=args.lr, vanilla_kl_weight=args.vanilla_kl_weight,
                        tdc_factor=args.tdc_factor, data=args.data, dataset=args.dataset, fd=args.fd, out=args.out)
    summary = run(cfg)
    print(format_table(summary["rows"]))
    print()
    print(format_paired(summary["paired"]))
    print(f"{len(summary['rows'])} results in {summary['seconds']:.0f} s; table, JSON and figures in {cfg.out}")
    return 0
