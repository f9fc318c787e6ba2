"""Procedural textures: small numpy images generated from a JSON-friendly spec.

A house stores only :class:`TextureSpec` objects (a few numbers each); the renderer turns them into
images with :func:`make_texture`. Generation is deterministic: the same spec always gives the same
image, so a house that round-trips through JSON renders identically.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

import numpy as np

TEXTURE_KINDS = ("plain", "stripes", "checker", "noise", "planks", "tiles", "dots", "diamonds", "painting")
"""Every kind :func:`make_texture` knows."""

FLOOR_KINDS = ("checker", "planks", "tiles", "noise", "diamonds", "stripes")
WALL_KINDS = ("stripes", "noise", "dots", "plain", "tiles", "checker", "diamonds")


@dataclass(frozen=True)
class TextureSpec:
    """Recipe of a procedural texture.

    ``color1`` is the base colour and ``color2`` the pattern colour (RGB in ``[0, 1]``); ``period``
    is the number of pattern repeats across the image; ``seed`` drives the random parts (noise,
    plank offsets, painting layout).
    """

    kind: str
    color1: tuple[float, float, float]
    color2: tuple[float, float, float]
    period: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TEXTURE_KINDS:
            raise ValueError(f"TextureSpec: unknown kind {self.kind!r}; valid kinds: {', '.join(TEXTURE_KINDS)}")
        if self.period < 1:
            raise ValueError(f"TextureSpec: period must be >= 1, got {self.period}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["color1"], d["color2"] = list(self.color1), list(self.color2)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TextureSpec":
        return cls(
            kind=str(d["kind"]),
            color1=tuple(float(c) for c in d["color1"]),  # type: ignore[arg-type]
            color2=tuple(float(c) for c in d["color2"]),  # type: ignore[arg-type]
            period=int(d.get("period", 4)),
            seed=int(d.get("seed", 0)),
        )


def hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """RGB in ``[0, 1]`` from hue/saturation/value (hue wraps)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (round(r, 4), round(g, 4), round(b, 4))


def _blend(mask: np.ndarray, c1, c2) -> np.ndarray:
    """``mask`` in [0, 1] (H, W) -> float image mixing ``c1`` (mask 0) and ``c2`` (mask 1)."""
    c1 = np.asarray(c1, dtype=np.float32)
    c2 = np.asarray(c2, dtype=np.float32)
    return c1 * (1.0 - mask[..., None]) + c2 * mask[..., None]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Tileable value noise in [0, 1] with ``cells`` lattice cells across the image."""
    cells = max(1, cells)
    lattice = rng.random((cells, cells)).astype(np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) * cells / size
    i0 = np.floor(t).astype(int) % cells
    i1 = (i0 + 1) % cells
    f = t - np.floor(t)
    f = f * f * (3 - 2 * f)
    rows = lattice[i0] * (1 - f)[:, None] + lattice[i1] * f[:, None]  # (size, cells)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def make_texture(spec: TextureSpec, size: int = 64) -> np.ndarray:
    """Render ``spec`` as a ``(size, size, 3)`` uint8 image (tileable for all kinds but ``painting``)."""
    if size < 8:
        raise ValueError(f"make_texture: size must be >= 8, got {size}")
    rng = np.random.default_rng(spec.seed)
    n = spec.period
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    u = (xx + 0.5) / size * n  # pattern coordinates, n repeats across the image
    v = (yy + 0.5) / size * n
    kind = spec.kind
    if kind == "plain":
        img = _blend(0.15 * _smooth_noise(rng, size, 4), spec.color1, spec.color2)
    elif kind == "stripes":
        mask = ((np.floor(u * 2) % 2) == 0).astype(np.float32)
        img = _blend(mask, spec.color1, spec.color2)
    elif kind == "checker":
        mask = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        img = _blend(mask, spec.color1, spec.color2)
    elif kind == "noise":
        mask = 0.6 * _smooth_noise(rng, size, 2 * n) + 0.4 * _smooth_noise(rng, size, 4 * n)
        img = _blend(np.clip((mask - 0.25) * 1.8, 0, 1), spec.color1, spec.color2)
    elif kind == "planks":
        row = np.floor(v).astype(int)
        offsets = rng.random(n + 1)
        shade = rng.uniform(-0.12, 0.12, size=(n + 1, 3))
        grain = 0.25 * _smooth_noise(rng, size, 8)
        mask = np.clip(grain + 0.15 * np.sin((u + offsets[row] * 3) * 9.0), 0, 1)
        img = _blend(mask, spec.color1, spec.color2) + shade[row].astype(np.float32)
        seam_v = (v - np.floor(v)) < 0.08
        seam_u = ((u * 0.5 + offsets[row]) % 1.0) < 0.03
        img[seam_v | seam_u] *= 0.55
    elif kind == "tiles":
        fu, fv = u - np.floor(u), v - np.floor(v)
        grout = (fu < 0.07) | (fv < 0.07)
        ci = (np.floor(u) + 3 * np.floor(v)).astype(int) % 3
        tint = np.array([0.0, 0.08, -0.08], dtype=np.float32)[ci]
        img = _blend(np.zeros_like(u, dtype=np.float32), spec.color1, spec.color2) + tint[..., None]
        img[grout] = np.asarray(spec.color2, dtype=np.float32)
    elif kind == "dots":
        fu, fv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
        mask = ((fu**2 + fv**2) < 0.09).astype(np.float32)
        img = _blend(mask, spec.color1, spec.color2)
    elif kind == "diamonds":
        mask = ((np.abs((u % 1.0) - 0.5) + np.abs((v % 1.0) - 0.5)) < 0.32).astype(np.float32)
        img = _blend(mask, spec.color1, spec.color2)
    elif kind == "painting":
        img = _painting(rng, size, spec)
    else:  # pragma: no cover - guarded by TextureSpec
        raise ValueError(f"make_texture: unknown kind {kind!r}")
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _painting(rng: np.random.Generator, size: int, spec: TextureSpec) -> np.ndarray:
    """An abstract 'painting': a sky/ground split or colour blocks with a few discs, and a frame."""
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    base_h = rng.random()
    img = np.empty((size, size, 3), dtype=np.float32)
    style = int(rng.integers(3))
    if style == 0:  # landscape: sky gradient over ground
        horizon = rng.uniform(0.4, 0.7)
        sky = np.asarray(hsv(base_h, 0.5, 0.95), dtype=np.float32)
        ground = np.asarray(hsv(base_h + 0.35, 0.7, 0.55), dtype=np.float32)
        img[:] = np.where((yy < horizon)[..., None], sky * (0.7 + 0.3 * yy[..., None]), ground)
    elif style == 1:  # colour blocks
        k = int(rng.integers(2, 4))
        cuts = np.sort(rng.random(k - 1))
        band = np.searchsorted(cuts, xx if rng.random() < 0.5 else yy)
        cols = np.array([hsv(base_h + 0.25 * i, 0.8, 0.9) for i in range(k)], dtype=np.float32)
        img[:] = cols[band]
    else:  # concentric rings
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        r = np.hypot(xx - cx, yy - cy)
        ring = (np.floor(r * rng.uniform(6, 10)) % 2)[..., None]
        img[:] = np.where(ring > 0, np.asarray(hsv(base_h, 0.8, 0.9)), np.asarray(hsv(base_h + 0.5, 0.6, 0.4)))
    for _ in range(int(rng.integers(1, 4))):
        cx, cy, rad = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.06, 0.18)
        disc = np.hypot(xx - cx, yy - cy) < rad
        img[disc] = np.asarray(hsv(rng.random(), 0.9, rng.uniform(0.5, 1.0)), dtype=np.float32)
    frame = max(2, size // 16)
    fc = np.asarray(spec.color1, dtype=np.float32)
    img[:frame], img[-frame:], img[:, :frame], img[:, -frame:] = fc, fc, fc, fc
    return img
