"""Held-out negative log-likelihood of a prior: bits per token, per index, per pixel, and against the rate.

Protocol: every image of the tokens file is scored once (none dropped), teacher-forced, in float64 running
sums. ``bits_per_token`` is the NLL of one token position (all G groups), ``bits_per_index`` of one group's
index, ``bits_per_pixel`` the NLL of an image over its H x W pixels. The rate is G * log2 K bits per token
(docs/method.md section 2); ``fraction_of_rate`` = bits_per_token / rate: 1 means the prior learned nothing
beyond a uniform distribution over the codebook, lower means the tokens are more predictable.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from gaussquant.prior.data import TokenLayout, class_labels
from gaussquant.prior.store import LoadedPrior
from gaussquant.tokens import load_tokens


@torch.no_grad()
def evaluate_prior(prior: LoadedPrior, tokens_path: str | os.PathLike, *, batch_size: int = 64) -> dict[str, Any]:
    """Score every image of ``tokens_path`` under ``prior``; returns the numbers of the module docstring
    plus ``num_images``, ``tokens_per_image``, ``rate_bits_per_token`` and the protocol in words."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {batch_size}")
    tokens = load_tokens(tokens_path)
    layout = prior.layout
    layout.check_same(TokenLayout.of(tokens), str(tokens_path))
    sequences = layout.to_sequences(tokens.indices)  # (N, L, G)
    labels = class_labels(tokens.file_names, prior.class_names) if prior.class_names else None
    model = prior.model
    device = next(model.parameters()).device
    total_bits = torch.zeros((), dtype=torch.float64)
    for start in range(0, tokens.num_images, batch_size):
        batch = sequences[start:start + batch_size].to(device)
        batch_labels = labels[start:start + batch_size].to(device) if labels is not None else None
        total_bits += model.nll_bits(batch, batch_labels).double().sum().cpu()
    n = tokens.num_images
    bits_per_image = float(total_bits) / n
    bits_per_token = bits_per_image / layout.seq_len
    return {
        "num_images": n,
        "tokens_per_image": layout.seq_len,
        "bits_per_token": bits_per_token,
        "bits_per_index": bits_per_token / layout.num_groups,
        "bits_per_pixel": bits_per_image / layout.pixels,
        "rate_bits_per_token": layout.bits_per_token,
        "fraction_of_rate": bits_per_token / layout.bits_per_token,
        "protocol": f"teacher-forced NLL over all {n} images of {tokens_path}, {layout.seq_len} positions x "
                    f"{layout.num_groups} groups of K={layout.codebook_size}, prior step {prior.step}",
    }
