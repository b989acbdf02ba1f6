"""A compact decoder-only transformer that models token grids: the prior a generator samples from.

A tokens file written by ``gaussquant encode`` holds, per image, L token positions (a conv net's h x w grid
read in raster order, or a ViT's L patches) with G indices in [0, K) each (docs/method.md section 2). The
prior factorises the probability of one image's tokens as

    p(tokens) = prod over positions t of  prod over groups g of  p(x[t, g] | x[< t, :], x[t, < g], class)

so G groups of K codewords are never flattened into one vocabulary of K^G symbols:

- **across positions** a causal transformer (GPT-2 style pre-LayerNorm blocks) reads, at step t, the start
  vector (a learned vector, or the class embedding when the prior is class-conditional) followed by the
  tokens of positions 0 .. t-1, each position entered as the *sum* of one embedding per group;
- **within a position** head g sees the trunk's output at t plus the sum of a second set of per-group
  embeddings of the groups < g already chosen at t, and predicts group g through a small per-group MLP.

Training is teacher-forced (every position and group in one pass); sampling runs position by position and,
within a position, group by group. No key/value cache: the grids of this library's models are short (tens to
a few hundred positions), so recomputing the prefix costs little and keeps the module short. Written by hand
(in the spirit of a minimal GPT) because no well-kept library ships a multi-group autoregressive prior.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class PriorConfig:
    """Everything needed to rebuild a :class:`TokenPrior` (stored in every checkpoint's config.json).

    Args:
        codebook_size: K, indices per group lie in [0, K).
        num_groups: G, indices per token position.
        seq_len: L, token positions per image (h * w, or the ViT's patch count).
        n_layer, n_head, d_model: transformer depth, attention heads and width (d_model % n_head == 0).
        num_classes: 0 for an unconditional prior, else the number of class labels it is conditioned on.
        seed: seeds the weight initialisation (a local generator; the global RNG is left untouched).
    """

    codebook_size: int
    num_groups: int
    seq_len: int
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    num_classes: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("codebook_size", "num_groups", "seq_len", "n_layer", "n_head", "d_model"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PriorConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ValueError(f"PriorConfig.codebook_size must be >= 2; got {self.codebook_size}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0; got {self.num_classes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PriorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown prior config keys {unknown}; this prior was written by a newer gaussquant")
        return cls(**data)


# size presets: (n_layer, n_head, d_model). tiny trains in a minute on 2 CPU cores; small is the quality default.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64},
    "small": {"n_layer": 4, "n_head": 4, "d_model": 128},
}


def prior_config(preset: str, *, codebook_size: int, num_groups: int, seq_len: int, num_classes: int = 0,
                 seed: int = 0) -> PriorConfig:
    """The :class:`PriorConfig` of a named size preset (``tiny`` or ``small``) for one token layout."""
    if preset not in PRESETS:
        raise ValueError(f"unknown prior preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PriorConfig(codebook_size=codebook_size, num_groups=num_groups, seq_len=seq_len,
                       num_classes=num_classes, seed=seed, **PRESETS[preset])


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, d)
        q, k, v = (y.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for y in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))  # (B, T, d)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TokenPrior(nn.Module):
    """p(tokens | class) over ``(B, L, G)`` index grids; see the module docstring for the factorisation."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        k, g, d = config.codebook_size, config.num_groups, config.d_model
        # Building modules draws from the global RNG; fork it so constructing a prior leaves it untouched,
        # then set every weight from a local generator seeded by config.seed.
        with torch.random.fork_rng(devices=[]):
            self.token_embedding = nn.Embedding(g * k, d)  # row g*K + index: group g's embedding, summed over g
            self.position_embedding = nn.Embedding(config.seq_len, d)
            self.start = nn.Embedding(max(config.num_classes, 1), d)  # class c's start vector (row 0 if none)
            self.blocks = nn.ModuleList(Block(d, config.n_head) for _ in range(config.n_layer))
            self.ln_f = nn.LayerNorm(d)
            self.group_embedding = nn.Embedding(g * k, d)  # within-position context for the heads
            self.head_ln = nn.LayerNorm(d)
            # one MLP per group, stored batched: (G, d, d) then (G, d, K)
            self.head_w1 = nn.Parameter(torch.empty(g, d, d))
            self.head_b1 = nn.Parameter(torch.zeros(g, d))
            self.head_w2 = nn.Parameter(torch.empty(g, d, k))
            self.head_b2 = nn.Parameter(torch.zeros(g, k))
        self.register_buffer("group_offsets", torch.arange(g) * k, persistent=False)  # (G,)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        gen = torch.Generator().manual_seed(self.config.seed)
        # GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 * n_layer)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias") or name.startswith("head_b"):
                p.zero_()
            elif p.dim() == 1:  # LayerNorm weights
                p.fill_(1.0)
            else:
                std = residual_std if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, indices: Tensor, labels: Tensor | None) -> None:
        cfg = self.config
        if indices.dim() != 3 or indices.shape[2] != cfg.num_groups or indices.shape[1] > cfg.seq_len:
            raise ValueError(f"indices must be (B, T<={cfg.seq_len}, {cfg.num_groups}); got {tuple(indices.shape)}")
        if cfg.num_classes and labels is None:
            raise ValueError(f"this prior is conditioned on {cfg.num_classes} classes: pass a label per image")
        if not cfg.num_classes and labels is not None:
            raise ValueError("this prior is unconditional (trained without class labels): pass no labels")

    def hidden(self, prefix: Tensor, labels: Tensor | None = None) -> Tensor:
        """Trunk outputs for positions 0 .. T given the tokens of positions 0 .. T-1.

        Args:
            prefix: ``(B, T, G)`` int64 indices in [0, K), T in [0, L-1].
            labels: ``(B,)`` int64 class labels for a class-conditional prior, else None.

        Returns:
            ``(B, T + 1, d_model)``: row t summarises the start vector and positions < t.
        """
        self._check(prefix, labels)
        b, t, _ = prefix.shape
        if t >= self.config.seq_len:
            raise ValueError(f"a prefix of {t} positions leaves nothing to predict (L = {self.config.seq_len})")
        cls = labels if labels is not None else torch.zeros(b, dtype=torch.long, device=prefix.device)
        start = self.start(cls).unsqueeze(1)  # (B, 1, d)
        tokens = self.token_embedding(prefix + self.group_offsets).sum(dim=2)  # (B, T, d)
        x = torch.cat([start, tokens], dim=1)  # (B, T+1, d)
        x = x + self.position_embedding(torch.arange(t + 1, device=prefix.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)  # (B, T+1, d)

    def head_logits(self, h: Tensor, context: Tensor, groups: slice = slice(None)) -> Tensor:
        """Logits of the groups ``groups`` from trunk output ``h`` ``(..., d)`` and their within-position
        context ``context`` ``(..., G', d)`` (the summed embeddings of the earlier groups); returns ``(..., G', K)``."""
        x = self.head_ln(h.unsqueeze(-2) + context)  # (..., G', d)
        x = F.gelu(torch.einsum("...gd,gde->...ge", x, self.head_w1[groups]) + self.head_b1[groups])
        return torch.einsum("...gd,gdk->...gk", x, self.head_w2[groups]) + self.head_b2[groups]  # (..., G', K)

    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Teacher-forced logits for every position and group.

        Args:
            indices: ``(B, L, G)`` int64 in [0, K) (a whole grid; positions in raster order).
            labels: ``(B,)`` class labels for a class-conditional prior.

        Returns:
            ``(B, L, G, K)`` logits; entry ``[b, t, g]`` predicts ``indices[b, t, g]``.
        """
        h = self.hidden(indices[:, :-1], labels)  # (B, L, d)
        emb = self.group_embedding(indices + self.group_offsets)  # (B, L, G, d)
        # (B, L, G, d): entry g is the sum over the groups < g (an exclusive cumsum; zeros for g = 0)
        context = torch.cat([torch.zeros_like(emb[:, :, :1]), torch.cumsum(emb[:, :, :-1], dim=2)], dim=2)
        return self.head_logits(h, context)

    def nll_bits(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Negative log-likelihood in bits of each image's tokens: ``(B,)`` (sum over positions and groups)."""
        logits = self(indices, labels)  # (B, L, G, K)
        nats = F.cross_entropy(logits.flatten(0, 2), indices.flatten(), reduction="none")  # (B*L*G,)
        return nats.view(indices.shape[0], -1).sum(dim=1) / math.log(2)

    @torch.no_grad()
    def sample(self, num: int, *, labels: Tensor | None = None, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``num`` token grids, position by position and group by group.

        Args:
            num: images to draw.
            labels: ``(num,)`` class labels for a class-conditional prior.
            temperature: > 0; logits are divided by it (1 samples the model's distribution).
            top_k: keep only the k most likely indices of each group before sampling (None: all K).
            generator: a ``torch.Generator`` on the prior's device, for reproducible draws.

        Returns:
            ``(num, L, G)`` int64 indices in [0, K).
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top-k must be >= 1; got {top_k}")
        cfg = self.config
        device = self.position_embedding.weight.device
        out = torch.zeros(num, cfg.seq_len, cfg.num_groups, dtype=torch.long, device=device)
        for t in range(cfg.seq_len):
            h = self.hidden(out[:, :t], labels)[:, -1]  # (num, d)
            context = torch.zeros(num, 1, cfg.d_model, device=device)  # (num, 1, d)
            for g in range(cfg.num_groups):
                logits = self.head_logits(h, context, slice(g, g + 1))[:, 0] / temperature  # (num, K)
                if top_k is not None and top_k < cfg.codebook_size:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (num, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                choice = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)[:, 0]  # (num,)
                out[:, t, g] = choice
                context = context + self.group_embedding(choice + g * cfg.codebook_size).unsqueeze(1)
        return out
