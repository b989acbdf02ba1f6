"""The demo's generation step: a tiny prior over the bundled tokenizer's tokens, trained for seconds.

What a generator does with a tokenizer (docs/generation.md), at the demo's scale:

1. tokenize ``TRAIN_CROPS`` seeded ``CROP``-pixel crops of the training photos and ``HELD_OUT_CROPS`` crops of
   the held-out photos with the demo's GQ model (``prior/train_tokens.npz``, ``prior/held_out_tokens.npz``);
2. train the ``tiny`` :class:`~gaussquant.prior.model.TokenPrior` on the training tokens for a fixed share
   of the wall clock (``prior/run``: an ordinary prior run, so ``gaussquant generate OUT/prior/run`` draws
   more samples later), with a constant learning rate after the warm-up (the step count is not known in
   advance);
3. score the held-out tokens (teacher-forced NLL in bits per token, against the rate G log2 K and against a
   context-free code of the training tokens' index frequencies);
4. draw ``NUM_SAMPLES`` token grids at temperature 1 from a fixed seed and decode them with the GQ model.

A 2-layer prior of width 64 trained for half a minute learns local statistics (colours, edges, textures),
not objects: the report says so next to the samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

PRESET = "tiny"
CROP = 32  # pixels: an 8 x 8 token grid at f = 4
TRAIN_CROPS = 1024  # tokenizing them is most of the step's cost beside the training
HELD_OUT_CROPS = 256
NUM_SAMPLES = 8
BATCH_SIZE = 32
MAX_STEPS = 1_000_000  # a time-limited run never reaches it: the cosine schedule stays at its peak


@dataclass
class PriorRun:
    """What :func:`train_demo_prior` returns."""

    run_dir: Path
    steps: int
    seconds: float
    num_parameters: int
    held_out: dict[str, Any]  # evaluate_prior's numbers on the held-out crops
    unigram_bits_per_token: float  # context-free code of the training tokens' index frequencies
    samples: Tensor  # (NUM_SAMPLES, 3, CROP, CROP) in [-1, 1], decoded from sampled tokens
    training_crops: Tensor  # (4, 3, CROP, CROP) in [-1, 1]: training crops decoded from their tokens
    token_grid: tuple[int, ...]  # (h, w) tokens per crop
    seed: int


@torch.no_grad()
def train_demo_prior(tokenizer: nn.Module, tokenizer_dir: Path, out: Path, max_seconds: float, *,
                     steps: int | None = None, seed: int = 0) -> PriorRun:
    """Steps 1-4 of the module docstring in ``out`` (created).

    Args:
        tokenizer: the demo's GQ model (eval mode, CPU); ``tokenizer_dir`` is where it is saved (stored in the
            prior's config so ``gaussquant generate`` finds it).
        max_seconds: wall-clock seconds of prior training (> 0).
        steps: train for exactly this many steps instead (tests).
        seed: crops, prior weights, batch order and samples.
    """
    from gaussquant.bench.generation import unigram_bits_per_token, write_tokens
    from gaussquant.data.default_photos import MAX_PHOTO_WEIGHT, DefaultPhotoCrops
    from gaussquant.prior.data import TokenLayout
    from gaussquant.prior.evaluate import evaluate_prior
    from gaussquant.prior.generate import sample_tokens
    from gaussquant.prior.store import load_prior
    from gaussquant.prior.train import train_prior
    from gaussquant.tokens import load_tokens

    out.mkdir(parents=True, exist_ok=True)
    train_crops = DefaultPhotoCrops("train", image_size=CROP, num_crops=TRAIN_CROPS, seed=seed,
                                    max_photo_weight=MAX_PHOTO_WEIGHT)
    held_crops = DefaultPhotoCrops("eval", image_size=CROP, num_crops=HELD_OUT_CROPS, seed=seed, flip=False)
    train_path = write_tokens(tokenizer, train_crops, out / "train_tokens.npz")
    held_path = write_tokens(tokenizer, held_crops, out / "held_out_tokens.npz")
    t0 = time.perf_counter()
    with torch.enable_grad():
        checkpoint = train_prior(train_path, out / "run", preset=PRESET, steps=steps or MAX_STEPS,
                                 batch_size=BATCH_SIZE, seed=seed, tokenizer=tokenizer_dir,
                                 checkpoint_every=MAX_STEPS, max_seconds=None if steps else max_seconds)
    seconds = time.perf_counter() - t0
    prior = load_prior(checkpoint)
    prior.model.eval()
    held_out = evaluate_prior(prior, held_path)
    train_tokens, held_tokens = load_tokens(train_path), load_tokens(held_path)
    layout = TokenLayout.of(train_tokens)
    unigram = unigram_bits_per_token(train_tokens.indices, held_tokens.indices, layout)
    indices, _ = sample_tokens(prior, NUM_SAMPLES, seed=seed)  # (N, G, h, w)
    samples = tokenizer.detokenize(indices).clamp(-1, 1)
    references = tokenizer.detokenize(train_tokens.batch(0, 4)).clamp(-1, 1)
    return PriorRun(run_dir=out / "run", steps=prior.step, seconds=seconds,
                    num_parameters=prior.model.num_parameters(), held_out=held_out,
                    unigram_bits_per_token=unigram, samples=samples.cpu(), training_crops=references.cpu(),
                    token_grid=tuple(layout.grid), seed=seed)


def prior_metrics(run: PriorRun, out: Path) -> dict[str, Any]:
    """The ``metrics.json`` ``"prior"`` section."""
    h = run.held_out
    return {
        "preset": PRESET, "num_parameters": run.num_parameters, "steps": run.steps,
        "train_seconds": round(run.seconds, 1), "batch_size": BATCH_SIZE, "seed": run.seed,
        "crop_size": CROP, "token_grid": list(run.token_grid), "train_crops": TRAIN_CROPS, "held_out_crops": HELD_OUT_CROPS,
        "held_out_bits_per_token": h["bits_per_token"], "rate_bits_per_token": h["rate_bits_per_token"],
        "fraction_of_rate": h["fraction_of_rate"], "held_out_bits_per_pixel": h["bits_per_pixel"],
        "unigram_bits_per_token": run.unigram_bits_per_token, "num_samples": int(run.samples.shape[0]),
        "run": str(run.run_dir.relative_to(out)),
        "protocol": (f"tiny TokenPrior trained on the GQ tokens of {TRAIN_CROPS} seeded {CROP}-px crops of the "
                     f"training photos; NLL teacher-forced over the tokens of {HELD_OUT_CROPS} {CROP}-px crops "
                     f"of the held-out photos; unigram = per-group index frequencies of the training tokens "
                     f"(add-one); samples at temperature 1, seed {run.seed}"),
    }


def prior_paragraph(p: dict[str, Any]) -> str:
    """The report's honest sentence about the samples and the prior's numbers."""
    return (
        f"A `{p['preset']}` prior ({p['num_parameters'] / 1e3:.0f} k parameters, docs/generation.md) trained "
        f"here for {p['steps']} steps ({p['train_seconds']:.0f} s) on the tokens of {p['train_crops']} "
        f"{p['crop_size']}-px crops of the training photos, then sampled at temperature 1 (seed {p['seed']}) "
        f"and decoded with the GQ model. A prior this small, trained for seconds, learns local statistics at "
        f"best (colours, textures), not objects: expect texture patches, not photos. Its held-out NLL (tokens of "
        f"{p['held_out_crops']} crops of the held-out photos) is {p['held_out_bits_per_token']:.2f} bits per "
        f"token against the rate of {p['rate_bits_per_token']:.0f} bits ({100 * p['fraction_of_rate']:.0f} %); "
        f"a code that ignores context (the training tokens' index frequencies) needs "
        f"{p['unigram_bits_per_token']:.2f} bits. The first row shows training crops decoded from their tokens, "
        f"for comparison; `gaussquant generate {p['run']} --num 16 --out samples/` (from the demo folder) "
        "draws more."
    )
