"""Voxel keys (21 bits per axis packed into an int64) and grouping of CPU points by voxel in NumPy."""

from __future__ import annotations

import numpy as np

_BITS = 21
_OFF = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1

#: dense bounding-box grids up to this many cells are used to group points by voxel without sorting
_DENSE_CELLS = 1 << 23


def _group_points(pT: np.ndarray, voxel_size, origin) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Group world points ``pT`` (3, N) float32 by voxel: ``(sorted unique keys (M,), inverse (N,),
    kept point indices or None if all)``; points whose voxel is out of the key range are dropped.

    Same voxels as :func:`~pewm.memory.voxel_backend_torch.voxel_coords`
    (``floor((p - origin) / voxel_size)`` in float32).
    """
    vs = np.asarray(voxel_size, dtype=pT.dtype)[:, None]
    q = pT - np.asarray(origin, dtype=pT.dtype)[:, None] if any(origin) else pT
    f = np.floor(q / vs)
    lo_f, hi_f = f.min(axis=1), f.max(axis=1)
    keep = None
    if not (np.all(lo_f > -_OFF) and np.all(hi_f < _OFF)):  # rare: drop points outside the key range
        with np.errstate(invalid="ignore"):
            ok = ((f > -_OFF) & (f < _OFF)).all(axis=0)
        keep = np.flatnonzero(ok)
        f = f[:, keep]
        if keep.shape[0] == 0:
            return np.empty(0, np.int64), np.empty(0, np.intp), keep
        lo_f, hi_f = f.min(axis=1), f.max(axis=1)
    lo = lo_f.astype(np.int64)
    ext = hi_f.astype(np.int64) - lo + 1
    vol = int(ext[0]) * int(ext[1]) * int(ext[2])
    if vol <= _DENSE_CELLS:
        # dense boolean grid over the batch's bounding box: O(N + box), no sort; the box's row-major
        # order is the key order, so the occupied cells come out sorted
        rel = (f - lo_f[:, None]).astype(np.int32)
        lin = rel[0]
        lin *= np.int32(ext[1])
        lin += rel[1]
        lin *= np.int32(ext[2])
        lin += rel[2]
        occ = np.zeros(vol, dtype=bool)
        occ[lin] = True
        ul = np.flatnonzero(occ)
        lut = np.empty(vol, dtype=np.int32)
        lut[ul] = np.arange(ul.shape[0], dtype=np.int32)
        inv = lut[lin]
        e12 = int(ext[1]) * int(ext[2])
        i, rem = np.divmod(ul, e12)
        j, k = np.divmod(rem, int(ext[2]))
        uk = ((i + (int(lo[0]) + _OFF)) << (2 * _BITS)) | ((j + (int(lo[1]) + _OFF)) << _BITS) | (k + (int(lo[2]) + _OFF))
        return uk.astype(np.int64), inv, keep
    ijk = f.astype(np.int64) + _OFF
    keys = (ijk[0] << (2 * _BITS)) | (ijk[1] << _BITS) | ijk[2]
    uk, inv = np.unique(keys, return_inverse=True)
    return uk, inv.reshape(-1), keep
