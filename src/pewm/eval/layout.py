"""A box-layout guess of depth where nothing was seen: floor and ceiling planes, walls at one distance.

Indoor views are mostly floor, ceiling and walls. On the validation explore cuts (``docs/design.md``,
"Session 10"), the ground-truth depth of the pixels the history's map does not cover is explained
almost entirely by a box layout: the floor and ceiling planes plus one wall distance per image column
(with the true per-column distance: AbsRel 0.022, delta1 0.97). The wall distance is what must be
imagined; the planes are known from the history. :func:`~pewm.geometry.layout.layout_depth` takes
the planes from the history (:func:`room_planes`) and puts a wall at one fixed z-depth (``wall_m``) in every column: the
no-model guess the ``render-layout`` benchmark mode (:mod:`pewm.eval.baselines`) fills uncovered depth
with, so a model's imagined depth is measured against geometry anyone could guess.

World frames have z up (pewm's convention, :mod:`pewm.geometry.transforms`); imported recordings
whose up axis is unknown get no planes (:func:`room_planes` returns None) and a flat ``wall_m``.
"""

from __future__ import annotations

import numpy as np
import torch

from pewm.geometry import unproject_depth
from pewm.geometry.layout import MIN_ROOM_HEIGHT_M, column_wall_distances, layout_depth, planes_from_heights


def room_planes(history_depth, history_poses, K, percentile: float = 2.0,
                max_points: int = 200_000) -> tuple[float, float] | None:
    """``(floor_z, ceiling_z)`` in world metres: the ``percentile`` and ``100 - percentile``
    percentiles of the height of every valid history point (robust to a few stray points), or
    None when they do not look like a room (less than :data:`MIN_ROOM_HEIGHT_M` apart, too few
    points on them) or there are no valid points.
    ``history_depth`` (T, h, w) metric z-depth, ``history_poses`` (T, 4, 4) camera-to-world,
    ``K`` (3, 3) at the depth's resolution (:func:`pewm.geometry.layout.planes_from_heights`)."""
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
    return planes_from_heights(z, percentile)


def oracle_wall_distances(true_depth, plane_depth, margin: float = 0.9) -> np.ndarray:
    """``(T, w)`` per-column wall distances read from the **ground truth** (a diagnostic upper bound for
    the layout family, never a baseline): :func:`column_wall_distances` of ``true_depth``; columns
    without wall pixels get the farthest plane depth of the frame."""
    g = np.asarray(true_depth)
    if g.ndim != 3 or g.shape != np.shape(plane_depth):
        raise ValueError(f"oracle_wall_distances: need two (T, h, w) depth stacks, got {g.shape} and {np.shape(plane_depth)}")
    return column_wall_distances(true_depth, plane_depth, margin)


__all__ = ["MIN_ROOM_HEIGHT_M", "column_wall_distances", "layout_depth", "oracle_wall_distances", "room_planes"]  # (re-exported from geometry)
