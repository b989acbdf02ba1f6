"""Generate images: sample token grids from a prior and decode them with the tokenizer that wrote its tokens.

The tokenizer is the one stored in the prior's config.json (``prior train --tokenizer``) or the one passed
here; before anything is sampled or written its fingerprint (``gaussquant.tokens.model_fingerprint``) must
equal the fingerprint of the tokens the prior was trained on, so a prior never decodes through another
model's codebook or decoder. The sampled tokens are written as ``OUT/tokens.npz`` (the format of
``gaussquant encode``, so ``gaussquant decode`` and ``prior eval`` read them too) and decoded to
``OUT/sample_00000.png`` ... (``OUT/CLASS/sample_00000.png`` for a class-conditional prior).

Sampling is reproducible: one ``torch.Generator`` seeded with ``seed`` draws every batch in order, so the
same prior, seed, batch size and device give the same images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from gaussquant.prior.store import LoadedPrior, load_prior
from gaussquant.tokens import TokenWriter, check_output_path, model_fingerprint

log = logging.getLogger(__name__)


def load_tokenizer_for(prior: LoadedPrior, tokenizer: str | os.PathLike | None, device: torch.device) -> nn.Module:
    """Load the tokenizer that decodes ``prior``'s tokens and check its fingerprint; raise ValueError if it is
    another model, or if none is stored and none is given."""
    from gaussquant.encode import load_model

    path = tokenizer if tokenizer is not None else prior.tokenizer
    if path is None:
        raise ValueError("this prior stores no tokenizer (it was trained without --tokenizer); pass --tokenizer "
                         "MODEL, the model that encoded its training tokens")
    if tokenizer is None and not Path(path).exists():
        raise FileNotFoundError(f"the prior's tokenizer {path} no longer exists (moved or deleted); pass "
                                "--tokenizer MODEL with its new location")
    model = load_model(path, device)
    fingerprint = model_fingerprint(model)
    if fingerprint != prior.layout.model_fingerprint:
        raise ValueError(
            f"the tokenizer {str(path)!r} is not the model that wrote this prior's training tokens (fingerprint "
            f"{fingerprint[:12]}..., the prior's tokens: {prior.layout.model_fingerprint[:12]}...); its codebook "
            "or decoder would turn the samples into noise. Pass the model that encoded the tokens"
        )
    return model


def sample_tokens(prior: LoadedPrior, num: int, *, temperature: float = 1.0, top_k: int | None = None,
                  seed: int = 0, class_name: str | None = None, batch_size: int = 16,
                  progress: bool = False) -> tuple[torch.Tensor, list[str]]:
    """Draw ``num`` token grids in the prior's file layout, and the file name of each image.

    Returns:
        ``(indices, names)``: indices ``(num, G, h, w)`` or ``(num, L, G)`` int64 in [0, K) on the CPU.
    """
    if num < 1 or batch_size < 1:
        raise ValueError(f"--num and --batch-size must be >= 1; got {num} and {batch_size}")
    classes = prior.class_names
    if class_name is not None and not classes:
        raise ValueError("this prior is unconditional (trained without --class-from-folders): drop --class")
    if class_name is not None and class_name not in classes:
        raise ValueError(f"unknown class {class_name!r}; this prior knows {classes[:20]}")
    # a class-conditional prior draws the asked class, or cycles through all classes
    label_list = ([classes.index(class_name)] * num if class_name is not None
                  else [i % len(classes) for i in range(num)] if classes else [])
    device = next(prior.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    starts = range(0, num, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="sample", unit="batch")
    for start in starts:
        count = min(batch_size, num - start)
        labels = torch.tensor(label_list[start:start + count], device=device) if classes else None
        chunks.append(prior.model.sample(count, labels=labels, temperature=temperature, top_k=top_k,
                                         generator=generator).cpu())
    indices = prior.layout.from_sequences(torch.cat(chunks))
    names = [f"{classes[label_list[i]]}/sample_{i:05d}.png" if classes else f"sample_{i:05d}.png" for i in range(num)]
    return indices, names


def generate_images(prior_path: str | os.PathLike, num: int, out_dir: str | os.PathLike, *,
                    temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                    tokenizer: str | os.PathLike | None = None, class_name: str | None = None,
                    batch_size: int = 16, device: str | torch.device = "cpu", progress: bool = False) -> list[Path]:
    """Sample ``num`` images from the prior at ``prior_path`` into ``out_dir``; return the PNG paths.

    ``tokens.npz`` in ``out_dir`` holds the sampled tokens; see the module docstring.
    """
    from gaussquant.decode import decode_tokens

    if num < 1 or batch_size < 1:
        raise ValueError(f"--num and --batch-size must be >= 1; got {num} and {batch_size}")
    if temperature <= 0 or (top_k is not None and top_k < 1):
        raise ValueError(f"--temperature must be > 0 and --top-k >= 1; got {temperature} and {top_k}")
    device = torch.device(device)
    out = check_output_path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write images into {str(out)!r}: it is a file, not a folder; choose another --out")
    prior = load_prior(prior_path, map_location=device)
    model = load_tokenizer_for(prior, tokenizer, device)  # before sampling: a wrong tokenizer wastes nothing
    indices, names = sample_tokens(prior, num, temperature=temperature, top_k=top_k, seed=seed,
                                   class_name=class_name, batch_size=batch_size, progress=progress)
    layout = prior.layout
    tokens_path = out / "tokens.npz"
    with TokenWriter(tokens_path, num_images=num, codebook_size=layout.codebook_size,
                     image_size=layout.image_size, model_fingerprint=layout.model_fingerprint) as writer:
        writer.write(indices, names)
        writer.close()
    paths = decode_tokens(model, tokens_path, out, batch_size=batch_size, progress=progress)
    log.info("generated %d images into %s (temperature %g, top-k %s, seed %d)", num, out, temperature, top_k, seed)
    return paths
