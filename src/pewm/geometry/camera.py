"""Pinhole intrinsics.

Pixel coordinates follow OpenCV: pixel ``(row, col)`` has its centre at ``(u, v) = (col, row)``,
so a principal point in the middle of a ``W``-wide image is ``cx = (W - 1) / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera intrinsics for an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Intrinsics: width and height must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"Intrinsics: focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 matrix ``K`` (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.height / (2.0 * self.fy)))

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    @classmethod
    def from_matrix(cls, K: np.ndarray, width: int, height: int) -> "Intrinsics":
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"Intrinsics.from_matrix: K must be 3x3, got shape {K.shape}")
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera for an image resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )

    def check_image(self, shape: tuple[int, ...], what: str = "image") -> None:
        """Raise ``ValueError`` unless ``shape`` (``(..., H, W)`` or ``(..., H, W, C)``) matches."""
        dims = tuple(shape)
        ok = (len(dims) >= 2 and dims[-2:] == (self.height, self.width)) or (
            len(dims) >= 3 and dims[-3:-1] == (self.height, self.width)
        )
        if not ok:
            raise ValueError(
                f"{what} has shape {dims}, which does not match the intrinsics' {self.height}x{self.width} (HxW)"
            )

    def to_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict) -> "Intrinsics":
        missing = {"fx", "fy", "cx", "cy", "width", "height"} - set(d)
        if missing:
            raise ValueError(f"Intrinsics: missing field(s) {sorted(missing)}")
        return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), int(d["width"]), int(d["height"]))


def intrinsics_from_fov(width: int, height: int, fov_y_deg: float) -> Intrinsics:
    """Square-pixel intrinsics with vertical field of view ``fov_y_deg`` and a centred principal point.

    This matches MuJoCo's (and OpenGL's) perspective camera, whose ``fovy`` is vertical.
    """
    if not 0.0 < fov_y_deg < 180.0:
        raise ValueError(f"fov_y_deg must be in (0, 180), got {fov_y_deg}")
    f = (height / 2.0) / math.tan(math.radians(fov_y_deg) / 2.0)
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))


def intrinsics_matrix(K, height: int, width: int, what: str = "K") -> np.ndarray:
    """``K`` as a float64 matrix (``(3, 3)`` or batched ``(..., 3, 3)``); an :class:`Intrinsics` must
    be for ``height`` x ``width`` images (the error names ``what`` and suggests ``scaled()``)."""
    if isinstance(K, Intrinsics):
        if (K.height, K.width) != (height, width):
            raise ValueError(
                f"{what}: intrinsics are for {K.height}x{K.width} images (h x w), expected {height}x{width}; "
                "use Intrinsics.scaled()"
            )
        return np.asarray(K.matrix, dtype=np.float64)
    if hasattr(K, "detach"):
        K = K.detach().cpu().numpy()
    return np.asarray(K, dtype=np.float64)
