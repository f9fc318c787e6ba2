"""Reductions: how per-point values are pooled into a voxel (within a batch, then with the stored value)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


def _fill_value(kind: str, dtype: torch.dtype) -> float | int:
    if kind == "max":
        return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min
    if kind == "min":
        return math.inf if dtype.is_floating_point else torch.iinfo(dtype).max
    return 0


@dataclass(frozen=True)
class Reduction:
    """A per-voxel pooling rule.

    ``reduce(values (N, C), inv (N,), M, order (N,)) -> buf (M, C + extra)`` pools the points of one
    ``integrate`` call into its ``M`` distinct voxels; ``combine(stored, buf)`` merges that with the
    stored rows; ``read(stored, empty) -> (V, C)`` gives the user-facing value. ``init`` is the
    fill value of a never-updated row (in storage dtype); ``extra_channels`` are hidden bookkeeping
    channels (``mean`` keeps a weight).
    """

    name: str
    reduce: Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    read: Callable[[torch.Tensor, float], torch.Tensor]
    init: Callable[[torch.dtype], float | int]
    extra_channels: int = 0


def _scatter(kind: str) -> Reduction:
    op = {"max": "amax", "min": "amin"}[kind]
    both = torch.maximum if kind == "max" else torch.minimum

    def reduce(vals, inv, M, order):
        buf = torch.full((M, vals.shape[1]), _fill_value(kind, vals.dtype), dtype=vals.dtype, device=vals.device)
        return buf.scatter_reduce_(0, inv[:, None].expand_as(vals), vals, op, include_self=True)

    def read(stored, empty):
        return torch.where(stored == _fill_value(kind, stored.dtype), torch.as_tensor(empty, dtype=stored.dtype), stored)

    return Reduction(kind, reduce, both, read, lambda dt: _fill_value(kind, dt))


def _sum_reduce(vals, inv, M, order):
    return torch.zeros((M, vals.shape[1]), dtype=vals.dtype, device=vals.device).index_add_(0, inv, vals)


def _mean_reduce(vals, inv, M, order):
    w = torch.ones((vals.shape[0], 1), dtype=vals.dtype, device=vals.device)
    return _sum_reduce(torch.cat([vals, w], dim=1), inv, M, order)


def _mean_read(stored, empty):
    s, w = stored[:, :-1], stored[:, -1:]
    out = s / w.clamp_min(1e-12)
    return torch.where(w > 0, out, torch.as_tensor(empty, dtype=out.dtype))


def _last_reduce(vals, inv, M, order):
    winner = torch.full((M,), -1, dtype=torch.int64, device=vals.device)
    winner.scatter_reduce_(0, inv, order, "amax", include_self=True)
    sel = order == winner[inv]
    buf = torch.zeros((M, vals.shape[1]), dtype=vals.dtype, device=vals.device)
    buf[inv[sel]] = vals[sel]
    return buf


REDUCTIONS: dict[str, Reduction] = {
    "max": _scatter("max"),
    "min": _scatter("min"),
    "sum": Reduction("sum", _sum_reduce, torch.add, lambda s, e: s, lambda dt: 0),
    # stored as (running sum, weight); read divides; exact up to float summation order
    "mean": Reduction("mean", _mean_reduce, torch.add, _mean_read, lambda dt: 0, extra_channels=1),
    # value of the most recent point: a later integrate() call wins, within a call the later frame
    "last": Reduction("last", _last_reduce, lambda old, new: new, lambda s, e: s, lambda dt: 0),
}

#: the built-in reductions as defined here (``VoxelMap``'s CPU fast path applies only to these, not to
#: ones replaced with ``register_reduction(..., overwrite=True)``)
_BUILTIN = dict(REDUCTIONS)


def register_reduction(reduction: Reduction, overwrite: bool = False) -> None:
    """Add a reduction to :data:`REDUCTIONS` so attributes can name it."""
    if reduction.name in REDUCTIONS and not overwrite:
        raise ValueError(f"reduction {reduction.name!r} already registered")
    REDUCTIONS[reduction.name] = reduction

