"""A trained prior on disk: what its config.json holds and how it is loaded back, strictly.

``gaussquant prior train --out DIR`` writes training checkpoints with the trainer's atomic writer
(``gaussquant.train.checkpoint``): ``DIR/checkpoints/step_XXXXXXXX/{config.json, model.safetensors,
training_state.pt}`` and ``DIR/checkpoints/latest``. The config.json of a prior holds:

- ``format``: ``"gaussquant-prior"``, ``version``; ``step``;
- ``prior``: the :class:`~gaussquant.prior.model.PriorConfig`;
- ``tokens``: the :class:`~gaussquant.prior.data.TokenLayout` it was trained on (K, G, grid, layout, image
  size and the tokenizer's fingerprint);
- ``class_names``: the class folders of a class-conditional prior (empty otherwise);
- ``tokenizer``: the path of the tokenizer that wrote the tokens (absolute, as given to ``prior train
  --tokenizer``), or null; ``generate`` decodes with it after checking its fingerprint;
- ``train``: the training settings (preset, steps, batch size, learning rate, seed, tokens file).

:func:`load_prior` accepts the run folder (it loads the checkpoint ``latest`` names, or the newest one that
loads) or one step folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gaussquant.pretrained import load_state_strict
from gaussquant.prior.data import TokenLayout
from gaussquant.prior.model import PriorConfig, TokenPrior

FORMAT = "gaussquant-prior"
VERSION = 1


@dataclass
class LoadedPrior:
    """A prior and what it was trained on."""

    model: TokenPrior
    layout: TokenLayout
    class_names: list[str]
    tokenizer: str | None
    step: int
    source: Path


def prior_meta(config: PriorConfig, layout: TokenLayout, *, class_names: list[str], tokenizer: str | None,
               step: int, train: dict[str, Any]) -> dict[str, Any]:
    """The config.json content of a prior checkpoint."""
    return {"format": FORMAT, "version": VERSION, "step": step, "prior": config.to_dict(),
            "tokens": layout.to_dict(), "class_names": list(class_names), "tokenizer": tokenizer, "train": train}


def read_prior_meta(meta: dict[str, Any], source: str) -> tuple[PriorConfig, TokenLayout]:
    """Check a config.json is a prior's and parse its model config and token layout."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{source} is not a gaussquant prior (format {meta.get('format')!r}); pass the folder "
                         "`gaussquant prior train --out` wrote")
    if int(meta.get("version", -1)) != VERSION:
        raise ValueError(f"{source} is prior format version {meta.get('version')}; this library reads {VERSION}")
    try:
        return PriorConfig.from_dict(meta["prior"]), TokenLayout.from_dict(meta["tokens"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{source} is an incomplete prior config ({err!r} missing or malformed)") from None


def load_prior(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedPrior:
    """Load a prior from its run folder (latest loadable checkpoint) or a step folder, in eval mode."""
    from gaussquant.train.checkpoint import find_resume_checkpoint, load_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prior not found: {path} (train one with `gaussquant prior train`)")
    if (path / "config.json").is_file():
        step_dir = path
        meta, weights, _ = load_checkpoint(path, map_location="cpu")
    else:
        found = find_resume_checkpoint(path / "checkpoints", map_location="cpu")
        if found is None:
            raise FileNotFoundError(f"{path} holds no prior checkpoint; pass the folder `gaussquant prior train "
                                    "--out` wrote (it has a checkpoints/ sub-folder)")
        step_dir, meta, weights, _ = found
    config, layout = read_prior_meta(meta, str(step_dir / "config.json"))
    model = TokenPrior(config)
    load_state_strict(model, weights["model"], str(step_dir / "model.safetensors"))
    return LoadedPrior(model=model.to(map_location).eval(), layout=layout,
                       class_names=list(meta.get("class_names") or []), tokenizer=meta.get("tokenizer"),
                       step=int(meta.get("step", 0)), source=step_dir)
