"""Two voxel maps behind one object: coarse features for memory tokens, fine colour for rendering.

The paper's map (§3.2 "3D feature map") is coarse on purpose (0.25 x 0.25 x 1 m voxels of max-pooled
DINOv2 features) and is never rendered. Rendering the memory back to an image (for a pixel-aligned
memory reader, for visualisation and for tests) needs finer geometry, so :class:`PersistentMap`
fuses every frame into both:

* ``features``: a :class:`~pewm.memory.voxel_map.VoxelMap` with the paper's grid (tokens come from here);
* ``surface``: a 5 cm map of mean colour and mean surface point (:meth:`render` uses this).

:meth:`render_features` joins them: it renders depth from the fine map, unprojects it, and reads the
coarse feature of the voxel each pixel's surface point falls in (pixel-aligned features).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pewm.atomic import atomic_write_safetensors
from pewm.geometry import unproject_depth
from pewm.memory._points import _PointBatch
from pewm.memory._util import as_tensor, rgb_to_bchw_float
from pewm.memory.features import FeatureExtractor
from pewm.memory.rendering import RenderOutput
from pewm.memory.tokens import MemoryTokens
from pewm.memory.voxel_map import VoxelMap, VoxelMapConfig


@dataclass(frozen=True)
class PersistentMapConfig:
    """``features``: the token map (paper grid; feature channels inferred from the extractor);
    ``surface``: the rendering map (None disables rendering)."""

    features: VoxelMapConfig = field(default_factory=lambda: VoxelMapConfig.paper(None))
    surface: VoxelMapConfig | None = field(default_factory=lambda: VoxelMapConfig.surface(0.05))

    def to_dict(self) -> dict:
        return {"features": self.features.to_dict(), "surface": None if self.surface is None else self.surface.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "PersistentMapConfig":
        return cls(
            VoxelMapConfig.from_dict(d["features"]), None if d["surface"] is None else VoxelMapConfig.from_dict(d["surface"])
        )


def subsample_frames(rgb, depth, K, stride: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ``stride``-th pixel of RGB-D frames, starting at ``stride // 2`` (one per cell of a
    ``stride`` grid), with the intrinsics whose rays go exactly through the sampled pixels."""
    d = as_tensor(depth, device=device, dtype=torch.float32)
    if d.ndim == 2:
        d = d[None]
    o = stride // 2
    img = rgb_to_bchw_float(rgb, device=device)
    Kt = as_tensor(K, device=device, dtype=torch.float32).clone()
    Kt[..., 0, 2] = (Kt[..., 0, 2] - o) / stride
    Kt[..., 1, 2] = (Kt[..., 1, 2] - o) / stride
    Kt[..., 0, 0] = Kt[..., 0, 0] / stride
    Kt[..., 1, 1] = Kt[..., 1, 1] / stride
    return img[:, :, o::stride, o::stride].contiguous(), d[:, o::stride, o::stride].contiguous(), Kt


class PersistentMap:
    """The persistent 3D memory: ``integrate`` RGB-D frames, read ``tokens``, ``render`` views.

    ``extractor`` (optional) computes per-pixel features from the RGB when ``integrate`` is not
    given ``features`` (e.g. ``make_extractor("dinov2", weights=...)``). An extractor with
    ``grid_stride > 1`` and a ``grid(images, depth=)`` method (the ``autoencoder`` one) is fused
    at its native grid: one point per cell, at the cell's sampled pixel (:func:`subsample_frames`).
    """

    def __init__(
        self,
        config: PersistentMapConfig | None = None,
        extractor: FeatureExtractor | None = None,
        device: torch.device | str = "cpu",
    ):
        self.config = config or PersistentMapConfig()
        self.device = torch.device(device)
        self.extractor = extractor
        self.features = VoxelMap(self.config.features, device=self.device)
        self.surface = VoxelMap(self.config.surface, device=self.device) if self.config.surface is not None else None

    def __len__(self) -> int:
        """Number of (coarse) feature voxels."""
        return len(self.features)

    def __repr__(self) -> str:
        return f"PersistentMap(features={self.features!r}, surface={self.surface!r})"

    @property
    def maps(self) -> dict[str, VoxelMap]:
        return {"features": self.features, **({"surface": self.surface} if self.surface is not None else {})}

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.maps.values())

    def clear(self) -> None:
        for m in self.maps.values():
            m.clear()

    def to(self, device) -> "PersistentMap":
        self.device = torch.device(device)
        for m in self.maps.values():
            m.to(device)
        if self.extractor is not None and hasattr(self.extractor, "to"):
            self.extractor.to(device)
        return self

    def integrate(self, rgb, depth, K, cam_to_world, features=None, step=None) -> int:
        """Fuse frames into both maps (see :meth:`VoxelMap.integrate`); returns points integrated."""
        if step is None:
            B = 1 if torch.as_tensor(depth).ndim == 2 else len(depth)
            step = torch.arange(self.features.frames_integrated, self.features.frames_integrated + B)
        # unproject once and share the points (and their colours) between both maps
        batch = _PointBatch.make(rgb, depth, K, cam_to_world, step, self.features.config.max_depth, self.device)
        stride = int(getattr(self.extractor, "grid_stride", 1) or 1)
        if features is None and self.extractor is not None and rgb is not None and stride > 1:
            # a grid extractor (e.g. "autoencoder"): one feature per stride x stride cell, fused at
            # the cell's sampled pixel instead of upsampled to every pixel (same voxels, a fraction
            # of the cost; the token voxels are 0.25 m, far larger than a cell)
            grid = self.extractor.grid(rgb, depth=depth)
            f_rgb, f_depth, f_K = subsample_frames(rgb, depth, K, stride, self.device)
            fbatch = _PointBatch.make(f_rgb, f_depth, f_K, cam_to_world, step, self.features.config.max_depth, self.device)
            n = self.features._fuse(fbatch, features=grid)
        else:
            if features is None and self.extractor is not None and rgb is not None:
                if getattr(self.extractor, "uses_depth", False):  # RGB-D extractors
                    features = self.extractor(rgb, depth=depth)
                else:
                    features = self.extractor(rgb)
            n = self.features._fuse(batch, features=features)
        if self.surface is not None:
            if self.surface.config.max_depth != self.features.config.max_depth:
                batch = _PointBatch.make(rgb, depth, K, cam_to_world, step, self.surface.config.max_depth, self.device)
            self.surface._fuse(batch)
        return n

    def tokens(self, max_tokens: int | None = None, around=None, pad: bool = False) -> MemoryTokens:
        """Memory tokens of the feature map (see :meth:`VoxelMap.tokens`)."""
        return self.features.tokens(max_tokens, around=around, pad=pad)

    def render(self, K, cam_to_world, height: int, width: int) -> RenderOutput:
        """RGB (B, 3, H, W), depth and coverage of the fine surface map from any camera."""
        if self.surface is None:
            raise ValueError("this PersistentMap has no surface map (config.surface is None)")
        return self.surface.render(K, cam_to_world, height, width, attribute="color")

    def render_features(self, K, cam_to_world, height: int, width: int) -> RenderOutput:
        """Pixel-aligned map features: ``image`` is (B, C, H, W) coarse-voxel features at each
        pixel's rendered surface point (0 where uncovered); ``mask`` marks pixels with a feature."""
        out = self.render(K, cam_to_world, height, width)
        depth = out.depth if out.depth.ndim == 3 else out.depth[None]
        T = torch.as_tensor(cam_to_world, dtype=torch.float32).reshape(-1, 4, 4).to(self.device)
        Km = torch.as_tensor(K, dtype=torch.float32).reshape(-1, 3, 3).to(self.device).expand(T.shape[0], 3, 3)
        pts = unproject_depth(depth, Km, T)  # (B, H, W, 3)
        feats, found = self.features.lookup(pts, "feature")
        mask = found & (depth > 0)
        feats = (feats.float() * mask[..., None]).permute(0, 3, 1, 2)
        if out.depth.ndim == 2:
            feats, mask = feats[0], mask[0]
        return RenderOutput(feats, out.depth, mask)

    def save(self, path) -> Path:
        """One safetensors file with both maps (prefixes ``features.`` / ``surface.``), written
        atomically and deterministically (:func:`pewm.atomic.atomic_write_safetensors`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors, meta = {}, {"format": "pewm.persistent_map/1", "config": json.dumps(self.config.to_dict())}
        for name, m in self.maps.items():
            tensors.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
            meta[f"{name}.channels"] = json.dumps(m._channels)
        atomic_write_safetensors(path, tensors, metadata=meta)
        return path

    @classmethod
    def load(cls, path, extractor: FeatureExtractor | None = None, device="cpu") -> "PersistentMap":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            sd = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != "pewm.persistent_map/1":
            raise ValueError(f"{path} is not a pewm persistent map (format {meta.get('format')!r})")
        pm = cls(PersistentMapConfig.from_dict(json.loads(meta["config"])), extractor=extractor, device=device)
        for name, m in pm.maps.items():
            part = {k[len(name) + 1 :]: v for k, v in sd.items() if k.startswith(name + ".")}
            m.load_state_dict(part, channels=json.loads(meta[f"{name}.channels"]))
        return pm

    def export_ply(self, path) -> Path:
        """PLY point cloud of the fine surface map (or of the feature map's voxel centres if none)."""
        return (self.surface or self.features).export_ply(path)
