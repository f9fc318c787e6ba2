"""Box-layout geometry of indoor views: the floor and ceiling planes, and walls at a given distance.

Indoor views are mostly floor, ceiling and walls. Given the heights of the floor and the ceiling (in
a world frame with z up, pewm's convention), :func:`layout_depth` gives the z-depth at which every
pixel's ray meets the nearer of the two planes, capped by a wall at a given z-depth (one number, or
one per view and image column). :func:`planes_from_heights` finds the two planes among the heights
of observed surface points and refuses what does not look like a room, so that a recording whose
world frame is not z-up gets no planes instead of wrong ones. Used by the ``render-layout``
benchmark baseline (:mod:`pewm.eval.layout`) and the ``voxel-render`` reader's ``layout_prior``
input (:mod:`pewm.model.readers.voxel_render`).
"""

from __future__ import annotations

import numpy as np

from pewm.geometry.projection import camera_rays

MIN_ROOM_HEIGHT_M = 1.0
"""Floor and ceiling estimates closer than this are not a room (e.g. a history that never saw the
ceiling): :func:`planes_from_heights` returns None."""

PLANE_SUPPORT = 0.02
"""The share of points that must lie within ``tol`` of each plane (a real floor or ceiling is a
dense slab of equal heights; the extremes of a tilted world frame are not)."""


def planes_from_heights(z, percentile: float = 2.0, tol: float = 0.05) -> tuple[float, float] | None:
    """``(floor_z, ceiling_z)``: the ``percentile`` and ``100 - percentile`` percentiles of the
    heights ``z`` of observed surface points (robust to a few stray points), or None when they are
    less than :data:`MIN_ROOM_HEIGHT_M` apart, when fewer than :data:`PLANE_SUPPORT` of the points
    lie within ``tol`` metres of either plane, or when there are no finite heights."""
    z = np.asarray(z, np.float64).reshape(-1)
    z = z[np.isfinite(z)]
    if z.size == 0:
        return None
    floor_z, ceiling_z = np.percentile(z, [percentile, 100.0 - percentile])
    if ceiling_z - floor_z < MIN_ROOM_HEIGHT_M:
        return None
    for plane in (floor_z, ceiling_z):
        if np.mean(np.abs(z - plane) <= tol) < PLANE_SUPPORT:
            return None
    return float(floor_z), float(ceiling_z)


def layout_depth(target_poses, K, height: int, width: int, planes: tuple[float, float] | None,
                 wall_m) -> np.ndarray:
    """``(T, height, width)`` float32 z-depth of a box room seen from ``target_poses`` (T, 4, 4):
    along every pixel's ray, the nearer of the floor or ceiling plane (``planes``: world heights)
    and a wall at z-depth ``wall_m`` (metres: one number, or one per view and column, shape
    ``(T, width)``); the wall everywhere without planes. ``K`` (3, 3) at ``height`` x ``width``."""
    import torch

    wall = np.asarray(wall_m, np.float64)
    if not (np.all(np.isfinite(wall)) and np.all(wall > 0)):
        raise ValueError(f"layout_depth: wall_m must be positive numbers of metres, got {wall_m}")
    T = np.asarray(target_poses, np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise ValueError(f"layout_depth: target_poses must have shape (T, 4, 4), got {T.shape}")
    if wall.ndim == 2:
        if wall.shape != (len(T), width):
            raise ValueError(f"layout_depth: per-column wall_m must have shape ({len(T)}, {width}), got {wall.shape}")
        wall = wall[:, None, :]
    elif wall.ndim != 0:
        raise ValueError(f"layout_depth: wall_m must be a number or (views, width), got shape {wall.shape}")
    out = np.broadcast_to(wall, (len(T), height, width)).astype(np.float64)
    if planes is None:
        return out.astype(np.float32)
    floor_z, ceiling_z = planes
    rays = camera_rays(torch.as_tensor(np.asarray(K, np.float64)), height, width, dtype=torch.float64).numpy()
    # world-z component of each ray (unit camera z): the height gained per metre of z-depth
    up = np.einsum("tj,hwj->thw", T[:, 2, :3], rays)
    cam_z = T[:, 2, 3][:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(up < -1e-9, (floor_z - cam_z) / up, np.inf)
        t_ceiling = np.where(up > 1e-9, (ceiling_z - cam_z) / up, np.inf)
    t = np.minimum(t_floor, t_ceiling)
    t = np.where(t > 0, t, np.inf)  # a camera outside the slab sees no plane in front of it
    return np.minimum(out, t).astype(np.float32)


__all__ = ["MIN_ROOM_HEIGHT_M", "PLANE_SUPPORT", "layout_depth", "planes_from_heights"]
