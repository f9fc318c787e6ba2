"""The torch implementation of :class:`~pewm.memory.voxel_map.VoxelMap` (any device; the only one on CUDA).

Everything here is torch ops on the map's ``device``: the voxel key scheme (21 bits per axis packed
into an int64, see :mod:`~pewm.memory._grouping`), lookup in the sorted key index, insertion of new
keys, integration (pool the batch's points per voxel with each attribute's reduction, then combine
with the stored rows) and rendering by soft z-buffered splatting (:func:`~pewm.memory.rendering.render_torch`).

On CPU the map runs the NumPy twins of the hot paths instead (:mod:`~pewm.memory.voxel_backend_numpy`),
which produce the same voxels and values; the functions here that read the map (keys, lookup,
per-point feature values) are shared by both. Functions take the map ``m`` whose storage they
read and update (``m._keys``, ``m._skeys``, ``m._srows``, ``m._store``, ``m._channels``, ``m._n``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pewm.memory._grouping import _BITS, _MASK, _OFF
from pewm.memory._points import _PointBatch
from pewm.memory._util import as_tensor, unique_sorted
from pewm.memory.reductions import REDUCTIONS
from pewm.memory.rendering import RenderOutput, render_torch, splat_torch
from pewm.memory.voxel_config import VoxelMapConfig

# ---- keys ------------------------------------------------------------------------------------------


def voxel_coords(points: torch.Tensor, config: VoxelMapConfig) -> torch.Tensor:
    """Integer voxel coordinates ``floor((points - origin) / voxel_size)`` (N, 3) int64."""
    vs = torch.tensor(config.voxel_size, device=points.device, dtype=points.dtype)
    org = torch.tensor(config.origin, device=points.device, dtype=points.dtype)
    return torch.floor((points - org) / vs).to(torch.int64)


def encode_keys(ijk: torch.Tensor) -> torch.Tensor:
    """int64 keys of integer voxel coordinates (N, 3)."""
    ijk = ijk + _OFF
    return (ijk[:, 0] << (2 * _BITS)) | (ijk[:, 1] << _BITS) | ijk[:, 2]


def decode_keys(keys: torch.Tensor) -> torch.Tensor:
    """Integer voxel coordinates (N, 3) of int64 keys."""
    return torch.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], dim=1) - _OFF


def lookup_rows(m, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Storage rows of ``keys`` and whether each is stored."""
    if m._n == 0:
        z = torch.zeros_like(keys)
        return z, torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(m._skeys, keys).clamp_max_(m._n - 1)
    found = m._skeys[pos] == keys
    return m._srows[pos], found


# ---- storage ---------------------------------------------------------------------------------------


def grown_keys(keys: torch.Tensor, cap: int, device: torch.device) -> torch.Tensor:
    """``keys`` copied into a new buffer of ``cap`` entries (the tail is uninitialised)."""
    out = torch.empty(cap, dtype=torch.int64, device=device)
    out[: keys.shape[0]] = keys
    return out


def grown_rows(t: torch.Tensor, cap: int, fill, device: torch.device) -> torch.Tensor:
    """Attribute rows ``t`` copied into ``cap`` rows, the new ones set to ``fill``."""
    out = torch.full((cap, t.shape[1]), fill, dtype=t.dtype, device=device)
    out[: t.shape[0]] = t
    return out


def rows_for(m, ukeys: torch.Tensor) -> torch.Tensor:
    """Storage rows for sorted unique ``ukeys``, inserting the missing ones."""
    rows, found = lookup_rows(m, ukeys)
    if bool(found.all()):
        return rows
    new = ukeys[~found]  # sorted, unique
    M, V = new.shape[0], m._n
    m._ensure_capacity(V + M)
    m._keys[V : V + M] = new
    new_rows = torch.arange(V, V + M, device=m.device)
    # merge the sorted index without a full sort: final position of new key i is (#old < it) + i
    pos_new = torch.searchsorted(m._skeys, new) + torch.arange(M, device=m.device)
    is_old = torch.ones(V + M, dtype=torch.bool, device=m.device)
    is_old[pos_new] = False
    skeys = torch.empty(V + M, dtype=torch.int64, device=m.device)
    srows = torch.empty(V + M, dtype=torch.int64, device=m.device)
    skeys[pos_new], srows[pos_new] = new, new_rows
    skeys[is_old], srows[is_old] = m._skeys, m._srows
    m._skeys, m._srows, m._n = skeys, srows, V + M
    rows[~found] = new_rows
    return rows


# ---- per-point values ------------------------------------------------------------------------------


def source(m, name: str, batch: _PointBatch, features, extra) -> torch.Tensor | None:
    """(B, C, H, W) values of a feature / extra source at the depth resolution, or ``None``."""
    B, H, W = batch.B, batch.H, batch.W
    x = features if name == "feature" else (extra or {}).get(name)
    if x is None:
        return None
    x = as_tensor(x, device=m.device)
    if x.ndim == 3:
        x = x[None]
    if x.shape[0] != B:
        raise ValueError(f"integrate: {name!r} has batch {x.shape[0]}, expected {B}")
    if x.shape[-2:] != (H, W):
        x = F.interpolate(x.float(), size=(H, W), mode="bilinear", align_corners=False)
    return x


def point_values(m, name: str, batch: _PointBatch, sel: torch.Tensor, features, extra) -> torch.Tensor | None:
    """(N, C) per-point values of a feature / extra source (resized to the depth resolution)."""
    x = source(m, name, batch, features, extra)
    if x is None:
        return None
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])[sel]


# ---- integration -----------------------------------------------------------------------------------


def fuse(m, batch: _PointBatch, steps: torch.Tensor, features, extra) -> int:
    """Integration with torch ops (any device)."""
    dev = m.device
    H, W = batch.H, batch.W
    sel, pts = batch.sel, batch.pts
    sub = None
    if m.config.bounds is not None:
        lo = torch.tensor(m.config.bounds[0], device=dev)
        hi = torch.tensor(m.config.bounds[1], device=dev)
        inb = ((pts >= lo) & (pts < hi)).all(dim=1)
        if not bool(inb.all()):
            sub = inb.nonzero().squeeze(1)
            sel, pts = sel[sub], pts[sub]
    ijk = voxel_coords(pts, m.config)
    ok = (ijk.abs() < _OFF).all(dim=1)
    if not bool(ok.all()):
        keep = ok.nonzero().squeeze(1)
        sub = keep if sub is None else sub[keep]
        sel, pts, ijk = sel[keep], pts[keep], ijk[keep]
    N = sel.shape[0]
    if N == 0:
        return 0
    keys = encode_keys(ijk)
    ukeys = unique_sorted(keys)
    inv = torch.searchsorted(ukeys, keys)
    M = ukeys.shape[0]
    rows = rows_for(m, ukeys)
    order = torch.arange(N, device=dev)
    for spec in m.config.attributes:
        if spec.src == "xyz":
            vals = pts
        elif spec.src == "one":
            vals = torch.ones((N, 1), device=dev)
        elif spec.src == "step":
            vals = steps[sel // (H * W)][:, None]
        elif spec.src == "color":
            vals = batch.color()
            if vals is None:
                continue
            vals = vals if sub is None else vals[sub]
        else:
            vals = point_values(m, spec.src, batch, sel, features, extra)
            if vals is None:
                continue
        C = m._channels[spec.name]
        if C is None:
            C = m._channels[spec.name] = int(vals.shape[1])
        if vals.shape[1] != C:
            raise ValueError(f"attribute {spec.name!r} has {C} channels, got values with {vals.shape[1]}")
        red = REDUCTIONS[spec.reduction]
        store = m._store[spec.name]
        if store is None:
            cap = m._keys.shape[0]
            store = torch.full(
                (cap, C + red.extra_channels), red.init(spec.torch_dtype), dtype=spec.torch_dtype, device=dev
            )
            m._store[spec.name] = store
        buf = red.reduce(vals.to(spec.torch_dtype), inv, M, order)
        store[rows] = red.combine(store[rows], buf)
    return N


# ---- rendering -------------------------------------------------------------------------------------


def render(
    m, Kb: torch.Tensor, Tb: torch.Tensor, batched: bool, height: int, width: int, attribute: str,
    points: torch.Tensor | None,
) -> RenderOutput:
    """:meth:`VoxelMap.render` with torch ops: splat every point (``points`` or the map's own)."""
    P = m._cached("points", lambda: m.points().float().contiguous()) if points is None else points
    vals = m._cached(f"attr:{attribute}", lambda: m.get(attribute).float())
    return render_torch(P, vals, Kb, Tb, batched, height, width, m.config, m.device)


def splat(m, P: torch.Tensor, K: torch.Tensor, T: torch.Tensor, H: int, W: int):
    """:func:`~pewm.memory.rendering.splat_torch` (soft z-buffer splat of points ``P``) with the map's config."""
    return splat_torch(P, K, T, H, W, m.config, m.device)


__all__ = [
    "decode_keys",
    "encode_keys",
    "fuse",
    "grown_keys",
    "grown_rows",
    "lookup_rows",
    "point_values",
    "render",
    "rows_for",
    "source",
    "splat",
    "voxel_coords",
]
