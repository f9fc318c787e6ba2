"""Normalisation of the RGB-D channels the denoiser sees (§3.2, "depth" — the paper leaves the
depth normalisation open, [gap]; this is our choice).

Depth (metres) is mapped to ``[-1, 1]`` by its logarithm between ``d_min`` and ``d_max``::

    d_norm = 2 * clamp(log(d / d_min) / log(d_max / d_min), 0, 1) - 1
    d      = d_min * (d_max / d_min) ** ((d_norm + 1) / 2)

Log depth gives near surfaces (where errors are visible and where the map is unprojected from)
as much resolution as far ones in relative terms. The map is exact inside ``[d_min, d_max]``;
outside it clamps. Invalid depth (``0`` = no measurement, NaN, inf, negative) is mapped to ``+1``
(``d_max``, "far"), so that missing sky/background reads as far away rather than touching the lens.

RGB in ``[0, 1]`` is mapped linearly to ``[-1, 1]``.
"""

from __future__ import annotations

import math

import torch


def normalize_depth(depth: torch.Tensor, d_min: float, d_max: float) -> torch.Tensor:
    """Metric z-depth -> ``[-1, 1]`` (log scale). Invalid depth -> ``+1``."""
    if not 0 < d_min < d_max:
        raise ValueError(f"normalize_depth: need 0 < d_min < d_max, got d_min={d_min}, d_max={d_max}")
    depth = depth if depth.is_floating_point() else depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    safe = torch.where(valid, depth, torch.full_like(depth, d_max))
    u = torch.log(safe / d_min) / math.log(d_max / d_min)
    return 2.0 * u.clamp(0.0, 1.0) - 1.0


def denormalize_depth(d_norm: torch.Tensor, d_min: float, d_max: float) -> torch.Tensor:
    """``[-1, 1]`` -> metric z-depth in ``[d_min, d_max]`` (inputs outside ``[-1, 1]`` are clamped)."""
    if not 0 < d_min < d_max:
        raise ValueError(f"denormalize_depth: need 0 < d_min < d_max, got d_min={d_min}, d_max={d_max}")
    u = (d_norm.clamp(-1.0, 1.0) + 1.0) / 2.0
    return d_min * torch.exp(u * math.log(d_max / d_min))


def normalize_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in ``[0, 1]`` -> ``[-1, 1]``."""
    return rgb * 2.0 - 1.0


def denormalize_rgb(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> RGB in ``[0, 1]`` (clamped)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
