"""The NumPy implementation of :class:`~pewm.memory.voxel_map.VoxelMap`'s hot paths, used on CPU.

Storage is PyTorch on the map's ``device``; on CPU the hot paths run in NumPy on views of the same
storage (measured on the 2-core CPU, see ``benchmarks/memory_throughput.py``): torch's int64 sort is
~100x slower than NumPy's, torch's ``index_add_`` / ``scatter_reduce_`` are ~10x slower than NumPy 2's
1-D ``ufunc.at``, and torch's 2-thread kernels stall when another process holds a core. So on CPU
``integrate`` unprojects once per batch (shared by both maps of a
:class:`~pewm.memory.persistent_map.PersistentMap`), groups points by voxel on a dense grid over the
batch's bounding box (no sort), and accumulates straight into the stored rows; ``render`` culls 1 m
blocks of points against the view cone before projecting and expands each splat to exactly its
pixels. The results are those of the torch implementation (:mod:`~pewm.memory.voxel_backend_torch`):
the same voxels, the same values for max/min/sum/last, float sums up to rounding order.

Functions take the map ``m`` whose storage they read and update (``m._keys``, ``m._skeys``,
``m._srows``, ``m._store``, ``m._channels``, ``m._n``, ``m._render_base``).
"""

from __future__ import annotations

import numpy as np
import torch

from pewm.memory._grouping import _group_points
from pewm.memory._points import _PointBatch
from pewm.memory._util import as_tensor
from pewm.memory.reductions import _BUILTIN, REDUCTIONS
from pewm.memory.rendering import RenderOutput, _BlockIndex, render_numpy, splat_numpy
from pewm.memory.voxel_backend_torch import point_values, source

#: NumPy ufuncs of the built-in reductions that the CPU path accumulates with ``ufunc.at``
_NP_UFUNC = {"max": np.maximum, "min": np.minimum, "sum": np.add, "mean": np.add}
#: attributes wider than this use torch's (threaded) scatter on CPU instead of per-channel ufunc.at
_NP_MAX_CHANNELS = 4096


# ---- storage ---------------------------------------------------------------------------------------


def grown_keys(keys: torch.Tensor, cap: int, device: torch.device) -> torch.Tensor:
    """``keys`` copied into a new NumPy-backed buffer of ``cap`` entries (the tail is uninitialised)."""
    out = np.empty(cap, dtype=np.int64)
    out[: keys.shape[0]] = keys.numpy()
    return torch.from_numpy(out)


def grown_rows(t: torch.Tensor, cap: int, fill, device: torch.device) -> torch.Tensor:
    """Attribute rows ``t`` copied into ``cap`` NumPy-backed rows, the new ones set to ``fill``."""
    a = np.empty((cap, t.shape[1]), dtype=t.numpy().dtype)
    a[: t.shape[0]] = t.numpy()
    a[t.shape[0] :] = fill
    return torch.from_numpy(a)


def rows_for(m, ukeys: np.ndarray) -> np.ndarray:
    """CPU :func:`~pewm.memory.voxel_backend_torch.rows_for` on NumPy views (sorted unique ``ukeys`` ->
    storage rows, inserting the missing ones)."""
    V = m._n
    sk = m._skeys.numpy()
    if V:
        pos = np.searchsorted(sk, ukeys)
        found = sk[np.minimum(pos, V - 1)] == ukeys
        rows = m._srows.numpy()[np.minimum(pos, V - 1)]
        if found.all():
            return rows
        miss = np.flatnonzero(~found)
    else:
        pos = np.zeros(len(ukeys), dtype=np.int64)
        rows = np.empty(len(ukeys), dtype=np.int64)
        miss = np.arange(len(ukeys))
    new = ukeys[miss]
    M = new.shape[0]
    m._ensure_capacity(V + M)
    m._keys.numpy()[V : V + M] = new
    new_rows = np.arange(V, V + M, dtype=np.int64)
    # merge the sorted index without a full sort: final position of new key i is (#old < it) + i
    pos_new = pos[miss] + np.arange(M)
    is_old = np.ones(V + M, dtype=bool)
    is_old[pos_new] = False
    skeys = np.empty(V + M, dtype=np.int64)
    srows = np.empty(V + M, dtype=np.int64)
    skeys[pos_new], srows[pos_new] = new, new_rows
    skeys[is_old], srows[is_old] = sk, m._srows.numpy()
    m._skeys, m._srows, m._n = torch.from_numpy(skeys), torch.from_numpy(srows), V + M
    rows[miss] = new_rows
    return rows


# ---- integration -----------------------------------------------------------------------------------


def values_t(m, name: str, batch: _PointBatch, sel: np.ndarray, features, extra) -> np.ndarray | None:
    """CPU: (C, N) per-point values of a feature / extra source, gathered channel by channel."""
    x = source(m, name, batch, features, extra)
    if x is None:
        return None
    B, H, W = batch.B, batch.H, batch.W
    C = x.shape[1]
    xn = x.detach().numpy().reshape(B, C, H * W)
    xt = np.ascontiguousarray(xn.transpose(1, 0, 2)).reshape(C, B * H * W)  # (C, B*H*W)
    if sel.shape[0] == B * H * W:  # every pixel valid: sel is arange
        return xt
    return np.take(xt, sel, axis=1)


def fuse(m, batch: _PointBatch, steps: torch.Tensor, features, extra) -> int:
    """CPU integration on NumPy views of the storage.

    Points are grouped by voxel without sorting (:func:`_group_points`), and the built-in
    reductions accumulate straight into the stored rows with 1-D ``ufunc.at`` per channel
    (NumPy >= 2 makes these ~10x faster than torch's scatter on CPU): max/min/sum pool exactly as
    pooling the batch first and then combining; float sums differ only by rounding order.
    Other reductions (``last``, registered ones) and attributes wider than ``_NP_MAX_CHANNELS``
    use the generic torch path (384-d features: NumPy 0.8 M points/s vs torch 0.4 M here).
    """
    dev = m.device
    H, W = batch.H, batch.W
    sel = batch.sel.numpy()
    pT = batch.points_t()
    sub = None  # indices of the batch points this map keeps (None: all)
    if m.config.bounds is not None:
        lo = np.asarray(m.config.bounds[0], dtype=np.float32)[:, None]
        hi = np.asarray(m.config.bounds[1], dtype=np.float32)[:, None]
        inb = ((pT >= lo) & (pT < hi)).all(axis=0)
        if not inb.all():
            sub = np.flatnonzero(inb)
    if sub is not None:
        pT, sel = pT[:, sub], sel[sub]
    if sel.shape[0] == 0:
        return 0
    ukeys, inv, keep = _group_points(pT, m.config.voxel_size, m.config.origin)
    if keep is not None:
        sub = keep if sub is None else sub[keep]
        pT, sel = pT[:, keep], sel[keep]
    N, M = sel.shape[0], ukeys.shape[0]
    if N == 0:
        return 0
    rows = rows_for(m, ukeys)
    prow = rows[inv]  # storage row of every point
    counts = None
    generic = None
    for spec in m.config.attributes:
        red = REDUCTIONS[spec.reduction]
        fast = spec.reduction in _NP_UFUNC and red is _BUILTIN[spec.reduction]
        src = spec.src
        if src == "one":
            C_in = 1
        elif src == "step":
            C_in = 1
        elif src == "xyz":
            C_in = 3
        elif src == "color":
            if batch.rgb is None:
                continue
            C_in = 3
        else:
            x = features if src == "feature" else (extra or {}).get(src)
            if x is None:
                continue
            C_in = int(as_tensor(x).shape[-3])
        C = m._channels[spec.name]
        if C is None:
            C = m._channels[spec.name] = C_in
        if C_in != C:
            raise ValueError(f"attribute {spec.name!r} has {C} channels, got values with {C_in}")
        store = m._store[spec.name]
        if store is None:
            store = torch.full(
                (m._keys.shape[0], C + red.extra_channels), red.init(spec.torch_dtype), dtype=spec.torch_dtype,
                device=dev,
            )
            m._store[spec.name] = store
        st = store.numpy()
        dt = st.dtype
        if not fast or C > _NP_MAX_CHANNELS:
            if generic is None:
                generic = (torch.from_numpy(inv.astype(np.int64)), torch.from_numpy(rows), torch.arange(N))
            inv_t, rows_t, order = generic
            if src == "xyz":
                vals = torch.from_numpy(pT.T)
            elif src == "color":
                vals = torch.from_numpy(batch.color_t()[:, sub] if sub is not None else batch.color_t()).T
            elif src == "one":
                vals = torch.ones((N, 1))
            elif src == "step":
                vals = steps[torch.from_numpy(sel // (H * W))][:, None]
            else:
                vals = point_values(m, src, batch, torch.from_numpy(sel), features, extra)
            buf = red.reduce(vals.to(spec.torch_dtype), inv_t, M, order)
            store[rows_t] = red.combine(store[rows_t], buf)
            continue
        op = _NP_UFUNC[spec.reduction]
        if src == "one" and spec.reduction in ("sum", "mean"):
            if counts is None:
                counts = np.bincount(inv, minlength=M)
            for c in range(C + red.extra_channels):
                np.add.at(st[:, c], rows, counts.astype(dt))
            continue
        if spec.reduction == "mean":
            if counts is None:
                counts = np.bincount(inv, minlength=M)
            np.add.at(st[:, C], rows, counts.astype(dt))
        if src == "step":
            fr = batch.frame() if sub is None else sel // (H * W)
            op.at(st[:, 0], prow, steps.numpy().astype(dt)[fr])
            continue
        if src == "xyz":
            v = pT
        elif src == "color":
            v = batch.color_t() if sub is None else batch.color_t()[:, sub]
        else:
            v = values_t(m, src, batch, sel, features, extra)
        for c in range(C):
            vc = v[c] if v.dtype == dt else v[c].astype(dt)
            op.at(st[:, c], prow, vc)
    return N


# ---- rendering -------------------------------------------------------------------------------------


def render(
    m, Kb: torch.Tensor, Tb: torch.Tensor, batched: bool, height: int, width: int, attribute: str,
    points: torch.Tensor | None,
) -> RenderOutput:
    """:meth:`VoxelMap.render` in NumPy: splat the points of the (cached) block index."""
    index = render_index(m, points)
    vals = m._cached(f"attr:{attribute}", lambda: m.get(attribute).float())
    return render_numpy(index, vals, Kb, Tb, batched, height, width, m.config)


def render_index(m, points: torch.Tensor | None) -> _BlockIndex:
    """Points grouped into 1 m blocks with bounding spheres (cached until the map changes)."""
    if points is not None:
        return _BlockIndex(points.detach().float().cpu().numpy())
    return m._cached("render_index", lambda: grown_render_index(m))


def grown_render_index(m) -> _BlockIndex:
    """The map's block index: rebuilt (a sort of every point) when the map has grown by more than
    ``m.RENDER_INDEX_REBUILD`` of the indexed size, else the last build extended by the new voxels."""
    P = m.points().float().numpy()
    base = m._render_base
    if base is None or P.shape[0] < base.n or P.shape[0] - base.n > m.RENDER_INDEX_REBUILD * base.n:
        pad = float(np.linalg.norm(m.config.voxel_size))  # mean points stay inside their voxel
        m._render_base = base = _BlockIndex(P, pad=pad)
        return base
    return base.extended(P)


def splat(m, index: _BlockIndex, K: np.ndarray, T: np.ndarray, H: int, W: int):
    """:func:`~pewm.memory.rendering.splat_numpy` with the map's config."""
    return splat_numpy(index, K, T, H, W, m.config)


__all__ = ["fuse", "grown_keys", "grown_rows", "grown_render_index", "render", "render_index", "rows_for", "splat",
           "values_t"]
