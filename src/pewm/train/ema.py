"""Exponential moving average of the trained weights (**[gap]** in the paper; standard for
diffusion models). Only the parameters being trained are averaged; frozen ones are copied."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = d * ema + (1 - d) * param`` after every optimizer step, with
    ``d = min(decay, (1 + n) / (10 + n))`` when ``warmup`` (``n`` = updates so far), else ``decay``.

    ``ema.model`` is a full copy of the model (no gradients) used for samples and the final export.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        own = dict(self.model.named_parameters())
        self._ema = [own[n] for n in self._names]

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        src = dict(model.named_parameters())
        cur = [src[n].detach() for n in self._names]
        if self._ema:
            torch._foreach_mul_(self._ema, d)
            torch._foreach_add_(self._ema, cur, alpha=1.0 - d)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates}

    def load_state_dict(self, sd: dict) -> None:
        self.num_updates = int(sd["num_updates"])


__all__ = ["EMA"]
