"""Exponential moving average of model weights (evaluation weights; saved as ema.safetensors).

Buffers (e.g. TDC multipliers) are copied, not averaged: they are controller state, not weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after every optimiser step.

    Args:
        model: the module to track (unwrapped, not DDP).
        decay: in (0, 1), e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._params = {name for name, _ in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if name in self._params and value.dtype.is_floating_point:
                shadow.lerp_(value.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        unexpected = set(state) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(
                f"EMA weights do not match the model: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        for name, value in state.items():
            self.shadow[name].copy_(value)
