"""Revisit / novel classification of evaluated frames (the paper's Table 1 split).

A generated frame is a **revisit** when most of what it shows was already observed before the cut
point (the history/context the model was given), and **novel** otherwise. "Observed" uses the same
voxel idea as the training-clip sampler (:func:`pewm.data.clips._first_seen_per_pixel`): a pixel's
3D point (from ground-truth depth and pose) is observed when its voxel ``floor(p / voxel)`` was hit
by a point of some history frame. Unlike the sampler, voxels are keyed exactly (no hash
collisions) and depth beyond ``max_depth`` is ignored on both sides.
"""

from __future__ import annotations

import numpy as np
import torch

from pewm.geometry import unproject_depth, valid_depth

_KEY_BITS = 21
_KEY_OFF = 1 << (_KEY_BITS - 1)


def _check(depth, poses, K, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.asarray(depth.detach().cpu() if isinstance(depth, torch.Tensor) else depth, dtype=np.float32)
    P = np.asarray(poses.detach().cpu() if isinstance(poses, torch.Tensor) else poses, dtype=np.float64)
    Km = np.asarray(K.detach().cpu() if isinstance(K, torch.Tensor) else K, dtype=np.float64)
    if d.ndim != 3:
        raise ValueError(f"{what}_depth must have shape (T, h, w), got {d.shape}")
    if P.shape != (d.shape[0], 4, 4):
        raise ValueError(f"{what}_poses must have shape ({d.shape[0]}, 4, 4) to match {what}_depth, got {P.shape}")
    if Km.shape != (3, 3):
        raise ValueError(f"K{'' if what == 'target' else '_history'} must have shape (3, 3), got {Km.shape}")
    return d, P, Km


def _voxel_keys(depth: np.ndarray, poses: np.ndarray, K: np.ndarray, voxel: float, max_depth: float,
                stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact int64 voxel keys ``(T, n)`` of the stride-subsampled pixels and their validity mask.

    Subsampling keeps pixel ``(s*r, s*c)``; unprojecting the subsampled depth with ``K`` scaled by
    ``1/s`` in its first two rows gives exactly those pixels' points (OpenCV pixel centres).
    """
    d = depth[:, ::stride, ::stride]
    Ks = K.copy()
    Ks[:2] /= stride
    T = d.shape[0]
    dt = torch.from_numpy(np.ascontiguousarray(d))
    pts = unproject_depth(dt, torch.from_numpy(Ks).float(), torch.from_numpy(poses).float()).reshape(T, -1, 3)
    ok = valid_depth(dt, max_depth=max_depth).reshape(T, -1).numpy()
    with np.errstate(invalid="ignore"):
        v = np.floor(pts.double().numpy() / voxel)
    v = np.where(ok[..., None], v, 0.0)
    if np.abs(v).max(initial=0.0) >= _KEY_OFF:
        raise ValueError(f"points lie more than {_KEY_OFF * voxel:.0f} m from the origin; voxel keys would overflow")
    v = v.astype(np.int64) + _KEY_OFF
    keys = (v[..., 0] << (2 * _KEY_BITS)) | (v[..., 1] << _KEY_BITS) | v[..., 2]
    return keys, ok


def observed_fraction(target_depth, target_poses, K, history_depth, history_poses, K_history,
                      voxel: float = 0.25, max_depth: float = 10.0, stride: int = 2,
                      history_stride: int | None = None) -> np.ndarray:
    """Share of each target frame's view already observed by the history, ``(T,)`` in [0, 1].

    For every target frame, the pixels on a ``stride`` grid (rows and columns ``0, stride, ...``)
    with valid ground-truth depth (finite, > 0, <= ``max_depth``) are unprojected to world points
    (:func:`pewm.geometry.unproject_depth`: z-depth, camera-to-world poses, OpenCV pixel centres);
    the result is the fraction of them whose voxel (edge ``voxel`` m) contains a point of some
    history frame (subsampled with ``history_stride``, default ``stride``; same depth validity).
    Target frames without any valid pixel give NaN. Target and history may differ in resolution
    (``K`` vs ``K_history``).
    """
    if voxel <= 0 or max_depth <= 0:
        raise ValueError(f"voxel and max_depth must be > 0, got {voxel}, {max_depth}")
    hs = stride if history_stride is None else history_stride
    if int(stride) < 1 or int(hs) < 1:
        raise ValueError(f"stride and history_stride must be >= 1, got {stride}, {hs}")
    td, tp, tK = _check(target_depth, target_poses, K, "target")
    hd, hp, hK = _check(history_depth, history_poses, K_history, "history")
    tkeys, tok = _voxel_keys(td, tp, tK, voxel, max_depth, int(stride))
    if hd.shape[0]:
        hkeys, hok = _voxel_keys(hd, hp, hK, voxel, max_depth, int(hs))
        seen = np.unique(hkeys[hok])
    else:
        seen = np.zeros(0, np.int64)
    hit = np.isin(tkeys, seen) & tok
    n = tok.sum(axis=1)
    return np.where(n > 0, hit.sum(axis=1) / np.maximum(n, 1), np.nan)


def classify(fraction, threshold: float = 0.5) -> np.ndarray:
    """``(T,)`` bool, True = **revisit**: ``fraction >= threshold`` (NaN, no valid depth -> novel)."""
    f = np.asarray(fraction, dtype=np.float64)
    if f.ndim != 1:
        raise ValueError(f"fraction must have shape (T,), got {f.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(f, nan=-1.0) >= threshold
