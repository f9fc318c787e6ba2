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
Storage is PyTorch on the map's ``device`` (CPU or CUDA). On CUDA everything is torch ops
(:mod:`~pewm.memory.voxel_backend_torch`); on CPU the hot paths (integration, insertion of new keys,
rendering) run in NumPy on views of the same storage (:mod:`~pewm.memory.voxel_backend_numpy`, whose
docstring gives the measurements behind that choice), with the same results.

This module holds :class:`VoxelMap` (storage, integration, lookup, tokens, persistence) and
dispatches its hot paths to the backend of its device; :class:`VoxelMapConfig` lives in
:mod:`~pewm.memory.voxel_config`, and the pieces the map builds on in :mod:`~pewm.memory.reductions`,
:mod:`~pewm.memory.attributes`, :mod:`~pewm.memory.tokens`, :mod:`~pewm.memory.rendering` (splatting)
and the private ``_grouping`` / ``_points`` (CPU grouping by voxel, per-batch unprojection). Every name
they define that this module used to define is re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pewm.atomic import atomic_write, atomic_write_safetensors
from pewm.memory import voxel_backend_numpy, voxel_backend_torch
from pewm.memory._points import _PointBatch
from pewm.memory._util import as_tensor
from pewm.memory.attributes import BUILTIN_SOURCES, AttributeSpec, feature_attributes, surface_attributes
from pewm.memory.reductions import REDUCTIONS, Reduction, register_reduction
from pewm.memory.rendering import RenderOutput, _batched_camera, _BlockIndex
from pewm.memory.tokens import MemoryTokens, sinusoidal_position_embedding
from pewm.memory.voxel_backend_torch import decode_keys, encode_keys, lookup_rows, voxel_coords
from pewm.memory.voxel_config import VoxelMapConfig

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


def _backend(device: torch.device):
    """The module implementing a map's hot paths on ``device``: NumPy on CPU, torch elsewhere."""
    return voxel_backend_numpy if device.type == "cpu" else voxel_backend_torch


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

    def voxel_keys(self, points) -> torch.Tensor:
        """int64 keys of the voxels containing world ``points`` (N, 3)."""
        return encode_keys(voxel_coords(as_tensor(points, device=self.device, dtype=torch.float32), self.config))

    @property
    def keys(self) -> torch.Tensor:
        """Keys of the stored voxels, in storage order (V,)."""
        return self._keys[: self._n]

    def coords(self) -> torch.Tensor:
        """Integer voxel coordinates (V, 3), storage order."""
        return decode_keys(self.keys)

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

    # ---- storage -------------------------------------------------------------------------------

    def _ensure_capacity(self, n: int) -> None:
        cap = self._keys.shape[0]
        if n <= cap:
            return
        new_cap = max(n, int(cap * 1.5) + 1024)
        self._keys = _backend(self.device).grown_keys(self._keys, new_cap, self.device)
        for name, t in self._store.items():
            if t is not None:
                self._store[name] = self._grow(name, t, new_cap)

    def _grow(self, name: str, t: torch.Tensor, cap: int) -> torch.Tensor:
        red = REDUCTIONS[self.attributes[name].reduction]
        return _backend(t.device).grown_rows(t, cap, red.init(t.dtype), self.device)

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
        return _backend(self.device).fuse(self, batch, steps, features, extra)

    def _fuse_cpu(self, batch: "_PointBatch", steps: torch.Tensor, features, extra) -> int:
        """:func:`~pewm.memory.voxel_backend_numpy.fuse` (NumPy, CPU) on this map."""
        return voxel_backend_numpy.fuse(self, batch, steps, features, extra)

    def _fuse_torch(self, batch: "_PointBatch", steps: torch.Tensor, features, extra) -> int:
        """:func:`~pewm.memory.voxel_backend_torch.fuse` (torch, any device) on this map."""
        return voxel_backend_torch.fuse(self, batch, steps, features, extra)

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
        keys = encode_keys(voxel_coords(p.reshape(-1, 3), self.config))
        rows, found = lookup_rows(self, keys)
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
        return _backend(self.device).render(self, Kb, Tb, batched, height, width, attribute, points)

    # the render index is rebuilt (a sort of every point) only when the map has grown by this
    # fraction since the last build; in between, new voxels get blocks of their own
    # (_BlockIndex.extended), so rendering while fusing frame by frame costs a gather, not a sort
    RENDER_INDEX_REBUILD = 0.25

    def _render_index(self, points: torch.Tensor | None) -> _BlockIndex:
        """:func:`~pewm.memory.voxel_backend_numpy.render_index` of this map (CPU)."""
        return voxel_backend_numpy.render_index(self, points)

    def _splat_np(self, index: _BlockIndex, K: np.ndarray, T: np.ndarray, H: int, W: int):
        """:func:`~pewm.memory.rendering.splat_numpy` with this map's config."""
        return voxel_backend_numpy.splat(self, index, K, T, H, W)

    def _splat(self, P: torch.Tensor, K: torch.Tensor, T: torch.Tensor, H: int, W: int):
        """:func:`~pewm.memory.rendering.splat_torch` (soft z-buffer splat of points ``P``) with this map's config."""
        return voxel_backend_torch.splat(self, P, K, T, H, W)

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
            with atomic_write(path) as f:
                np.savez(f, **{k: v.numpy() for k, v in sd.items()}, __meta__=np.array(json.dumps(self._meta())))
        else:
            atomic_write_safetensors(path, sd, metadata=self._meta())
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
