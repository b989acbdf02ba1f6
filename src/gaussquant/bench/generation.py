"""Generation at equal rate: how well the same prior models each tokenizer's tokens (a small version).

For one architecture, rate B (bits per token) and seed, each method's tokenizer is trained (or reused) exactly
as ``gaussquant bench quality`` trains it (same recipe, data and run folders: see
:mod:`gaussquant.bench.quality`); GQ is the TDC Gaussian VAE converted with K = 2^B. Then, for every method:

1. tokenize the training crops and the held-out crops (``OUT/tokens/METHOD-{train,test}.npz``);
2. train the same prior (preset, steps, batch size, learning rate and seed shared by all methods;
   :mod:`gaussquant.prior.train`) on the training tokens;
3. score the held-out tokens (:mod:`gaussquant.prior.evaluate`): NLL in bits per token and as a fraction of
   the rate G * log2 K, next to the held-out tokens' unigram entropy (the bits per token of a prior that
   ignores context, fitted on the training tokens) and the training-token NLL (to see over-fitting);
4. draw 16 samples at temperature 1 (seed 0) and save them as ``OUT/samples_METHOD.png``;
5. with ``--fd`` (opt-in: about 1,000 EfficientNet forward passes per method on a CPU, plus the held-out
   images' once), the Fréchet distance and the unbiased KID of ``n`` generated images against the first ``n``
   held-out images, ``n = min(--fd-samples, held-out images)`` (:mod:`gaussquant.bench.generation_fd`).

Data: the bundled photos (seeded crops; held-out crops of the held-out photos), ``--data DIR`` with ``train/``
and ``val/``, or ``--dataset fashion-mnist`` (tokens of the 60,000-image train split, held-out tokens of the
10,000-image test split; the loader and recipe of ``bench quality --dataset fashion-mnist``).
``--train-images`` / ``--test-images`` keep the first N images of each side (a smaller, faster run).

A lower NLL / rate means the tokens are easier to model at that rate. Writes ``OUT/results.json`` and
``OUT/table.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class GenerationConfig:
    """The benchmark: tokenizers (shared recipe with ``bench quality``) and the prior trained on each."""

    methods: tuple[str, ...] = ("gq", "vq", "fsq")
    rate: int = 8
    arch: str = "unet"
    seed: int = 0
    steps: int = 400
    image_size: int = 32
    eval_crops: int = 128
    data: str | None = None
    dataset: str = "photos"
    train_images: int | None = None  # None: every training image (crop) is tokenized for the prior
    test_images: int | None = None  # None: every held-out image
    fd: bool = False
    fd_samples: int = 1000
    prior_preset: str = "tiny"
    prior_steps: int = 600
    prior_batch_size: int = 32
    out: str = "runs/bench-generation"

    def quality_config(self) -> Any:
        from gaussquant.bench.quality import QualityConfig

        return QualityConfig(archs=(self.arch,), rates=(self.rate,), seeds=(self.seed,), methods=self.methods,
                             steps=self.steps, image_size=self.image_size, eval_crops=self.eval_crops,
                             data=self.data, dataset=self.dataset, out=self.out, jobs=1)

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 2, got {value}")
        if self.fd_samples < 2:
            raise ValueError(f"--fd-samples must be at least 2, got {self.fd_samples}")


@torch.no_grad()
def write_tokens(model: Any, dataset: Any, path: Path, batch_size: int = 64) -> Path:
    """Tokenize every image of ``dataset`` into a tokens file (names ``crop_00000.png`` ...)."""
    from gaussquant.tokens import TokenWriter, model_fingerprint

    n = len(dataset)
    first = dataset[0]
    with TokenWriter(path, num_images=n, codebook_size=model.bottleneck.codebook_size,
                     image_size=tuple(first.shape[-2:]), model_fingerprint=model_fingerprint(model)) as writer:
        for start in range(0, n, batch_size):
            x = torch.stack([dataset[i] for i in range(start, min(n, start + batch_size))])
            writer.write(model.tokenize(x), [f"crop_{i:05d}.png" for i in range(start, start + len(x))])
        writer.close()
    return path


def unigram_bits_per_token(train: np.ndarray, test: np.ndarray, layout: Any) -> float:
    """Held-out bits per token under per-group index frequencies of the training tokens (add-one smoothed)."""
    seq_train = layout.to_sequences(train).numpy()  # (N, L, G)
    seq_test = layout.to_sequences(test).numpy()
    k = layout.codebook_size
    bits = 0.0
    for g in range(layout.num_groups):
        counts = np.bincount(seq_train[..., g].ravel(), minlength=k) + 1.0
        bits += float(-np.log2(counts / counts.sum())[seq_test[..., g].ravel()].mean())
    return bits


def save_samples(model: Any, indices: torch.Tensor, path: Path) -> Path:
    """Decode ``indices`` and tile the images into one PNG (4 per row)."""
    from PIL import Image

    from gaussquant.data.transforms import to_uint8

    with torch.no_grad():
        images = to_uint8(model.detokenize(indices)).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    n, h, w, _ = images.shape
    cols = 4
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = image
    Image.fromarray(grid).save(path)
    return path


def _first(dataset: Any, num: int | None) -> Any:
    """The first ``num`` items of ``dataset`` (all of them when ``num`` is None or not smaller)."""
    from torch.utils.data import Subset

    return dataset if num is None or num >= len(dataset) else Subset(dataset, range(num))


def run(cfg: GenerationConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark (the Python API behind ``gaussquant bench generation``)."""
    from gaussquant.bench.quality import _discrete_model, plan, split_datasets, train_config, train_unit, unit_dir
    from gaussquant.prior.data import TokenLayout
    from gaussquant.prior.evaluate import evaluate_prior
    from gaussquant.prior.generate import sample_tokens
    from gaussquant.prior.store import load_prior
    from gaussquant.prior.train import train_prior
    from gaussquant.tokens import load_tokens

    qcfg = cfg.quality_config()
    units = plan(qcfg)
    # the data first (the same for every unit): a missing Fashion-MNIST file stops the run before any training
    first = units[0]
    train_all, eval_all, description = split_datasets(qcfg, train_config(qcfg, first, unit_dir(
        qcfg, first.arch, first.seed, first.name)))
    train_data, eval_data = _first(train_all, cfg.train_images), _first(eval_all, cfg.test_images)
    out = Path(cfg.out)
    (out / "tokens").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    extractor = real_features = reference = None
    if cfg.fd:
        from gaussquant.bench.generation_fd import build_extractor, fd_and_kid, image_features

        extractor = build_extractor()
        n = min(cfg.fd_samples, len(eval_data))
        real_features = image_features(extractor, eval_data, n)
        if len(train_data) >= n:  # the floor at this n: real training images against the held-out ones
            reference = fd_and_kid(extractor, real_features, image_features(extractor, train_data, n))
    rows = []
    for unit in units:
        model, tcfg, train_seconds, steps = train_unit(qcfg, unit)
        for method, bits in unit.uses:
            tokenizer = _discrete_model(model, method, bits, qcfg, train_all)
            train_path = write_tokens(tokenizer, train_data, out / "tokens" / f"{method}-train.npz")
            test_path = write_tokens(tokenizer, eval_data, out / "tokens" / f"{method}-test.npz")
            t1 = time.perf_counter()
            train_prior(train_path, out / "priors" / method, preset=cfg.prior_preset, steps=cfg.prior_steps,
                        batch_size=cfg.prior_batch_size, seed=cfg.seed, progress=progress)
            prior_seconds = time.perf_counter() - t1
            prior = load_prior(out / "priors" / method)
            test = evaluate_prior(prior, test_path)
            train_nll = evaluate_prior(prior, train_path)
            train_tokens, test_tokens = load_tokens(train_path), load_tokens(test_path)
            unigram = unigram_bits_per_token(train_tokens.indices, test_tokens.indices, TokenLayout.of(test_tokens))
            samples, _ = sample_tokens(prior, 16, seed=0)
            save_samples(tokenizer, samples, out / f"samples_{method}.png")
            row = {
                "method": method, "rate": test["rate_bits_per_token"], "codebook_size": prior.layout.codebook_size,
                "num_groups": prior.layout.num_groups, "test_bits_per_token": test["bits_per_token"],
                "fraction_of_rate": test["fraction_of_rate"], "test_bpp": test["bits_per_pixel"],
                "unigram_bits_per_token": unigram, "train_bits_per_token": train_nll["bits_per_token"],
                "train_images": train_tokens.num_images, "test_images": test_tokens.num_images,
                "tokenizer_steps": steps, "tokenizer_seconds": train_seconds, "prior_seconds": prior_seconds,
                "eval_data": description,
            }
            if extractor is not None:
                from gaussquant.bench.generation_fd import fd_and_kid, sample_features

                t2 = time.perf_counter()
                fake = sample_features(extractor, prior, tokenizer, len(real_features), seed=0)
                row.update(fd_and_kid(extractor, real_features, fake), fd_seconds=time.perf_counter() - t2)
            rows.append(row)
            log.info("%s: held-out NLL %.3f bits per token (%.3f of the rate)", method, test["bits_per_token"],
                     test["fraction_of_rate"])
    summary = {"config": asdict(cfg), "seconds": time.perf_counter() - t0, "rows": rows, "fd_reference": reference}
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "table.md").write_text(format_table(rows, reference) + "\n")
    return summary


def format_table(rows: list[dict[str, Any]], reference: dict[str, Any] | None = None) -> str:
    """The markdown table of the rows (one per method); FD and KID columns when the rows have them, and then
    a last row ``reference`` (``fd_and_kid`` of training images against the held-out ones) when given. KID's
    standard deviation over subsets is shown only when the subsets are smaller than the sets."""
    fd = any(r.get("fd") is not None for r in rows)
    head = ("| method | K x G | rate (bits/token) | held-out NLL (bits/token) | NLL / rate | unigram (bits/token) "
            "| train NLL (bits/token) |")
    rule = "| --- | --- | --- | --- | --- | --- | --- |"
    if fd:
        head += " FD effnet-lite0 | KID x 1e3 (std) | images per side |"
        rule += " --- | --- | --- |"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['method']} | {r['codebook_size']} x {r['num_groups']} | {r['rate']:.2f} | "
                f"{r['test_bits_per_token']:.3f} | {r['fraction_of_rate']:.3f} | {r['unigram_bits_per_token']:.3f} "
                f"| {r['train_bits_per_token']:.3f} |")
        if fd:
            line += _fd_cells(r) if r.get("fd") is not None else " - | - | - |"
        lines.append(line)
    if fd and reference is not None:
        lines.append("| training images (no model) | - | - | - | - | - | - |" + _fd_cells(reference))
    return "\n".join(lines)


def _fd_cells(r: dict[str, Any]) -> str:
    kid = f"{1e3 * r['kid']:.2f}"
    if r.get("kid_subset_size", r["fd_images"]) < r["fd_images"]:
        kid += f" ({1e3 * r['kid_std']:.2f})"
    return f" {r['fd']:.2f} | {kid} | {r['fd_images']} |"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = GenerationConfig()
    parser.add_argument("--methods", default=",".join(d.methods),
                        help="comma-separated tokenizers among gq, vq, fsq, lfq, bsq, tokenbridge, tokenbridge_tdc")
    parser.add_argument("--rate", type=int, default=d.rate, help="bits per token of every tokenizer")
    parser.add_argument("--arch", choices=["unet", "vit"], default=d.arch)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--steps", type=int, default=d.steps, help="tokenizer training steps (as bench quality)")
    parser.add_argument("--image-size", type=int, default=d.image_size)
    parser.add_argument("--eval-crops", type=int, default=d.eval_crops, help="held-out crops scored by the prior")
    parser.add_argument("--data", default=None, help="image folder with train/ and val/, or the Fashion-MNIST IDX "
                        "folder with --dataset fashion-mnist (default: the bundled photos)")
    parser.add_argument("--dataset", choices=["photos", "fashion-mnist"], default=d.dataset,
                        help="photos (bundled or --data) or fashion-mnist (train split / 10,000-image test split)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="tokenize only the first N training images (crops) for the prior (default: all)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="score only the first N held-out images (default: all)")
    parser.add_argument("--fd", action="store_true", help="also the Frechet distance and KID of generated images "
                        "against held-out images (EfficientNet-Lite0 features; needs the eval extra; about "
                        "1,000 extra CPU forward passes per method)")
    parser.add_argument("--fd-samples", type=int, default=d.fd_samples,
                        help="images per side for --fd (capped at the held-out images; FD is biased below 1280)")
    parser.add_argument("--prior-preset", choices=["tiny", "small"], default=d.prior_preset)
    parser.add_argument("--prior-steps", type=int, default=d.prior_steps)
    parser.add_argument("--prior-batch-size", type=int, default=d.prior_batch_size)
    parser.add_argument("--out", default=d.out)


def main(args: argparse.Namespace) -> int:
    cfg = GenerationConfig(
        methods=tuple(m for m in args.methods.split(",") if m), rate=args.rate, arch=args.arch, seed=args.seed,
        steps=args.steps, image_size=args.image_size, eval_crops=args.eval_crops, data=args.data,
        dataset=args.dataset, train_images=args.train_images, test_images=args.test_images, fd=args.fd,
        fd_samples=args.fd_samples,
        prior_preset=args.prior_preset, prior_steps=args.prior_steps, prior_batch_size=args.prior_batch_size,
        out=args.out,
    )
    summary = run(cfg)
    print(format_table(summary["rows"], summary["fd_reference"]))
    print(f"({summary['seconds']:.0f} s; results in {cfg.out}/results.json, samples in {cfg.out}/samples_*.png)")
    return 0
