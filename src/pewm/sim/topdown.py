"""Top-down raster map of a house (north-up: world +y points up in the image).

Floors are drawn in their room colours, walls dark, furniture in its own colours with a dark
outline, wall decorations as magenta marks; optionally a path polyline and the agent as an arrow.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from pewm.geometry import AgentState
from pewm.sim.house import House

MARGIN_M = 0.5
"""Empty border (metres) around the house bounds in the image."""


def _rgb(c, scale: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(round(255 * min(1.0, max(0.0, v * scale)))) for v in c)  # type: ignore[return-value]


def topdown_size(house: House, px_per_m: float = 20) -> tuple[int, int]:
    """``(height, width)`` in pixels of :func:`top_down_image` for this house."""
    xmin, ymin, xmax, ymax = house.bounds
    return (int(math.ceil((ymax - ymin + 2 * MARGIN_M) * px_per_m)), int(math.ceil((xmax - xmin + 2 * MARGIN_M) * px_per_m)))


def world_to_topdown_pixel(house: House, x, y, px_per_m: float = 20) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates ``(col, row)`` (floats, pixel centres at integers + 0.5) of world ``(x, y)``."""
    xmin, _, _, ymax = house.bounds
    col = (np.asarray(x, dtype=np.float64) - xmin + MARGIN_M) * px_per_m
    row = (ymax + MARGIN_M - np.asarray(y, dtype=np.float64)) * px_per_m
    return col, row


def top_down_image(
    house: House,
    path: Sequence[tuple[float, float]] | None = None,
    px_per_m: float = 20,
    agent_state: AgentState | None = None,
    path_color: tuple[int, int, int] = (230, 30, 30),
) -> np.ndarray:
    """Render the floor plan as a ``uint8 (H, W, 3)`` image; see the module docstring."""
    if px_per_m <= 0:
        raise ValueError(f"top_down_image: px_per_m must be positive, got {px_per_m}")
    H, W = topdown_size(house, px_per_m)
    img = Image.new("RGB", (W, H), (40, 40, 44))
    draw = ImageDraw.Draw(img)

    def rect(x0, y0, x1, y1, fill, outline=None):
        c0, r0 = world_to_topdown_pixel(house, x0, y1, px_per_m)
        c1, r1 = world_to_topdown_pixel(house, x1, y0, px_per_m)
        draw.rectangle([float(c0), float(r0), max(float(c0), float(c1) - 1), max(float(r0), float(r1) - 1)],
                       fill=fill, outline=outline)

    for r in house.rooms:
        rect(r.x0, r.y0, r.x1, r.y1, _rgb(r.floor_color))
    for o in house.objects:
        if o.category == "rug":
            for p in o.parts:
                b = p.bbox()
                rect(b[0], b[1], b[3], b[4], _rgb(p.color, 0.85))
    for w in house.walls:
        rect(w.x0, w.y0, w.x1, w.y1, (15, 15, 15) if w.z0 < 1.0 else _rgb(house.rooms[w.room].wall_color, 0.9))
    for o in house.objects:
        if o.category == "rug":
            continue
        for p in sorted(o.parts, key=lambda p: p.bbox()[5]):
            b = p.bbox()
            fill = (255, 0, 255) if o.category == "decoration" else _rgb(p.color)
            outline = None if o.category == "decoration" else _rgb(p.color, 0.4)
            if p.shape != "box" and p.axis == "z":
                c0, r0 = world_to_topdown_pixel(house, b[0], b[4], px_per_m)
                c1, r1 = world_to_topdown_pixel(house, b[3], b[1], px_per_m)
                draw.ellipse([float(c0), float(r0), max(float(c0), float(c1) - 1), max(float(r0), float(r1) - 1)],
                             fill=fill, outline=outline)
            else:
                rect(b[0], b[1], b[3], b[4], fill, outline)
    if path is not None and len(path) > 0:
        pts = np.asarray(path, dtype=np.float64).reshape(-1, 2)
        cols, rows = world_to_topdown_pixel(house, pts[:, 0], pts[:, 1], px_per_m)
        xy = [(float(c), float(r)) for c, r in zip(cols, rows)]
        if len(xy) > 1:
            draw.line(xy, fill=path_color, width=max(1, int(px_per_m // 10)))
        rad = max(1.5, px_per_m / 12)
        for c, r in (xy[0], xy[-1]):
            draw.ellipse([c - rad, r - rad, c + rad, r + rad], fill=path_color)
    if agent_state is not None:
        c, r = world_to_topdown_pixel(house, agent_state.x, agent_state.y, px_per_m)
        L = max(4.0, 0.45 * px_per_m)
        yaw = agent_state.yaw
        # image x = world x, image y = -world y
        tip = (float(c) + L * math.cos(yaw), float(r) - L * math.sin(yaw))
        left = (float(c) + 0.6 * L * math.cos(yaw + 2.5), float(r) - 0.6 * L * math.sin(yaw + 2.5))
        right = (float(c) + 0.6 * L * math.cos(yaw - 2.5), float(r) - 0.6 * L * math.sin(yaw - 2.5))
        draw.polygon([tip, left, (float(c), float(r)), right], fill=(255, 220, 0), outline=(0, 0, 0))
    return np.asarray(img, dtype=np.uint8).copy()
