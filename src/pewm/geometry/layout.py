"""Box-layout geometry of indoor views: the floor and ceiling planes, and walls at a given distance.

Indoor views are mostly floor, ceiling and walls. Given the heights of the floor and the ceiling (in
a world frame with z up, pewm's convention), :func:`layout_depth` gives the z-depth at which every
pixel's ray meets the nearer of the two planes, capped by a wall at a given z-depth (one number, or
one per view and image column). :func:`planes_from_heights` finds the two planes among the heights
of observed surface points and refuses what does not look like a room, so that a recording whose
world frame is not z-up gets no planes instead of wrong ones. :func:`column_wall_distances` reads one
wall distance per column from a depth map, and :func:`box_depth` turns a depth map into the box it
suggests. Used by the ``render-layout`` benchmark baseline (:mod:`pewm.eval.layout`), the
``voxel-render`` reader's ``layout_prior`` input (:mod:`pewm.model.readers.voxel_render`) and a
rollout memory's ``imagined_depth="box"`` fusion (:mod:`pewm.model.rollout_memory`). A wall at one
z-depth per column is exact for a level camera (pewm's simulator) and approximate otherwise.
"""

from __future__ import annotations

import warnings

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


def column_wall_distances(depth, plane_depth, margin: float = 0.9, fallback: float | None = None) -> np.ndarray:
    """``(T, w)`` per-column wall distances read from a depth stack: the median depth of the column's
    pixels nearer than ``margin`` times the plane depth there (walls, furniture). Columns without such
    pixels get ``fallback`` metres, or the frame's farthest plane depth when ``fallback`` is None.
    ``depth`` and ``plane_depth`` (T, h, w) metres (invalid depth: NaN, inf or <= 0, is ignored).

    Given the ground truth it is :func:`pewm.eval.layout.oracle_wall_distances`; given a model's imagined depth it
    turns that depth into a box room (:func:`layout_depth`, :func:`box_depth`): planar floor and
    ceiling, one wall distance per column, no speckle."""
    g = np.asarray(depth, np.float64)
    p = np.asarray(plane_depth, np.float64)
    if g.ndim != 3 or g.shape != p.shape:
        raise ValueError(f"column_wall_distances: need two (T, h, w) depth stacks, got {g.shape} and {p.shape}")
    if fallback is not None and not (np.isfinite(fallback) and fallback > 0):
        raise ValueError(f"column_wall_distances: fallback must be a positive number of metres, got {fallback}")
    near = np.isfinite(g) & (g > 0) & (g < margin * p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        med = np.nanmedian(np.where(near, g, np.nan), axis=1)
        far = np.nanmax(np.where(np.isfinite(p), p, np.nan).reshape(len(p), -1), axis=1)
    if fallback is None:
        far = np.where(np.isfinite(far), far, 1e3)
    else:
        far = np.full(len(p), float(fallback))
    return np.where(np.isfinite(med), med, far[:, None])


def box_depth(depth, poses, K, planes: tuple[float, float] | None, fallback: float = 2.0) -> np.ndarray:
    """``(T, h, w)`` float32: the depth stack ``depth`` seen as a box room from ``poses`` (T, 4, 4) with
    intrinsics ``K``: the floor and ceiling ``planes`` (world heights) and, per column, the wall at
    :func:`column_wall_distances` of ``depth`` (``fallback`` metres where the column shows none; a
    large fallback puts no wall there). Without ``planes`` every pixel is its column's wall.
    Imagined depth made into walls and floor: one distance per column instead of per-pixel noise, so
    fusing it leaves surfaces, not radial streaks (``MemoryBuildConfig.imagined_depth``)."""
    d = np.asarray(depth, np.float64)
    if d.ndim != 3:
        raise ValueError(f"box_depth: depth must have shape (T, h, w), got {d.shape}")
    _, h, w = d.shape
    plane = layout_depth(poses, K, h, w, planes, 1e3)
    return layout_depth(poses, K, h, w, planes, column_wall_distances(d, plane, fallback=fallback))


__all__ = ["MIN_ROOM_HEIGHT_M", "PLANE_SUPPORT", "box_depth", "column_wall_distances", "layout_depth", "planes_from_heights"]
