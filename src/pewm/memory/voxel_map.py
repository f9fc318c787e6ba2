"""Sparse voxel map with declared per-voxel attributes (the persistent 3D memory).

This is the data structure behind the paper's "DINO-Map" (§3.2 "3D feature map", paper-notes
"Model"): every pixel of an RGB-D frame is unprojected with its depth, intrinsics ``K`` and
camera-to-world pose into a world grid of voxels (paper: 0.25 m x 0.25 m horizontally, 1 m
vertically, z up) and per-pixel features are aggregated per voxel by **max-pooling**. Non-empty
voxels become memory tokens (feature + 3D sinusoidal position embedding).

Differences from the paper's dense 256x32x256 grid, on purpose:

* **Sparse**: only observed voxels are stored (sorted int64 keys + append-only attribute rows), so
  memory grows with the explored volume and never with the number of frames, and there is no fixed
  extent (optional ``bounds`` drop points outside a box).
* **Declared attributes** (like Open3D's ``VoxelBlockGrid``): each attribute is an
  :class:`AttributeSpec` ``(name, channels, reduction, source)``; reductions come from one table
  (:data:`REDUCTIONS`: ``max``, ``min``, ``sum``, ``mean``, ``last``). Adding an attribute is a config
  change, not a new code path.
* **Never-observed feature value**: the paper's grid "starts at all zeros" and max-pools into it,
  which would clamp negative DINO features at 0 **[gap]**. We max-pool only over observed points
  (the running max starts at -inf internally) and read never-observed channels as ``empty`` (0).

Conventions: world metres, z up; camera OpenCV (x right, y down, z forward); poses camera-to-world
4x4; depth metric z-depth, invalid = 0 / NaN / inf / beyond ``max_depth``. Images are uint8
``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in [0, 1] (see :func:`pewm.memory._util.rgb_to_bchw_float`).
Storage is PyTorch on the map's ``device`` (CPU or CUDA). On CUDA everything is torch ops. On CPU
the hot paths run in NumPy on views of the same storage (measured on the 2-core CPU, see
``benchmarks/memory_throughput.py``): torch's int64 sort is ~100x slower than NumPy's, torch's
``index_add_`` / ``scatter_reduce_`` are ~10x slower than NumPy 2's 1-D ``ufunc.at``, and torch's
2-thread kernels stall when another process holds a core. So on CPU ``integrate`` unprojects once per
batch (shared by both maps of a :class:`~pewm.memory.persistent_map.PersistentMap`), groups points by
voxel on a dense grid over the batch's bounding box (no sort), and accumulates straight into the
stored rows; ``render`` culls 1 m blocks of points against the view cone before projecting and
expands each splat to exactly its pixels.

This module holds :class:`VoxelMapConfig` and :class:`VoxelMap` (storage, integration, lookup, tokens,
persistence); the pieces it builds on live in :mod:`~pewm.memory.reductions`,
:mod:`~pewm.memory.attributes`, :mod:`~pewm.memory.tokens`, :mod:`~pewm.memory.rendering` (splatting)
and the private ``_grouping`` / ``_points`` (CPU grouping by voxel, per-batch unprojection). Every name
they define that this module used to define is re-exported here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pewm.memory._grouping import _BITS, _MASK, _OFF, _group_points
from pewm.memory._points import _PointBatch
from pewm.memory._util import as_tensor, unique_sorted
from pewm.memory.attributes import BUILTIN_SOURCES, AttributeSpec, feature_attributes, surface_attributes
from pewm.memory.reductions import _BUILTIN, REDUCTIONS, Reduction, register_reduction
from pewm.memory.rendering import (
    RenderOutput,
    _batched_camera,
    _BlockIndex,
    render_numpy,
    render_torch,
    splat_numpy,
    splat_torch,
)
from pewm.memory.tokens import MemoryTokens, sinusoidal_position_embedding

__all__ = [
    "BUILTIN_SOURCES",
    "REDUCTIONS",
    "AttributeSpec",
    "MemoryTokens",
    "Reduction",
    "RenderOutput",
    "VoxelMap",
    "VoxelMapConfig",
    "feature_attributes",
    "register_reduction",
    "sinusoidal_position_embedding",
    "surface_attributes",
]


@dataclass(frozen=True)
class VoxelMapConfig:
    """Configuration of a :class:`VoxelMap`.

    Defaults are the paper's DINO-map grid (0.25 m x 0.25 m x 1 m voxels, z up, max-pooled features).
    ``point_attribute`` names a mean-``xyz`` attribute that :meth:`VoxelMap.render` and
    :meth:`VoxelMap.export_ply` use as each voxel's surface point (more accurate than the centre).
    """

    voxel_size: tuple[float, float, float] = (0.25, 0.25, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    max_depth: float | None = 10.0
    attributes: tuple[AttributeSpec, ...] = field(default_factory=feature_attributes)
    point_attribute: str | None = None
    # memory tokens: 3D sinusoidal position embedding (dims split equally over x, y, z; sin + cos)
    pos_dim: int = 96
    pos_min_wavelength: float = 0.5
    pos_max_wavelength: float = 100.0
    # rendering: each voxel is splatted as a square of side splat_scale * voxel footprint (pixels)
    splat_scale: float = 1.25
    max_splat_px: int = 8
    near: float = 0.05
    blend_tol_abs: float = 0.05
    blend_tol_rel: float = 0.03

    def __post_init__(self) -> None:
        vs = tuple(float(v) for v in self.voxel_size) if not isinstance(self.voxel_size, (int, float)) else (
            float(self.voxel_size),
        ) * 3
        object.__setattr__(self, "voxel_size", vs)
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        if len(vs) != 3 or min(vs) <= 0:
            raise ValueError(f"voxel_size must be 3 positive numbers, got {self.voxel_size}")
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate attribute names: {names}")
        if self.point_attribute is not None and self.point_attribute not in names:
            raise ValueError(f"point_attribute {self.point_attribute!r} is not an attribute ({names})")
        if self.pos_dim % 6:
            raise ValueError(f"pos_dim must be a multiple of 6 (sin+cos per axis), got {self.pos_dim}")
        if self.bounds is not None:
            lo, hi = (tuple(float(x) for x in b) for b in self.bounds)
            if any(h <= l for l, h in zip(lo, hi)):
                raise ValueError(f"bounds must be (min xyz, max xyz) with min < max, got {self.bounds}")
            object.__setattr__(self, "bounds", (lo, hi))

    @classmethod
    def paper(cls, feature_dim: int | None = 384, **kw) -> "VoxelMapConfig":
        """The paper's DINO-map: 0.25 x 0.25 x 1 m voxels, max-pooled ``feature_dim`` features."""
        return cls(voxel_size=(0.25, 0.25, 1.0), attributes=feature_attributes(feature_dim), **kw)

    @classmethod
    def surface(cls, voxel_size: float = 0.05, **kw) -> "VoxelMapConfig":
        """A fine colour + surface-point map for :meth:`VoxelMap.render` (default 5 cm voxels)."""
        return cls(voxel_size=(voxel_size,) * 3, attributes=surface_attributes(), point_attribute="point", **kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attributes"] = [asdict(a) for a in self.attributes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VoxelMapConfig":
        d = dict(d)
        d["attributes"] = tuple(AttributeSpec(**a) for a in d["attributes"])
        if d.get("bounds") is not None:
            d["bounds"] = tuple(tuple(b) for b in d["bounds"])
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# The map
# --------------------------------------------------------------------------------------------------

#: NumPy ufuncs of the built-in reductions that the CPU path accumulates with ``ufunc.at``
_NP_UFUNC = {"max": np.maximum, "min": np.minimum, "sum": np.add, "mean": np.add}
#: attributes wider than this use torch's (threaded) scatter on CPU instead of per-channel ufunc.at
_NP_MAX_CHANNELS = 4096


class VoxelMap:
    """Sparse voxel map (see module docstring). ``VoxelMap(VoxelMapConfig.paper(384), device="cuda")``.

    Storage: ``keys`` hash integer voxel coordinates (21 bits per axis, so +-2^20 voxels from
    ``origin``) into int64; a sorted copy of the keys with their storage rows gives ``O(log V)``
    lookup; attribute rows are append-only with amortised growth.
    """

    def __init__(self, config: VoxelMapConfig | None = None, device: torch.device | str = "cpu"):
        self.config = config or VoxelMapConfig()
        self.device = torch.device(device)
        self.clear()

    # ---- bookkeeping -----------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every voxel (keeps config and device)."""
        self._n = 0
        self._keys = torch.empty(0, dtype=torch.int64, device=self.device)  # storage order
        self._skeys = torch.empty(0, dtype=torch.int64, device=self.device)  # sorted
        self._srows = torch.empty(0, dtype=torch.int64, device=self.device)  # storage row of each sorted key
        self._store: dict[str, torch.Tensor | None] = {a.name: None for a in self.config.attributes}
        self._channels: dict[str, int | None] = {a.name: a.channels for a in self.config.attributes}
        self.frames_integrated = 0
        self._version = 0
        self._cache: dict[str, tuple[int, torch.Tensor]] = {}
        self._render_base: _BlockIndex | None = None  # sorted render index, reused as the map grows

    def _cached(self, key: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self._version:
            return hit[1]
        val = fn()
        self._cache[key] = (self._version, val)
        return val

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"VoxelMap({self._n} voxels, voxel_size={self.config.voxel_size}, device={self.device})"

    @property
    def attributes(self) -> dict[str, AttributeSpec]:
        return {a.name: a for a in self.config.attributes}

    @property
    def nbytes(self) -> int:
        """Bytes of the stored voxels: keys, sorted index and attribute rows (excluding spare capacity)."""
        n = 3 * 8 * self._n
        for t in self._store.values():
            if t is not None:
                n += self._n * t[0].numel() * t.element_size() if t.shape[0] else 0
        return n

    @property
    def capacity_nbytes(self) -> int:
        """Bytes actually allocated (including spare capacity of the append-only storage)."""
        n = self._keys.numel() * 8 + 2 * 8 * self._n
        return n + sum(t.numel() * t.element_size() for t in self._store.values() if t is not None)

    def to(self, device) -> "VoxelMap":
        """Move the map to ``device`` in place and return it."""
        self.device = torch.device(device)
        self._keys = self._keys.to(self.device)
        self._skeys = self._skeys.to(self.device)
        self._srows = self._srows.to(self.device)
        self._store = {k: (None if v is None else v.to(self.device)) for k, v in self._store.items()}
        self._cache = {}
        return self

    # ---- keys ----------------------------------------------------------------------------------

    def _coords(self, points: torch.Tensor) -> torch.Tensor:
        vs = torch.tensor(self.config.voxel_size, device=points.device, dtype=points.dtype)
        org = torch.tensor(self.config.origin, device=points.device, dtype=points.dtype)
        return torch.floor((points - org) / vs).to(torch.int64)

    @staticmethod
    def _encode(ijk: torch.Tensor) -> torch.Tensor:
        ijk = ijk + _OFF
        return (ijk[:, 0] << (2 * _BITS)) | (ijk[:, 1] << _BITS) | ijk[:, 2]

    @staticmethod
    def _decode(keys: torch.Tensor) -> torch.Tensor:
        return torch.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], dim=1) - _OFF

    def voxel_keys(self, points) -> torch.Tensor:
        """int64 keys of the voxels containing world ``points`` (N, 3)."""
        return self._encode(self._coords(as_tensor(points, device=self.device, dtype=torch.float32)))

    @property
    def keys(self) -> torch.Tensor:
        """Keys of the stored voxels, in storage order (V,)."""
        return self._keys[: self._n]

    def coords(self) -> torch.Tensor:
        """Integer voxel coordinates (V, 3), storage order."""
        return self._decode(self.keys)

    def centers(self) -> torch.Tensor:
        """Voxel centres (V, 3) in world metres, storage order."""
        vs = torch.tensor(self.config.voxel_size, device=self.device)
        org = torch.tensor(self.config.origin, device=self.device)
        return org + (self.coords().float() + 0.5) * vs

    def points(self) -> torch.Tensor:
        """Each voxel's surface point: the ``point_attribute`` mean if configured, else the centre."""
        if self.config.point_attribute is not None and self._store.get(self.config.point_attribute) is not None:
            return self.get(self.config.point_attribute)
        return self.centers()

    def _lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Storage rows of ``keys`` and whether each is stored."""
        if self._n == 0:
            z = torch.zeros_like(keys)
            return z, torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self._skeys, keys).clamp_max_(self._n - 1)
        found = self._skeys[pos] == keys
        return self._srows[pos], found

    def _coords_np(self, pts: np.ndarray) -> np.ndarray:
        """NumPy twin of :meth:`_coords` (same float32 maths, so the same voxels)."""
        vs = np.asarray(self.config.voxel_size, dtype=pts.dtype)
        org = np.asarray(self.config.origin, dtype=pts.dtype)
        q = pts - org if any(self.config.origin) else pts
        return np.floor(q / vs).astype(np.int64)

    def _rows_for_np(self, ukeys: np.ndarray) -> np.ndarray:
        """CPU :meth:`_rows_for` on NumPy views (sorted unique ``ukeys`` -> storage rows)."""
        V = self._n
        sk = self._skeys.numpy()
        if V:
            pos = np.searchsorted(sk, ukeys)
            found = sk[np.minimum(pos, V - 1)] == ukeys
            rows = self._srows.numpy()[np.minimum(pos, V - 1)]
            if found.all():
                return rows
            miss = np.flatnonzero(~found)
        else:
            pos = np.zeros(len(ukeys), dtype=np.int64)
            rows = np.empty(len(ukeys), dtype=np.int64)
            miss = np.arange(len(ukeys))
        new = ukeys[miss]
        M = new.shape[0]
        self._ensure_capacity(V + M)
        self._keys.numpy()[V : V + M] = new
        new_rows = np.arange(V, V + M, dtype=np.int64)
        # merge the sorted index without a full sort: final position of new key i is (#old < it) + i
        pos_new = pos[miss] + np.arange(M)
        is_old = np.ones(V + M, dtype=bool)
        is_old[pos_new] = False
        skeys = np.empty(V + M, dtype=np.int64)
        srows = np.empty(V + M, dtype=np.int64)
        skeys[pos_new], srows[pos_new] = new, new_rows
        skeys[is_old], srows[is_old] = sk, self._srows.numpy()
        self._skeys, self._srows, self._n = torch.from_numpy(skeys), torch.from_numpy(srows), V + M
        rows[miss] = new_rows
        return rows

    def _ensure_capacity(self, n: int) -> None:
        cap = self._keys.shape[0]
        if n <= cap:
            return
        new_cap = max(n, int(cap * 1.5) + 1024)
        if self.device.type == "cpu":
            keys = np.empty(new_cap, dtype=np.int64)
            keys[:cap] = self._keys.numpy()
            self._keys = torch.from_numpy(keys)
        else:
            keys = torch.empty(new_cap, dtype=torch.int64, device=self.device)
            keys[:cap] = self._keys
            self._keys = keys
        for name, t in self._store.items():
            if t is not None:
                self._store[name] = self._grow(name, t, new_cap)

    def _grow(self, name: str, t: torch.Tensor, cap: int) -> torch.Tensor:
        spec = self.attributes[name]
        red = REDUCTIONS[spec.reduction]
        if t.device.type == "cpu":
            a = np.empty((cap, t.shape[1]), dtype=t.numpy().dtype)
            a[: t.shape[0]] = t.numpy()
            a[t.shape[0] :] = red.init(t.dtype)
            return torch.from_numpy(a)
        out = torch.full((cap, t.shape[1]), red.init(t.dtype), dtype=t.dtype, device=self.device)
        out[: t.shape[0]] = t
        return out

    def _rows_for(self, ukeys: torch.Tensor) -> torch.Tensor:
        """Storage rows for sorted unique ``ukeys``, inserting the missing ones."""
        rows, found = self._lookup(ukeys)
        if bool(found.all()):
            return rows
        new = ukeys[~found]  # sorted, unique
        M, V = new.shape[0], self._n
        self._ensure_capacity(V + M)
        self._keys[V : V + M] = new
        new_rows = torch.arange(V, V + M, device=self.device)
        # merge the sorted index without a full sort: final position of new key i is (#old < it) + i
        pos_new = torch.searchsorted(self._skeys, new) + torch.arange(M, device=self.device)
        is_old = torch.ones(V + M, dtype=torch.bool, device=self.device)
        is_old[pos_new] = False
        skeys = torch.empty(V + M, dtype=torch.int64, device=self.device)
        srows = torch.empty(V + M, dtype=torch.int64, device=self.device)
        skeys[pos_new], srows[pos_new] = new, new_rows
        skeys[is_old], srows[is_old] = self._skeys, self._srows
        self._skeys, self._srows, self._n = skeys, srows, V + M
        rows[~found] = new_rows
        return rows

    # ---- integration ---------------------------------------------------------------------------

    def integrate(
        self,
        rgb,
        depth,
        K,
        cam_to_world,
        features: torch.Tensor | None = None,
        step=None,
        extra: dict[str, torch.Tensor] | None = None,
    ) -> int:
        """Fuse a batch of RGB-D frames; returns the number of points integrated.

        ``rgb``: uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] (or None if no attribute uses
        colour); ``depth`` (B, H, W) metric z-depth (invalid: 0 / NaN / inf / > ``max_depth``);
        ``K`` (3, 3) or (B, 3, 3); ``cam_to_world`` (B, 4, 4); ``features`` (B, C, h, w) per-pixel
        features (bilinearly resized to H x W if needed; §3.2: DINOv2 features upsampled to pixels);
        ``step`` int or (B,) (default: a running frame counter); ``extra`` per-pixel values for
        attributes with other sources. Unbatched inputs (H, W) depth / (4, 4) pose are accepted.

        Every point is pooled into its voxel with each attribute's reduction; pooling is done per
        call and then combined with the stored value, so the result does not depend on frame order
        (exactly for max/min/sum, within float rounding for mean).
        """
        return self._fuse(_PointBatch.make(rgb, depth, K, cam_to_world, step, self.config.max_depth, self.device), features, extra)

    def _fuse(self, batch: "_PointBatch", features=None, extra=None) -> int:
        """Pool the points of ``batch`` (shared between maps by :class:`PersistentMap`) into this map."""
        B = batch.B
        steps = batch.steps
        if steps is None:
            steps = torch.arange(self.frames_integrated, self.frames_integrated + B, device=self.device)
        self.frames_integrated += B
        self._version += 1
        if self.device.type == "cpu":
            return self._fuse_cpu(batch, steps, features, extra)
        return self._fuse_torch(batch, steps, features, extra)

    def _source(self, name: str, batch: "_PointBatch", features, extra) -> torch.Tensor | None:
        """(B, C, H, W) values of a feature / extra source at the depth resolution, or ``None``."""
        B, H, W = batch.B, batch.H, batch.W
        x = features if name == "feature" else (extra or {}).get(name)
        if x is None:
            return None
        x = as_tensor(x, device=self.device)
        if x.ndim == 3:
            x = x[None]
        if x.shape[0] != B:
            raise ValueError(f"integrate: {name!r} has batch {x.shape[0]}, expected {B}")
        if x.shape[-2:] != (H, W):
            x = F.interpolate(x.float(), size=(H, W), mode="bilinear", align_corners=False)
        return x

    def _values(self, name: str, batch: "_PointBatch", sel: torch.Tensor, features, extra) -> torch.Tensor | None:
        """(N, C) per-point values of a feature / extra source (resized to the depth resolution)."""
        x = self._source(name, batch, features, extra)
        if x is None:
            return None
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])[sel]

    def _values_t(self, name: str, batch: "_PointBatch", sel: np.ndarray, features, extra) -> np.ndarray | None:
        """CPU: (C, N) per-point values of a feature / extra source, gathered channel by channel."""
        x = self._source(name, batch, features, extra)
        if x is None:
            return None
        B, H, W = batch.B, batch.H, batch.W
        C = x.shape[1]
        xn = x.detach().numpy().reshape(B, C, H * W)
        xt = np.ascontiguousarray(xn.transpose(1, 0, 2)).reshape(C, B * H * W)  # (C, B*H*W)
        if sel.shape[0] == B * H * W:  # every pixel valid: sel is arange
            return xt
        return np.take(xt, sel, axis=1)

    def _fuse_cpu(self, batch: "_PointBatch", steps: torch.Tensor, features, extra) -> int:
        """CPU integration on NumPy views of the storage.

        Points are grouped by voxel without sorting (:func:`_group_points`), and the built-in
        reductions accumulate straight into the stored rows with 1-D ``ufunc.at`` per channel
        (NumPy >= 2 makes these ~10x faster than torch's scatter on CPU): max/min/sum pool exactly as
        pooling the batch first and then combining; float sums differ only by rounding order.
        Other reductions (``last``, registered ones) and attributes wider than ``_NP_MAX_CHANNELS``
        use the generic torch path (384-d features: NumPy 0.8 M points/s vs torch 0.4 M here).
        """
        dev = self.device
        H, W = batch.H, batch.W
        sel = batch.sel.numpy()
        pT = batch.points_t()
        sub = None  # indices of the batch points this map keeps (None: all)
        if self.config.bounds is not None:
            lo = np.asarray(self.config.bounds[0], dtype=np.float32)[:, None]
            hi = np.asarray(self.config.bounds[1], dtype=np.float32)[:, None]
            inb = ((pT >= lo) & (pT < hi)).all(axis=0)
            if not inb.all():
                sub = np.flatnonzero(inb)
        if sub is not None:
            pT, sel = pT[:, sub], sel[sub]
        if sel.shape[0] == 0:
            return 0
        ukeys, inv, keep = _group_points(pT, self.config.voxel_size, self.config.origin)
        if keep is not None:
            sub = keep if sub is None else sub[keep]
            pT, sel = pT[:, keep], sel[keep]
        N, M = sel.shape[0], ukeys.shape[0]
        if N == 0:
            return 0
        rows = self._rows_for_np(ukeys)
        prow = rows[inv]  # storage row of every point
        counts = None
        generic = None
        for spec in self.config.attributes:
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
            C = self._channels[spec.name]
            if C is None:
                C = self._channels[spec.name] = C_in
            if C_in != C:
                raise ValueError(f"attribute {spec.name!r} has {C} channels, got values with {C_in}")
            store = self._store[spec.name]
            if store is None:
                store = torch.full(
                    (self._keys.shape[0], C + red.extra_channels), red.init(spec.torch_dtype), dtype=spec.torch_dtype,
                    device=dev,
                )
                self._store[spec.name] = store
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
                    vals = self._values(src, batch, torch.from_numpy(sel), features, extra)
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
                v = self._values_t(src, batch, sel, features, extra)
            for c in range(C):
                vc = v[c] if v.dtype == dt else v[c].astype(dt)
                op.at(st[:, c], prow, vc)
        return N

    def _fuse_torch(self, batch: "_PointBatch", steps: torch.Tensor, features, extra) -> int:
        """Integration with torch ops (any device)."""
        dev = self.device
        H, W = batch.H, batch.W
        sel, pts = batch.sel, batch.pts
        sub = None
        if self.config.bounds is not None:
            lo = torch.tensor(self.config.bounds[0], device=dev)
            hi = torch.tensor(self.config.bounds[1], device=dev)
            inb = ((pts >= lo) & (pts < hi)).all(dim=1)
            if not bool(inb.all()):
                sub = inb.nonzero().squeeze(1)
                sel, pts = sel[sub], pts[sub]
        ijk = self._coords(pts)
        ok = (ijk.abs() < _OFF).all(dim=1)
        if not bool(ok.all()):
            keep = ok.nonzero().squeeze(1)
            sub = keep if sub is None else sub[keep]
            sel, pts, ijk = sel[keep], pts[keep], ijk[keep]
        N = sel.shape[0]
        if N == 0:
            return 0
        keys = self._encode(ijk)
        ukeys = unique_sorted(keys)
        inv = torch.searchsorted(ukeys, keys)
        M = ukeys.shape[0]
        rows = self._rows_for(ukeys)
        order = torch.arange(N, device=dev)
        for spec in self.config.attributes:
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
                vals = self._values(spec.src, batch, sel, features, extra)
                if vals is None:
                    continue
            C = self._channels[spec.name]
            if C is None:
                C = self._channels[spec.name] = int(vals.shape[1])
            if vals.shape[1] != C:
                raise ValueError(f"attribute {spec.name!r} has {C} channels, got values with {vals.shape[1]}")
            red = REDUCTIONS[spec.reduction]
            store = self._store[spec.name]
            if store is None:
                cap = self._keys.shape[0]
                store = torch.full(
                    (cap, C + red.extra_channels), red.init(spec.torch_dtype), dtype=spec.torch_dtype, device=dev
                )
                self._store[spec.name] = store
            buf = red.reduce(vals.to(spec.torch_dtype), inv, M, order)
            store[rows] = red.combine(store[rows], buf)
        return N

    # ---- reading -------------------------------------------------------------------------------

    def get(self, name: str) -> torch.Tensor:
        """Values of attribute ``name`` for every voxel (V, C), storage order."""
        spec = self.attributes[name]
        store = self._store[name]
        if store is None:
            C = self._channels[name] or 0
            return torch.full((self._n, C), spec.empty, dtype=spec.torch_dtype, device=self.device)
        return REDUCTIONS[spec.reduction].read(store[: self._n], spec.empty)

    def lookup(self, points, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Attribute ``name`` of the voxels containing world ``points`` (..., 3): ``(values (..., C), found (...))``.

        Unobserved voxels give ``empty`` and ``found = False``.
        """
        p = as_tensor(points, device=self.device, dtype=torch.float32)
        shape = p.shape[:-1]
        keys = self._encode(self._coords(p.reshape(-1, 3)))
        rows, found = self._lookup(keys)
        vals = self.get(name)
        out = vals[rows] if self._n else torch.zeros((keys.shape[0], vals.shape[1]), dtype=vals.dtype, device=self.device)
        spec = self.attributes[name]
        out = torch.where(found[:, None], out, torch.as_tensor(spec.empty, dtype=out.dtype, device=self.device))
        return out.reshape(*shape, -1), found.reshape(shape)

    def tokens(
        self, max_tokens: int | None = None, around=None, attribute: str = "feature", pad: bool = False
    ) -> MemoryTokens:
        """Memory tokens (§3.2: non-empty voxels, feature + 3D sinusoidal position embedding).

        All voxels in ascending key order when they fit in ``max_tokens`` (or it is None); otherwise
        the ``max_tokens`` voxels whose centres are nearest to the camera centre of ``around`` (a 4x4
        camera-to-world pose), nearest first, so the cost stays bounded (the paper leaves "the local
        map around the camera" open). Without ``around`` the most recently seen voxels are kept.
        ``pad=True`` pads to ``max_tokens`` rows with ``mask=False``.
        """
        rows = self._srows  # storage rows in ascending key order
        centers_all = self.centers()
        if max_tokens is not None and self._n > max_tokens:
            if around is not None:
                T = as_tensor(around, device=self.device, dtype=torch.float32).reshape(4, 4)
                d = (centers_all[rows] - T[:3, 3]).square().sum(dim=1)
                # stable tie-break by key order: argsort is stable on the key-sorted list
                idx = torch.sort(d, stable=True).indices[:max_tokens]
            elif "last_seen" in self._store and self._store["last_seen"] is not None:
                ls = self.get("last_seen")[rows, 0]
                idx = torch.sort(-ls, stable=True).indices[:max_tokens]
                idx = idx.sort().values
            else:
                idx = torch.arange(max_tokens, device=self.device)
            rows = rows[idx]
        centers = centers_all[rows]
        feats = self.get(attribute)[rows].float() if attribute in self._store else torch.zeros(
            (rows.shape[0], 0), device=self.device
        )
        cfg = self.config
        pos = sinusoidal_position_embedding(centers, cfg.pos_dim, cfg.pos_min_wavelength, cfg.pos_max_wavelength)
        mask = torch.ones(rows.shape[0], dtype=torch.bool, device=self.device)
        if pad and max_tokens is not None and rows.shape[0] < max_tokens:
            p = max_tokens - rows.shape[0]
            centers = F.pad(centers, (0, 0, 0, p))
            feats = F.pad(feats, (0, 0, 0, p))
            pos = F.pad(pos, (0, 0, 0, p))
            mask = F.pad(mask, (0, p), value=False)
        return MemoryTokens(centers, feats, pos, mask)
    # ---- rendering -----------------------------------------------------------------------------

    def render(
        self, K, cam_to_world, height: int, width: int, attribute: str = "color", points: torch.Tensor | None = None
    ) -> RenderOutput:
        """Render attribute ``attribute`` and depth of the map seen from a camera (or a batch).

        Soft z-buffered splatting: each voxel's surface point (``point_attribute`` mean, else the
        centre) is projected and covers a square of ``splat_scale`` times its projected voxel size (at
        least the nearest pixel, at most ``2 * max_splat_px + 1`` pixels wide), so adjacent voxels of
        a surface leave no holes. Per pixel, the splats within ``blend_tol`` of the nearest one are
        blended with tent weights (distance of the projected point to the pixel centre), which
        removes the near-edge bias of a hard z-buffer on surfaces seen at grazing angles.
        ``K`` (3, 3) or (B, 3, 3); ``cam_to_world`` (4, 4) or (B, 4, 4).
        """
        Kb, Tb, batched = _batched_camera(K, cam_to_world, self.device)
        if self.device.type == "cpu":
            index = self._render_index(points)
            vals = self._cached(f"attr:{attribute}", lambda: self.get(attribute).float())
            return render_numpy(index, vals, Kb, Tb, batched, height, width, self.config)
        P = self._cached("points", lambda: self.points().float().contiguous()) if points is None else points
        vals = self._cached(f"attr:{attribute}", lambda: self.get(attribute).float())
        return render_torch(P, vals, Kb, Tb, batched, height, width, self.config, self.device)

    # the render index is rebuilt (a sort of every point) only when the map has grown by this
    # fraction since the last build; in between, new voxels get blocks of their own
    # (_BlockIndex.extended), so rendering while fusing frame by frame costs a gather, not a sort
    RENDER_INDEX_REBUILD = 0.25

    def _render_index(self, points: torch.Tensor | None) -> "_BlockIndex":
        """Points grouped into 1 m blocks with bounding spheres (cached until the map changes)."""
        if points is not None:
            return _BlockIndex(points.detach().float().cpu().numpy())
        return self._cached("render_index", self._grown_render_index)

    def _grown_render_index(self) -> "_BlockIndex":
        P = self.points().float().numpy()
        base = self._render_base
        if base is None or P.shape[0] < base.n or P.shape[0] - base.n > self.RENDER_INDEX_REBUILD * base.n:
            pad = float(np.linalg.norm(self.config.voxel_size))  # mean points stay inside their voxel
            self._render_base = base = _BlockIndex(P, pad=pad)
            return base
        return base.extended(P)

    def _splat_np(self, index: _BlockIndex, K: np.ndarray, T: np.ndarray, H: int, W: int):
        """:func:`~pewm.memory.rendering.splat_numpy` with this map's config."""
        return splat_numpy(index, K, T, H, W, self.config)

    def _splat(self, P: torch.Tensor, K: torch.Tensor, T: torch.Tensor, H: int, W: int):
        """:func:`~pewm.memory.rendering.splat_torch` (soft z-buffer splat of points ``P``) with this map's config."""
        return splat_torch(P, K, T, H, W, self.config, self.device)

    # ---- persistence ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of the stored voxels (storage order), CPU, contiguous."""
        out = {"keys": self.keys.detach().cpu().contiguous()}
        for name, t in self._store.items():
            if t is not None:
                out[f"attr.{name}"] = t[: self._n].detach().cpu().contiguous()
        out["frames_integrated"] = torch.tensor([self.frames_integrated], dtype=torch.int64)
        return out

    def _meta(self) -> dict[str, str]:
        return {
            "format": "pewm.voxel_map/1",
            "config": json.dumps(self.config.to_dict()),
            "channels": json.dumps(self._channels),
        }

    def save(self, path) -> Path:
        """Save to ``.safetensors`` (default) or ``.npz``; :meth:`load` round-trips exactly."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict()
        if path.suffix == ".npz":
            np.savez(path, **{k: v.numpy() for k, v in sd.items()}, __meta__=np.array(json.dumps(self._meta())))
        else:
            from safetensors.torch import save_file

            save_file(sd, str(path), metadata=self._meta())
        return path

    @classmethod
    def load(cls, path, device: torch.device | str = "cpu") -> "VoxelMap":
        """Load a map written by :meth:`save`."""
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path) as z:
                meta = json.loads(str(z["__meta__"]))
                sd = {k: torch.from_numpy(z[k]) for k in z.files if k != "__meta__"}
        else:
            from safetensors import safe_open

            sd = {}
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
                for k in f.keys():
                    sd[k] = f.get_tensor(k)
        if meta.get("format") != "pewm.voxel_map/1":
            raise ValueError(f"{path} is not a pewm voxel map (format {meta.get('format')!r})")
        m = cls(VoxelMapConfig.from_dict(json.loads(meta["config"])), device=device)
        m.load_state_dict(sd, channels=json.loads(meta["channels"]))
        return m

    def load_state_dict(self, sd: dict[str, torch.Tensor], channels: dict | None = None) -> None:
        self.clear()
        keys = sd["keys"].to(self.device)
        n = keys.shape[0]
        self._keys = keys.clone()
        self._n = n
        order = torch.sort(keys).indices if n else keys
        self._skeys, self._srows = keys[order], order
        for name in self._store:
            t = sd.get(f"attr.{name}")
            if t is not None:
                self._store[name] = t.to(self.device).clone()
                spec = self.attributes[name]
                self._channels[name] = t.shape[1] - REDUCTIONS[spec.reduction].extra_channels
        if channels:
            for k, c in channels.items():
                if self._channels.get(k) is None:
                    self._channels[k] = c
        if "frames_integrated" in sd:
            self.frames_integrated = int(sd["frames_integrated"][0])

    def export_ply(self, path, attribute: str = "color") -> Path:
        """Write the voxels as a binary PLY point cloud (surface points + RGB), viewable in any 3D viewer."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        xyz = self.points().float().cpu().numpy()
        if attribute in self._store and self._store[attribute] is not None and self.get(attribute).shape[1] >= 3:
            rgb = (self.get(attribute)[:, :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        else:
            rgb = np.full((len(xyz), 3), 200, dtype=np.uint8)
        rec = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
        rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        rec["r"], rec["g"], rec["b"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        header = (
            "ply\nformat binary_little_endian 1.0\ncomment pewm voxel map\n"
            f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
        )
        with open(path, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(rec.tobytes())
        return path
