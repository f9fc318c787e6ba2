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
Everything is PyTorch and runs on the map's ``device`` (CPU or CUDA); on CPU, key sorting uses
NumPy's radix sort because ``torch.sort`` on int64 is ~100x slower there.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pewm.geometry import project_points, unproject_depth, valid_depth
from pewm.memory._util import as_tensor, rgb_to_bchw_float, unique_sorted

# --------------------------------------------------------------------------------------------------
# Reductions: how per-point values are pooled into a voxel (within a batch, then with the stored value)
# --------------------------------------------------------------------------------------------------


def _fill_value(kind: str, dtype: torch.dtype) -> float | int:
    if kind == "max":
        return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min
    if kind == "min":
        return math.inf if dtype.is_floating_point else torch.iinfo(dtype).max
    return 0


@dataclass(frozen=True)
class Reduction:
    """A per-voxel pooling rule.

    ``reduce(values (N, C), inv (N,), M, order (N,)) -> buf (M, C + extra)`` pools the points of one
    ``integrate`` call into its ``M`` distinct voxels; ``combine(stored, buf)`` merges that with the
    stored rows; ``read(stored, empty) -> (V, C)`` gives the user-facing value. ``init`` is the
    fill value of a never-updated row (in storage dtype); ``extra_channels`` are hidden bookkeeping
    channels (``mean`` keeps a weight).
    """

    name: str
    reduce: Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    read: Callable[[torch.Tensor, float], torch.Tensor]
    init: Callable[[torch.dtype], float | int]
    extra_channels: int = 0


def _scatter(kind: str) -> Reduction:
    op = {"max": "amax", "min": "amin"}[kind]
    both = torch.maximum if kind == "max" else torch.minimum

    def reduce(vals, inv, M, order):
        buf = torch.full((M, vals.shape[1]), _fill_value(kind, vals.dtype), dtype=vals.dtype, device=vals.device)
        return buf.scatter_reduce_(0, inv[:, None].expand_as(vals), vals, op, include_self=True)

    def read(stored, empty):
        return torch.where(stored == _fill_value(kind, stored.dtype), torch.as_tensor(empty, dtype=stored.dtype), stored)

    return Reduction(kind, reduce, both, read, lambda dt: _fill_value(kind, dt))


def _sum_reduce(vals, inv, M, order):
    return torch.zeros((M, vals.shape[1]), dtype=vals.dtype, device=vals.device).index_add_(0, inv, vals)


def _mean_reduce(vals, inv, M, order):
    w = torch.ones((vals.shape[0], 1), dtype=vals.dtype, device=vals.device)
    return _sum_reduce(torch.cat([vals, w], dim=1), inv, M, order)


def _mean_read(stored, empty):
    s, w = stored[:, :-1], stored[:, -1:]
    out = s / w.clamp_min(1e-12)
    return torch.where(w > 0, out, torch.as_tensor(empty, dtype=out.dtype))


def _last_reduce(vals, inv, M, order):
    winner = torch.full((M,), -1, dtype=torch.int64, device=vals.device)
    winner.scatter_reduce_(0, inv, order, "amax", include_self=True)
    sel = order == winner[inv]
    buf = torch.zeros((M, vals.shape[1]), dtype=vals.dtype, device=vals.device)
    buf[inv[sel]] = vals[sel]
    return buf


REDUCTIONS: dict[str, Reduction] = {
    "max": _scatter("max"),
    "min": _scatter("min"),
    "sum": Reduction("sum", _sum_reduce, torch.add, lambda s, e: s, lambda dt: 0),
    # stored as (running sum, weight); read divides; exact up to float summation order
    "mean": Reduction("mean", _mean_reduce, torch.add, _mean_read, lambda dt: 0, extra_channels=1),
    # value of the most recent point: a later integrate() call wins, within a call the later frame
    "last": Reduction("last", _last_reduce, lambda old, new: new, lambda s, e: s, lambda dt: 0),
}


def register_reduction(reduction: Reduction, overwrite: bool = False) -> None:
    """Add a reduction to :data:`REDUCTIONS` so attributes can name it."""
    if reduction.name in REDUCTIONS and not overwrite:
        raise ValueError(f"reduction {reduction.name!r} already registered")
    REDUCTIONS[reduction.name] = reduction


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------

#: Per-point sources that ``integrate`` computes itself; any other source name is read from its
#: ``extra`` dict (``(B, C, H, W)`` per-pixel values).
BUILTIN_SOURCES = ("color", "feature", "xyz", "one", "step")


@dataclass(frozen=True)
class AttributeSpec:
    """A declared per-voxel attribute.

    ``channels=None`` is inferred from the first values integrated (e.g. the feature extractor's
    ``dim``). ``source`` names the per-point values it pools (default: ``name``): ``color`` (RGB in
    [0, 1]), ``feature`` (the ``features`` argument), ``xyz`` (the world point), ``one`` (1 per point,
    for counts), ``step`` (the frame's step), or a key of ``integrate(extra=...)``. ``empty`` is what
    never-updated voxels read as.
    """

    name: str
    channels: int | None
    reduction: str
    source: str | None = None
    dtype: str = "float32"
    empty: float = 0.0

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"attribute {self.name!r}: unknown reduction {self.reduction!r}; known: {sorted(REDUCTIONS)}")
        if self.channels is not None and self.channels <= 0:
            raise ValueError(f"attribute {self.name!r}: channels must be positive or None")
        if not hasattr(torch, self.dtype) or not isinstance(getattr(torch, self.dtype), torch.dtype):
            raise ValueError(f"attribute {self.name!r}: unknown dtype {self.dtype!r}")

    @property
    def src(self) -> str:
        return self.source or self.name

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def feature_attributes(feature_dim: int | None = None) -> tuple[AttributeSpec, ...]:
    """The paper's DINO-map attributes: max-pooled ``feature`` plus ``color`` (mean), ``count``, ``last_seen``."""
    return (
        AttributeSpec("feature", feature_dim, "max"),
        AttributeSpec("color", 3, "mean"),
        AttributeSpec("count", 1, "sum", source="one", dtype="int32"),
        AttributeSpec("last_seen", 1, "max", source="step", dtype="int64", empty=-1),
    )


def surface_attributes() -> tuple[AttributeSpec, ...]:
    """Attributes of the fine rendering map: mean ``color``, mean surface ``point``, ``count``, ``last_seen``."""
    return (
        AttributeSpec("color", 3, "mean"),
        AttributeSpec("point", 3, "mean", source="xyz"),
        AttributeSpec("count", 1, "sum", source="one", dtype="int32"),
        AttributeSpec("last_seen", 1, "max", source="step", dtype="int64", empty=-1),
    )


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
# Outputs
# --------------------------------------------------------------------------------------------------


@dataclass
class MemoryTokens:
    """Memory tokens of a map: voxel ``centers`` (N, 3), ``features`` (N, C), ``pos_emb`` (N, D).

    ``mask`` (N,) is True for real tokens (False for padding when ``pad=True``). ``as_tensor()``
    concatenates ``[features, pos_emb]`` as in the paper ("feature concatenated with a 3D sinusoidal
    absolute position embedding").
    """

    centers: torch.Tensor
    features: torch.Tensor
    pos_emb: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    def as_tensor(self) -> torch.Tensor:
        return torch.cat([self.features, self.pos_emb.to(self.features.dtype)], dim=-1)


@dataclass
class RenderOutput:
    """A rendered view: ``image`` (B, C, H, W) float, ``depth`` (B, H, W) metres (0 where uncovered),
    ``mask`` (B, H, W) bool coverage. Unbatched calls drop the B axis."""

    image: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def sinusoidal_position_embedding(
    xyz: torch.Tensor, dim: int = 96, min_wavelength: float = 0.5, max_wavelength: float = 100.0
) -> torch.Tensor:
    """3D sinusoidal absolute position embedding ``(..., dim)`` of world points ``(..., 3)`` in metres.

    Each axis gets ``dim / 3`` channels: sines and cosines at ``dim / 6`` wavelengths spaced
    geometrically from ``min_wavelength`` to ``max_wavelength`` (metres). Layout ``[x_sin, x_cos,
    y_sin, y_cos, z_sin, z_cos]``.
    """
    if dim % 6:
        raise ValueError(f"dim must be a multiple of 6, got {dim}")
    n = dim // 6
    if n == 1:
        wl = torch.tensor([min_wavelength], device=xyz.device, dtype=torch.float32)
    else:
        wl = min_wavelength * (max_wavelength / min_wavelength) ** (
            torch.arange(n, device=xyz.device, dtype=torch.float32) / (n - 1)
        )
    ang = xyz.float()[..., :, None] * (2 * math.pi / wl)  # (..., 3, n)
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)


# --------------------------------------------------------------------------------------------------
# The map
# --------------------------------------------------------------------------------------------------

_BITS = 21
_OFF = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def _batched_camera(K, cam_to_world, device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    K = as_tensor(K, device=device, dtype=torch.float32)
    T = as_tensor(cam_to_world, device=device, dtype=torch.float32)
    batched = T.ndim == 3
    T = T.reshape(-1, 4, 4)
    K = K.reshape(-1, 3, 3).expand(T.shape[0], 3, 3)
    return K, T, batched


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

    def _ensure_capacity(self, n: int) -> None:
        cap = self._keys.shape[0]
        if n <= cap:
            return
        new_cap = max(n, int(cap * 1.5) + 1024)
        keys = torch.empty(new_cap, dtype=torch.int64, device=self.device)
        keys[:cap] = self._keys
        self._keys = keys
        for name, t in self._store.items():
            if t is not None:
                self._store[name] = self._grow(name, t, new_cap)

    def _grow(self, name: str, t: torch.Tensor, cap: int) -> torch.Tensor:
        spec = self.attributes[name]
        red = REDUCTIONS[spec.reduction]
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
        dev = self.device
        depth = as_tensor(depth, device=dev, dtype=torch.float32)
        if depth.ndim == 2:
            depth = depth[None]
        B, H, W = depth.shape
        T = as_tensor(cam_to_world, device=dev, dtype=torch.float32).reshape(-1, 4, 4)
        Km = as_tensor(K, device=dev, dtype=torch.float32).reshape(-1, 3, 3)
        if T.shape[0] != B or Km.shape[0] not in (1, B):
            raise ValueError(f"integrate: {B} depth maps but {T.shape[0]} poses and {Km.shape[0]} intrinsics")
        valid = valid_depth(depth, self.config.max_depth)
        sel = valid.reshape(-1).nonzero().squeeze(1)  # flat (b, h, w) indices of valid pixels
        pts = unproject_depth(torch.nan_to_num(depth, nan=0.0, posinf=0.0), Km if Km.shape[0] == B else Km[0], T)
        pts = pts.reshape(-1, 3)[sel]
        if self.config.bounds is not None:
            lo = torch.tensor(self.config.bounds[0], device=dev)
            hi = torch.tensor(self.config.bounds[1], device=dev)
            inb = ((pts >= lo) & (pts < hi)).all(dim=1)
            sel, pts = sel[inb], pts[inb]
        ijk = self._coords(pts)
        ok = (ijk.abs() < _OFF).all(dim=1)
        if not bool(ok.all()):
            sel, pts, ijk = sel[ok], pts[ok], ijk[ok]
        if step is None:
            steps = torch.arange(self.frames_integrated, self.frames_integrated + B, device=dev)
        else:
            steps = as_tensor(step, device=dev, dtype=torch.int64).reshape(-1).expand(B)
        self.frames_integrated += B
        N = sel.shape[0]
        if N == 0:
            return 0

        keys = self._encode(ijk)
        ukeys = unique_sorted(keys)
        inv = torch.searchsorted(ukeys, keys)
        M = ukeys.shape[0]
        rows = self._rows_for(ukeys)

        cache: dict[str, torch.Tensor] = {}

        def source(name: str) -> torch.Tensor | None:
            if name in cache:
                return cache[name]
            if name == "xyz":
                v = pts
            elif name == "one":
                v = torch.ones((N, 1), device=dev)
            elif name == "step":
                v = steps[sel // (H * W)][:, None]
            elif name == "color":
                if rgb is None:
                    return None
                img = rgb_to_bchw_float(rgb, device=dev)
                if img.shape[0] != B or img.shape[-2:] != (H, W):
                    raise ValueError(f"integrate: rgb shape {tuple(img.shape)} does not match depth {(B, H, W)}")
                v = img.permute(0, 2, 3, 1).reshape(-1, 3)[sel]
            else:
                x = features if name == "feature" else (extra or {}).get(name)
                if x is None:
                    return None
                x = as_tensor(x, device=dev)
                if x.ndim == 3:
                    x = x[None]
                if x.shape[0] != B:
                    raise ValueError(f"integrate: {name!r} has batch {x.shape[0]}, expected {B}")
                if x.shape[-2:] != (H, W):
                    x = F.interpolate(x.float(), size=(H, W), mode="bilinear", align_corners=False)
                v = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])[sel]
            cache[name] = v
            return v

        self._version += 1
        order = torch.arange(N, device=dev)
        for spec in self.config.attributes:
            vals = source(spec.src)
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
        P = self._cached("points", lambda: self.points().float().contiguous()) if points is None else points
        vals = self._cached(f"attr:{attribute}", lambda: self.get(attribute).float())
        B, C = Tb.shape[0], vals.shape[1]
        img = torch.zeros((B, C, height * width), device=self.device)
        dep = torch.zeros((B, height * width), device=self.device)
        msk = torch.zeros((B, height * width), dtype=torch.bool, device=self.device)
        for b in range(B):
            sp = self._splat(P, Kb[b], Tb[b], height, width)
            if sp is None:
                continue
            pix, rows, w, depth, covered = sp
            img[b].index_add_(1, pix, vals[rows].T * w)
            dep[b] = depth
            msk[b] = covered
        img, dep, msk = img.view(B, C, height, width), dep.view(B, height, width), msk.view(B, height, width)
        if not batched:
            img, dep, msk = img[0], dep[0], msk[0]
        return RenderOutput(img, dep, msk)

    def _splat(self, P: torch.Tensor, K: torch.Tensor, T: torch.Tensor, H: int, W: int):
        """Soft z-buffer splat of points ``P`` (V, 3).

        Returns ``(pix, rows, w, depth, covered)``: for each kept (pixel, voxel) pair its flat pixel
        index, voxel storage row and normalised blend weight, plus the (H*W,) depth and coverage.
        """
        cfg = self.config
        if P.shape[0] == 0:
            return None
        # same maths as pewm.geometry.project_points (R^T (p - t), then K), as one addmm: the batched
        # einsum there is ~5x slower for a single camera and this is the hot loop of rendering
        R, t = T[:3, :3], T[:3, 3]
        pc = torch.addmm(-(t @ R), P, R)
        fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
        s = max(cfg.voxel_size) * cfg.splat_scale * 0.5
        z = pc[:, 2]
        # cull with a conservative cone test before the per-point divisions
        xlim = (max(cx, W - 1 - cx) + 0.5 + cfg.max_splat_px) / fx
        ylim = (max(cy, H - 1 - cy) + 0.5 + cfg.max_splat_px) / fy
        vis = (z > cfg.near) & (pc[:, 0].abs() <= xlim * z + s) & (pc[:, 1].abs() <= ylim * z + s)
        idx = vis.nonzero().squeeze(1)
        if idx.numel() == 0:
            return None
        pc = pc[idx]
        z = pc[:, 2]
        u = fx * pc[:, 0] / z + cx
        v = fy * pc[:, 1] / z + cy
        hx = (fx * s / z).clamp(0.5, cfg.max_splat_px)
        hy = (fy * s / z).clamp(0.5, cfg.max_splat_px)
        u0, v0 = torch.ceil(u - hx), torch.ceil(v - hy)
        nu = (torch.floor(u + hx) - u0 + 1).clamp_min(1)
        nv = (torch.floor(v + hy) - v0 + 1).clamp_min(1)
        S_u, S_v = int(nu.max()), int(nv.max())
        ox = torch.arange(S_u, device=self.device, dtype=u.dtype).repeat(S_v)
        oy = torch.arange(S_v, device=self.device, dtype=u.dtype).repeat_interleave(S_u)
        j, o = ((ox < nu[:, None]) & (oy < nv[:, None])).nonzero(as_tuple=True)
        # one gather of every per-voxel quantity the candidates need (gathers dominate the cost)
        a = torch.stack([u0, v0, u, v, 1.0 / (hx + 0.5), 1.0 / (hy + 0.5), z], dim=1)[j]
        col, row = a[:, 0] + ox[o], a[:, 1] + oy[o]
        ins = ((col >= 0) & (col < W) & (row >= 0) & (row < H)).nonzero().squeeze(1)
        if ins.numel() == 0:
            return None
        a, j, col, row = a[ins], j[ins], col[ins], row[ins]
        w = (1 - (col - a[:, 2]).abs() * a[:, 4]).clamp_min(0.05) * (1 - (row - a[:, 3]).abs() * a[:, 5]).clamp_min(0.05)
        pix = (row * W + col).long()
        zc = a[:, 6]
        zmin = torch.full((H * W,), math.inf, device=self.device).scatter_reduce_(0, pix, zc, "amin")
        zp = zmin[pix]
        keep = (zc <= zp + cfg.blend_tol_abs + cfg.blend_tol_rel * zp).nonzero().squeeze(1)
        pix, j, w, zc = pix[keep], j[keep], w[keep], zc[keep]
        wsum = torch.zeros(H * W, device=self.device).index_add_(0, pix, w)
        covered = wsum > 0
        w = w / wsum[pix]
        depth = torch.zeros(H * W, device=self.device).index_add_(0, pix, w * zc)
        return pix, idx[j], w, depth, covered

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
