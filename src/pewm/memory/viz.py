"""Pictures of a map: a top-down image of a :class:`VoxelMap` / :class:`PersistentMap`."""

from __future__ import annotations

import math

import numpy as np
import torch

from pewm.memory.voxel_map import VoxelMap


def _height_colormap(t: torch.Tensor) -> torch.Tensor:
    """A small perceptual-ish ramp (dark blue -> teal -> yellow) for t in [0, 1]."""
    stops = torch.tensor([[0.07, 0.05, 0.35], [0.1, 0.45, 0.6], [0.3, 0.75, 0.45], [0.98, 0.9, 0.2]])
    x = t.clamp(0, 1) * (len(stops) - 1)
    i = x.floor().long().clamp_max(len(stops) - 2)
    f = (x - i)[:, None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def map_top_down_image(
    voxel_map,
    px_per_m: float = 20.0,
    mode: str = "color",
    z_max: float | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    background: int = 255,
) -> np.ndarray:
    """The map seen from above: uint8 ``(H, W, 3)``, world +x to the right and **+y up** in the image.

    Each pixel shows the highest voxel (below ``z_max``, e.g. to cut away ceilings) in its column:
    its colour (``mode="color"``) or its height (``mode="height"``). ``bounds`` ``(xmin, ymin, xmax,
    ymax)`` defaults to the map's extent. A :class:`PersistentMap` is drawn from its fine surface map.
    """
    m: VoxelMap = getattr(voxel_map, "surface", None) or getattr(voxel_map, "features", None) or voxel_map
    if len(m) == 0:
        return np.full((1, 1, 3), background, dtype=np.uint8)
    p = m.points().float().cpu()
    keep = torch.ones(p.shape[0], dtype=torch.bool) if z_max is None else p[:, 2] <= z_max
    p = p[keep]
    if mode == "color" and "color" in m.attributes:
        col = m.get("color").float().cpu()[keep].clamp(0, 1)
    elif mode in ("color", "height"):
        z = p[:, 2]
        col = _height_colormap((z - z.min()) / (z.max() - z.min()).clamp_min(1e-6))
    else:
        raise ValueError(f"mode must be 'color' or 'height', got {mode!r}")
    if bounds is None:
        xmin, ymin = p[:, 0].min().item(), p[:, 1].min().item()
        xmax, ymax = p[:, 0].max().item(), p[:, 1].max().item()
    else:
        xmin, ymin, xmax, ymax = bounds
    W = max(1, int(math.ceil((xmax - xmin) * px_per_m)) + 1)
    H = max(1, int(math.ceil((ymax - ymin) * px_per_m)) + 1)
    col_i = ((p[:, 0] - xmin) * px_per_m).floor().long()
    row_i = ((ymax - p[:, 1]) * px_per_m).floor().long()
    z = p[:, 2]
    zq = ((z - z.min()) * 1e4).long() if z.numel() else z.long()
    key = (zq << 32) | torch.arange(z.numel())

    def splat(offsets) -> torch.Tensor:
        """Highest voxel per pixel, each voxel covering the given pixel offsets around its own pixel."""
        best = torch.full((H * W,), -1, dtype=torch.int64)
        for dr, dc in offsets:
            r, c = row_i + dr, col_i + dc
            ok = (c >= 0) & (c < W) & (r >= 0) & (r < H)
            best.scatter_reduce_(0, r[ok] * W + c[ok], key[ok], "amax")
        return best

    # each voxel covers its own footprint (so a 5 cm map at 40 px/m has no pinholes), and pixels still
    # empty take their highest neighbour within one pixel (sparse far-away floor samples)
    side = max(1, int(round(float(min(m.config.voxel_size[:2])) * px_per_m)))
    best = splat([(dr, dc) for dr in range(side) for dc in range(side)])
    near = splat([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
    best = torch.where(best >= 0, best, near)
    has = best >= 0
    img = torch.full((H * W, 3), float(background) / 255.0)
    img[has] = col[best[has] & 0xFFFFFFFF]
    return (img.view(H, W, 3) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
