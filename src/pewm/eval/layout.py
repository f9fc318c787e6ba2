"""A box-layout guess of depth where nothing was seen: floor and ceiling planes, walls at one distance.

Indoor views are mostly floor, ceiling and walls. On the validation explore cuts (``docs/design.md``,
"Session 10"), the ground-truth depth of the pixels the history's map does not cover is explained
almost entirely by a box layout: the floor and ceiling planes plus one wall distance per image column
(with the true per-column distance: AbsRel 0.022, delta1 0.97). The wall distance is what must be
imagined; the planes are known from the history. :func:`layout_depth` takes the planes from the
history (:func:`room_planes`) and puts a wall at one fixed z-depth (``wall_m``) in every column: the
no-model guess the ``render-layout`` benchmark mode (:mod:`pewm.eval.baselines`) fills uncovered depth
with, so a model's imagined depth is measured against geometry anyone could guess.

World frames have z up (pewm's convention, :mod:`pewm.geometry.transforms`); imported recordings
whose up axis is unknown get no planes (:func:`room_planes` returns None) and a flat ``wall_m``.
"""

from __future__ import annotations

import numpy as np
import torch

from pewm.geometry import camera_rays, unproject_depth

MIN_ROOM_HEIGHT_M = 1.0
"""Floor and ceiling estimates closer than this are not a room (e.g. a history that never saw the
ceiling); :func:`room_planes` then returns None."""


def room_planes(history_depth, history_poses, K, percentile: float = 2.0,
                max_points: int = 200_000) -> tuple[float, float] | None:
    """``(floor_z, ceiling_z)`` in world metres: the ``percentile`` and ``100 - percentile``
    percentiles of the height of every valid history point (robust to a few stray points), or
    None when they are less than :data:`MIN_ROOM_HEIGHT_M` apart or there are no valid points.
    ``history_depth`` (T, h, w) metric z-depth, ``history_poses`` (T, 4, 4) camera-to-world,
    ``K`` (3, 3) at the depth's resolution."""
    d = torch.as_tensor(np.asarray(history_depth, np.float32))
    if d.ndim != 3:
        raise ValueError(f"room_planes: history_depth must have shape (T, h, w), got {tuple(d.shape)}")
    P = torch.as_tensor(np.asarray(history_poses, np.float32))
    if P.shape != (d.shape[0], 4, 4):
        raise ValueError(f"room_planes: {d.shape[0]} depth maps but poses of shape {tuple(P.shape)}")
    ok = (torch.isfinite(d) & (d > 0)).reshape(-1)
    if not bool(ok.any()):
        return None
    z = unproject_depth(torch.nan_to_num(d, nan=0.0, posinf=0.0), torch.as_tensor(np.asarray(K, np.float32)), P)
    z = z[..., 2].reshape(-1)[ok].numpy()
    if z.size > max_points:  # an even subsample: the percentiles barely move
        z = z[:: int(np.ceil(z.size / max_points))]
    floor_z, ceiling_z = np.percentile(z, [percentile, 100.0 - percentile])
    if ceiling_z - floor_z < MIN_ROOM_HEIGHT_M:
        return None
    return float(floor_z), float(ceiling_z)


def layout_depth(target_poses, K, height: int, width: int, planes: tuple[float, float] | None,
                 wall_m: float) -> np.ndarray:
    """``(T, height, width)`` float32 z-depth of a box room seen from ``target_poses`` (T, 4, 4):
    along every pixel's ray, the nearer of the floor or ceiling plane (``planes``: world heights)
    and a wall at z-depth ``wall_m``; ``wall_m`` everywhere without planes. ``K`` (3, 3) at
    ``height`` x ``width``."""
    if not np.isfinite(wall_m) or wall_m <= 0:
        raise ValueError(f"layout_depth: wall_m must be a positive number of metres, got {wall_m}")
    T = np.asarray(target_poses, np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise ValueError(f"layout_depth: target_poses must have shape (T, 4, 4), got {T.shape}")
    out = np.full((len(T), height, width), float(wall_m), np.float64)
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


__all__ = ["MIN_ROOM_HEIGHT_M", "layout_depth", "room_planes"]
