"""Configuration of a :class:`~pewm.memory.voxel_map.VoxelMap`: grid, declared attributes, tokens, rendering.

Defaults are the paper's DINO-map grid (§3.2: 0.25 m x 0.25 m x 1 m voxels, z up, max-pooled
features); see :mod:`pewm.memory.voxel_map` for the map itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pewm.memory.attributes import AttributeSpec, feature_attributes, surface_attributes

__all__ = ["VoxelMapConfig"]


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
