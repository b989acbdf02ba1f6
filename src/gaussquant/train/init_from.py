"""``gaussquant train --init-from MODEL``: start a new run from a trained model's weights (issue 13, item 3).

Weights only: the optimiser, scheduler, step, data position and RNG start fresh, as for any new run. The
bottleneck may change, e.g. a vanilla Gaussian VAE fine-tuned with TDC, or a Gaussian VAE fine-tuned as GQ
with a rate target. Which tensors are taken:

- every tensor of the new model whose name and shape are in the source model is loaded, except
- bottleneck tensors when the bottleneck kind changes (a new kind starts from its own initialisation),
  except the TDC multipliers when both bottlenecks have a TDC controller (a TDC VAE fine-tuned as GQ, or at a
  nearby target, keeps its controller state instead of restarting it from 1 and losing its rate), and
- the GQ codebook and its fingerprint (they are fixed by the new config's codebook spec, never copied).

The mapping (loaded / new / shape changed / not used) is logged per module, and a source that shares no
tensor with the new model, or has another architecture, is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

# tensors defined by the bottleneck config itself (a codebook spec), never taken from another model
_CONFIG_DEFINED = ("bottleneck.codebook", "bottleneck.codebook_sha256")


@dataclass
class InitReport:
    """What :func:`init_from_pretrained` did: tensor names by outcome (sorted)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        """One line of totals, then one line per top-level module (encoder, bottleneck, decoder)."""
        lines = [f"init-from {self.source}: loaded {len(self.loaded)} tensors, new {len(self.new)}, "
                 f"shape changed {len(self.reshaped)} (kept new), not used {len(self.unused)}"]
        groups = sorted({name.split(".")[0] for name in self.loaded + self.new + self.reshaped + self.unused})
        for group in groups:
            parts = []
            for label, names in (("loaded", self.loaded), ("new", self.new), ("shape changed", self.reshaped),
                                 ("not used", self.unused)):
                mine = [n for n in names if n.split(".")[0] == group]
                if mine:
                    example = "" if label == "loaded" else f" ({', '.join(mine[:3])}{', ...' if len(mine) > 3 else ''})"
                    parts.append(f"{len(mine)} {label}{example}")
            lines.append(f"  {group}: " + "; ".join(parts))
        return "\n".join(lines)


def init_from_pretrained(model: nn.Module, source: str | os.PathLike) -> InitReport:
    """Copy the matching weights of the model saved at ``source`` into ``model`` (in place).

    Args:
        model: the new run's Autoencoder (built from its own config).
        source: anything ``Autoencoder.from_pretrained`` reads (save dir, checkpoint step dir, run dir, repo id).

    Returns:
        The :class:`InitReport`. Raises a ValueError for another architecture or when nothing matches.
    """
    from gaussquant.models.autoencoder import Autoencoder

    src = Autoencoder.from_pretrained(source)
    mine, theirs = model.config, src.config
    if theirs.model.arch != mine.model.arch:
        raise ValueError(f"--init-from {os.fspath(source)!r} is a {theirs.model.arch} model, but this run trains "
                         f"{mine.model.arch}; initialise from a model of the same architecture")
    same_kind = theirs.bottleneck.kind == mine.bottleneck.kind
    both_tdc = None not in (getattr(mine.bottleneck, "target_bits", None), getattr(theirs.bottleneck, "target_bits", None))
    own, other = model.state_dict(), src.state_dict()
    report = InitReport(source=os.fspath(source))

    def usable(name: str) -> bool:
        if name in _CONFIG_DEFINED:
            return False
        if name.startswith("bottleneck.rate_controller."):
            return same_kind or both_tdc
        return same_kind or not name.startswith("bottleneck.")

    for name, tensor in own.items():
        if name not in other or not usable(name):
            report.new.append(name)
        elif other[name].shape != tensor.shape:
            report.reshaped.append(name)
        else:
            report.loaded.append(name)
    report.unused = sorted(n for n in other if n not in own or not usable(n))
    if not report.loaded:
        raise ValueError(f"--init-from {os.fspath(source)!r} shares no tensor with this model; check the "
                         "architecture and the bottleneck's channels")
    with torch.no_grad():
        for name in report.loaded:
            own[name].copy_(other[name].to(own[name].device))
    for names in (report.loaded, report.new, report.reshaped):
        names.sort()
    return report
