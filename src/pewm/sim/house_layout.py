"""Floor-plan layouts: the room rectangles of each layout family and the walls they share.

A layout is a list of rectangles ``(x0, y0, x1, y1)`` (wall centre lines, on a 5 cm grid) that share
edges with their neighbours, plus the pairs of rectangles that must get a door (``structural``) and
the index of the hallway, if any. Rooms, doors and walls are then built from it
(:mod:`pewm.sim.house_structure`).
"""

from __future__ import annotations

import numpy as np

from pewm.sim.house_model import HouseConfig

_EPS = 1e-6
_SNAP = 0.05  # layout coordinates are multiples of 5 cm


def _q(v: float) -> float:
    """Snap to the 5 cm layout grid (and round away float noise)."""
    return round(round(v / _SNAP) * _SNAP, 3)


Rect = tuple[float, float, float, float]


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] - _EPS and b[0] < a[2] - _EPS and a[1] < b[3] - _EPS and b[1] < a[3] - _EPS


def _size(rng: np.random.Generator, cfg: HouseConfig) -> float:
    return _q(rng.uniform(*cfg.room_size))


def _layout_grid(rng: np.random.Generator, n: int, cfg: HouseConfig):
    shapes = [(r, c) for r in range(1, 5) for c in range(1, 5) if n <= r * c <= n + min(r, c) - 1 and r * c - n <= 2]
    r, c = shapes[int(rng.integers(len(shapes)))]
    widths = [_size(rng, cfg) for _ in range(c)]
    heights = [_size(rng, cfg) for _ in range(r)]
    cells = [(i, j) for i in range(r) for j in range(c)]
    for _ in range(100):
        drop = set(rng.choice(len(cells), size=r * c - n, replace=False).tolist()) if r * c > n else set()
        keep = [cells[k] for k in range(len(cells)) if k not in drop]
        if _cells_connected(keep):
            break
    else:  # pragma: no cover - a connected choice always exists (drop the last cells of a row)
        keep = cells[:n]
    xs = np.concatenate([[0.0], np.cumsum(widths)])
    ys = np.concatenate([[0.0], np.cumsum(heights)])
    rects = [(_q(xs[j]), _q(ys[i]), _q(xs[j + 1]), _q(ys[i + 1])) for i, j in keep]
    return rects, [], None


def _cells_connected(cells: list[tuple[int, int]]) -> bool:
    s = set(cells)
    seen, stack = {cells[0]}, [cells[0]]
    while stack:
        i, j = stack.pop()
        for nb in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if nb in s and nb not in seen:
                seen.add(nb)
                stack.append(nb)
    return len(seen) == len(s)


def _layout_corridor(rng: np.random.Generator, n: int, cfg: HouseConfig):
    cw = _q(rng.uniform(*cfg.corridor_width))
    m = n - 1
    n_top = int(rng.integers(m // 2, (m + 1) // 2 + 1)) if m > 1 else int(rng.integers(0, 2))
    sides = {"bottom": m - n_top, "top": n_top}
    rects: list[Rect] = []
    lengths = []
    for side, k in sides.items():
        x = 0.0
        for _ in range(k):
            w, d = _size(rng, cfg), _size(rng, cfg)
            rects.append((_q(x), -d, _q(x + w), 0.0) if side == "bottom" else (_q(x), cw, _q(x + w), _q(cw + d)))
            x += w
        lengths.append(x)
    corridor = (0.0, 0.0, _q(max(lengths)), cw)
    rects = [corridor] + rects
    return rects, [(0, i) for i in range(1, n)], 0


def _layout_chain(rng: np.random.Generator, n: int, cfg: HouseConfig, turns: int):
    need = cfg.door_width + 2 * (cfg.wall_thickness / 2 + 0.3)
    legs = [1] * (turns + 1)
    for _ in range(n - 1 - len(legs)):
        legs[int(rng.integers(len(legs)))] += 1
    dirs: list[str] = []
    order = ["E", "N", "W"]
    for k, cnt in enumerate(legs):
        dirs += [order[k]] * cnt
    dirs = dirs[: n - 1]
    for _attempt in range(50):
        rects: list[Rect] = [(0.0, 0.0, _size(rng, cfg), _size(rng, cfg))]
        ok = True
        for d in dirs:
            placed = False
            for _try in range(30):
                p = rects[-1]
                w, h = _size(rng, cfg), _size(rng, cfg)
                if d in ("E", "W"):
                    lo, hi = -(h - need), (p[3] - p[1]) - need
                    y0 = _q(p[1] + rng.uniform(lo, hi) * rng.uniform(0.0, 0.6))
                    x0 = p[2] if d == "E" else _q(p[0] - w)
                    r = (x0, y0, _q(x0 + w), _q(y0 + h))
                else:
                    lo, hi = -(w - need), (p[2] - p[0]) - need
                    x0 = _q(p[0] + rng.uniform(lo, hi) * rng.uniform(0.0, 0.6))
                    y0 = p[3]
                    r = (x0, y0, _q(x0 + w), _q(y0 + h))
                if not any(_overlaps(r, q) for q in rects) and _shared_edge(p, r, need) is not None:
                    rects.append(r)
                    placed = True
                    break
            if not placed:
                ok = False
                break
        if ok:
            return rects, [(i, i + 1) for i in range(n - 1)], None
    raise RuntimeError(f"could not lay out a {turns}-turn chain of {n} rooms")  # pragma: no cover


def _shared_edge(a: Rect, b: Rect, need: float):
    """``(normal, coord, lo, hi)`` of the wall segment shared by rectangles ``a`` and ``b``, if long enough."""
    for normal, (ai0, ai1, aj0, aj1), (bi0, bi1, bj0, bj1) in (
        ("x", (a[0], a[2], a[1], a[3]), (b[0], b[2], b[1], b[3])),
        ("y", (a[1], a[3], a[0], a[2]), (b[1], b[3], b[0], b[2])),
    ):
        for c1, c2 in ((ai1, bi0), (bi1, ai0)):
            if abs(c1 - c2) < 1e-6:
                lo, hi = max(aj0, bj0), min(aj1, bj1)
                if hi - lo >= need - 1e-9:
                    return normal, c1, lo, hi
    return None
