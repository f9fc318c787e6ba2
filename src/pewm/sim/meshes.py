"""Triangle meshes with explicit texture coordinates, and a texture atlas, for the renderer.

Why: MuJoCo's classic renderer projects 2D textures onto primitives along z only (walls come out
smeared), and software OpenGL pays a fixed cost per drawn geom (about 30 us on llvmpipe). So the
renderer draws each room as three meshes: floor and walls with world-scaled tiling textures, and
everything else (ceiling, furniture, decorations) merged into one mesh whose faces pick solid
colours or fitted images from a per-room atlas texture.
"""

from __future__ import annotations

import math

import numpy as np

BBox = tuple[float, float, float, float, float, float]  # (x0, y0, z0, x1, y1, z1)


def _box_quads(b: BBox):
    x0, y0, z0, x1, y1, z1 = b
    return (  # corners counter-clockwise seen from outside, and the two axes spanning the face
        (((x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)), (1, 2)),
        (((x0, y1, z0), (x0, y0, z0), (x0, y0, z1), (x0, y1, z1)), (1, 2)),
        (((x1, y1, z0), (x0, y1, z0), (x0, y1, z1), (x1, y1, z1)), (0, 2)),
        (((x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)), (0, 2)),
        (((x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)), (0, 1)),
        (((x0, y1, z0), (x1, y1, z0), (x1, y0, z0), (x0, y0, z0)), (0, 1)),
    )


class MeshBuilder:
    """Accumulates triangles with per-vertex texture coordinates."""

    def __init__(self) -> None:
        self.verts: list[tuple[float, float, float]] = []
        self.uvs: list[tuple[float, float]] = []
        self.faces: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self.faces)

    def add_box_world(self, b: BBox, texture_metres: float) -> None:
        """A box whose texture coordinates are world coordinates / ``texture_metres`` (seamless tiling)."""
        for corners, (a, c) in _box_quads(b):
            k = len(self.verts)
            for p in corners:
                self.verts.append(p)
                self.uvs.append((p[a] / texture_metres, p[c] / texture_metres))
            self.faces += [(k, k + 1, k + 2), (k, k + 2, k + 3)]

    def add_box_uv(self, b: BBox, uv_rect: tuple[float, float, float, float]) -> None:
        """A box; every face maps onto ``uv_rect = (u0, v0, u1, v1)`` (a point for a solid colour)."""
        u0, v0, u1, v1 = uv_rect
        for corners, (a, c) in _box_quads(b):
            k = len(self.verts)
            lo = [min(p[i] for p in corners) for i in range(3)]
            hi = [max(p[i] for p in corners) for i in range(3)]
            for p in corners:
                s = (p[a] - lo[a]) / max(hi[a] - lo[a], 1e-9)
                t = (p[c] - lo[c]) / max(hi[c] - lo[c], 1e-9)
                self.verts.append(p)
                self.uvs.append((u0 + s * (u1 - u0), v0 + t * (v1 - v0)))
            self.faces += [(k, k + 1, k + 2), (k, k + 2, k + 3)]

    def _add_local(self, pts: np.ndarray, tris: list[tuple[int, int, int]], uv: tuple[float, float]) -> None:
        k = len(self.verts)
        self.verts += [tuple(float(v) for v in p) for p in pts]
        self.uvs += [uv] * len(pts)
        self.faces += [(a + k, b + k, c + k) for a, b, c in tris]

    def add_cylinder(self, pos, radius: float, half_length: float, axis: str, uv: tuple[float, float],
                     segments: int = 12) -> None:
        """A closed cylinder along world ``axis`` (``"x"``, ``"y"`` or ``"z"``) in one colour."""
        th = 2 * math.pi * np.arange(segments) / segments
        ring = np.stack([radius * np.cos(th), radius * np.sin(th)], 1)
        bot = np.c_[ring, np.full(segments, -half_length)]
        top = np.c_[ring, np.full(segments, half_length)]
        # side (shared ring vertices: smooth), caps (own vertices: sharp rim)
        pts = np.concatenate([bot, top, bot, top, [[0, 0, -half_length], [0, 0, half_length]]])
        n = segments
        tris = []
        for i in range(n):
            j = (i + 1) % n
            tris += [(i, j, n + j), (i, n + j, n + i)]
            tris += [(4 * n + 1, 3 * n + i, 3 * n + j), (4 * n, 2 * n + j, 2 * n + i)]
        self._add_local(_orient(pts, axis) + np.asarray(pos, dtype=np.float64), tris, uv)

    def add_sphere(self, pos, radius: float, uv: tuple[float, float], stacks: int = 6, slices: int = 10) -> None:
        """A UV sphere in one colour."""
        pts = [(0.0, 0.0, -radius)]
        for s in range(1, stacks):
            phi = -math.pi / 2 + math.pi * s / stacks
            for i in range(slices):
                th = 2 * math.pi * i / slices
                pts.append((radius * math.cos(phi) * math.cos(th), radius * math.cos(phi) * math.sin(th), radius * math.sin(phi)))
        pts.append((0.0, 0.0, radius))
        ring = lambda s, i: 1 + (s - 1) * slices + (i % slices)  # noqa: E731
        tris = []
        top = len(pts) - 1
        for i in range(slices):
            tris.append((0, ring(1, i + 1), ring(1, i)))
            tris.append((top, ring(stacks - 1, i), ring(stacks - 1, i + 1)))
            for s in range(1, stacks - 1):
                tris += [(ring(s, i), ring(s, i + 1), ring(s + 1, i + 1)), (ring(s, i), ring(s + 1, i + 1), ring(s + 1, i))]
        self._add_local(np.asarray(pts) + np.asarray(pos, dtype=np.float64), tris, uv)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(verts (N, 3) float64, faces (M, 3) int32, uvs (N, 2) float64)``."""
        uv = np.asarray(self.uvs, dtype=np.float64).reshape(-1, 2)
        return (np.asarray(self.verts, dtype=np.float64).reshape(-1, 3), np.asarray(self.faces, dtype=np.int32).reshape(-1, 3), uv)


def _orient(pts: np.ndarray, axis: str) -> np.ndarray:
    """Rotate points built along z so that z maps to ``axis`` (cyclic permutations keep handedness)."""
    if axis == "z":
        return pts
    if axis == "x":
        return pts[:, [2, 0, 1]]
    if axis == "y":
        return pts[:, [1, 2, 0]]
    raise ValueError(f"unknown cylinder axis {axis!r}; valid: 'x', 'y', 'z'")


class Atlas:
    """Packs solid colours (4x4 texel cells) and images (``image_size`` cells) into one texture.

    Register everything first (:meth:`color`, :meth:`image`), then ask for texture coordinates
    (:meth:`color_uv`, :meth:`image_rect`, normalised to ``[0, 1]``) and the texture (:meth:`build`).
    Row 0 of the built texture is ``v = 0`` (OpenGL's convention), so images are stored upside down.
    """

    WIDTH = 256
    CELL = 4

    def __init__(self, image_size: int = 64) -> None:
        if self.WIDTH % image_size:
            raise ValueError(f"Atlas: image_size must divide {self.WIDTH}, got {image_size}")
        self.image_size = image_size
        self.colors: dict[tuple[int, int, int], int] = {}
        self.images: list[np.ndarray] = []
        self._image_keys: dict[object, int] = {}

    def color(self, rgb) -> int:
        """Register a solid colour (floats in [0, 1]); returns its cell index."""
        key = tuple(int(round(255 * min(1.0, max(0.0, float(c))))) for c in rgb)
        if key not in self.colors:
            self.colors[key] = len(self.colors)  # type: ignore[index]
        return self.colors[key]  # type: ignore[index]

    def image(self, key, make) -> int:
        """Register an image; ``make()`` builds the ``(S, S, 3)`` uint8 image (top row first)."""
        if key not in self._image_keys:
            img = make()
            if img.shape != (self.image_size, self.image_size, 3):
                raise ValueError(f"Atlas.image: expected {(self.image_size, self.image_size, 3)}, got {img.shape}")
            self._image_keys[key] = len(self.images)
            self.images.append(img)
        return self._image_keys[key]

    def _image_rows(self) -> int:
        per_row = self.WIDTH // self.image_size
        return -(-len(self.images) // per_row) * self.image_size

    def size(self) -> tuple[int, int]:
        """``(width, height)`` in texels."""
        per_row = self.WIDTH // self.CELL
        return self.WIDTH, self._image_rows() + -(-max(1, len(self.colors)) // per_row) * self.CELL

    def color_uv(self, idx: int) -> tuple[float, float]:
        W, H = self.size()
        r, c = divmod(idx, W // self.CELL)
        return ((c + 0.5) * self.CELL / W, (self._image_rows() + (r + 0.5) * self.CELL) / H)

    def image_rect(self, idx: int) -> tuple[float, float, float, float]:
        W, H = self.size()
        S = self.image_size
        r, c = divmod(idx, W // S)
        return ((c * S + 0.5) / W, (r * S + 0.5) / H, ((c + 1) * S - 0.5) / W, ((r + 1) * S - 0.5) / H)

    def build(self) -> np.ndarray:
        """The atlas ``(H, W, 3)`` uint8 in upload order (row 0 = ``v = 0``)."""
        W, H = self.size()
        out = np.zeros((H, W, 3), dtype=np.uint8)
        S = self.image_size
        for k, img in enumerate(self.images):
            r, c = divmod(k, W // S)
            out[r * S:(r + 1) * S, c * S:(c + 1) * S] = img[::-1]
        base = self._image_rows()
        for rgb, k in self.colors.items():
            r, c = divmod(k, W // self.CELL)
            out[base + r * self.CELL: base + (r + 1) * self.CELL, c * self.CELL:(c + 1) * self.CELL] = rgb
        return out
