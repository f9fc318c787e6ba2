"""Declared per-voxel attributes (:class:`AttributeSpec`) and the paper's attribute presets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pewm.memory.reductions import REDUCTIONS

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
