"""Furniture and wall-decoration makers used by :mod:`pewm.sim.house`.

Each maker draws one item in its own frame: ``u`` runs along the wall it stands against (``0..W``),
``v`` away from that wall (``0..D``), ``z`` up from the floor. The house generator then places the
footprint in a room and maps the parts to world coordinates. A maker returns
``(parts, W, D, placement)`` where ``placement`` is ``"wall"``, ``"corner"`` or ``"free"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pewm.sim.textures import TextureSpec, hsv


@dataclass
class LocalPart:
    """A primitive in the item frame. Box: half extents ``(su, sv, sz)``; cylinder along ``axis``
    (``"z"``: radius ``su``, half length ``sz``; ``"u"``/``"v"``: radius ``su``, half length ``sv``);
    sphere: radius ``su``."""

    shape: str
    u: float
    v: float
    z: float
    su: float
    sv: float
    sz: float
    color: tuple[float, float, float]
    axis: str = "z"
    texture: TextureSpec | None = None
    emission: float = 0.0


class Palette:
    """Colour choices for one room (wood, fabric, neutral tones, accents around the room's hue)."""

    def __init__(self, rng: np.random.Generator, room_hue: float) -> None:
        self.rng = rng
        self.hue = room_hue

    def wood(self) -> tuple[float, float, float]:
        return hsv(self.rng.uniform(0.04, 0.11), self.rng.uniform(0.4, 0.75), self.rng.uniform(0.3, 0.7))

    def fabric(self) -> tuple[float, float, float]:
        h = self.hue + self.rng.uniform(-0.15, 0.15) if self.rng.random() < 0.6 else self.rng.random()
        return hsv(h, self.rng.uniform(0.45, 0.85), self.rng.uniform(0.4, 0.9))

    def neutral(self) -> tuple[float, float, float]:
        return hsv(0.0, 0.0, self.rng.uniform(0.7, 0.95))

    def dark(self) -> tuple[float, float, float]:
        return hsv(self.rng.random(), 0.2, self.rng.uniform(0.08, 0.2))

    def bright(self) -> tuple[float, float, float]:
        return hsv(self.rng.random(), self.rng.uniform(0.7, 1.0), self.rng.uniform(0.75, 1.0))

    def tex(self, kind: str, c1, c2, period: int = 4) -> TextureSpec:
        return TextureSpec(kind, c1, c2, period=period, seed=int(self.rng.integers(2**31)))


def box(u0, u1, v0, v1, z0, z1, color, texture=None, emission=0.0) -> LocalPart:
    return LocalPart("box", (u0 + u1) / 2, (v0 + v1) / 2, (z0 + z1) / 2, (u1 - u0) / 2, (v1 - v0) / 2, (z1 - z0) / 2,
                     color, "z", texture, emission)


def cyl(u, v, r, z0, z1, color, emission=0.0) -> LocalPart:
    return LocalPart("cylinder", u, v, (z0 + z1) / 2, r, 0.0, (z1 - z0) / 2, color, "z", None, emission)


def sphere(u, v, z, r, color) -> LocalPart:
    return LocalPart("sphere", u, v, z, r, 0.0, 0.0, color)


Maker = Callable[[np.random.Generator, Palette], tuple[list[LocalPart], float, float, str]]


# ---- furniture ------------------------------------------------------------------------------


def bed(rng, pal):
    W, D = rng.uniform(1.3, 1.7), rng.uniform(1.9, 2.1)
    wood, cover = pal.wood(), pal.fabric()
    parts = [
        box(0, W, 0, D, 0, 0.3, wood),
        box(0.05, W - 0.05, 0.05, D - 0.05, 0.3, 0.5, cover, pal.tex("stripes", cover, pal.fabric(), 2)),
        box(0.15, W - 0.15, 0.1, 0.45, 0.5, 0.6, pal.neutral()),
        box(0, W, 0, 0.08, 0, 1.0, wood),
    ]
    return parts, W, D, "wall"


def wardrobe(rng, pal):
    W, D, H = rng.uniform(0.9, 1.5), rng.uniform(0.55, 0.62), rng.uniform(1.9, 2.2)
    c = pal.wood() if rng.random() < 0.6 else pal.neutral()
    front = hsv(0.0, 0.0, 0.2)
    parts = [box(0, W, 0, D, 0, H, c), box(W / 2 - 0.01, W / 2 + 0.01, D, D + 0.01, 0.1, H - 0.1, front)]
    return parts, W, D + 0.01, "wall"


def bookshelf(rng, pal):
    W, D, H = rng.uniform(0.8, 1.4), rng.uniform(0.32, 0.4), rng.uniform(1.5, 2.0)
    frame = pal.wood()
    books = pal.tex("stripes", pal.bright(), pal.bright(), period=int(rng.integers(5, 9)))
    parts = [box(0, W, 0, D, 0, H, frame), box(0.05, W - 0.05, 0.05, D + 0.005, 0.1, H - 0.1, books.color1, books)]
    return parts, W, D + 0.005, "wall"


def counter(rng, pal):
    W, D = rng.uniform(1.6, 2.6), 0.62
    body = pal.neutral() if rng.random() < 0.5 else pal.fabric()
    top = hsv(rng.random(), 0.1, rng.uniform(0.15, 0.35))
    parts = [box(0, W, 0, D - 0.02, 0, 0.86, body), box(0, W, 0, D, 0.86, 0.92, top),
             box(0, W, 0, 0.35, 1.5, 2.1, body)]
    return parts, W, D, "wall"


def fridge(rng, pal):
    W = D = rng.uniform(0.65, 0.8)
    H = rng.uniform(1.7, 1.95)
    parts = [box(0, W, 0, D, 0, H, hsv(0.58, 0.05, rng.uniform(0.75, 0.92))),
             box(W - 0.12, W - 0.08, D, D + 0.04, H * 0.45, H * 0.85, hsv(0, 0, 0.2))]
    return parts, W, D + 0.04, "corner"


def sofa(rng, pal):
    W, D = rng.uniform(1.6, 2.2), rng.uniform(0.8, 0.95)
    c = pal.fabric()
    parts = [box(0, W, 0, D, 0, 0.42, c), box(0, W, 0, 0.22, 0.42, 0.85, c),
             box(0, 0.18, 0, D, 0.42, 0.62, c), box(W - 0.18, W, 0, D, 0.42, 0.62, c)]
    return parts, W, D, "wall"


def armchair(rng, pal):
    W = D = rng.uniform(0.75, 0.9)
    c = pal.fabric()
    parts = [box(0, W, 0, D, 0, 0.42, c), box(0, W, 0, 0.2, 0.42, 0.9, c),
             box(0, 0.15, 0, D, 0.42, 0.6, c), box(W - 0.15, W, 0, D, 0.42, 0.6, c)]
    return parts, W, D, "wall"


def tv(rng, pal):
    W, D = rng.uniform(1.0, 1.6), 0.45
    sw = W - 0.2
    parts = [box(0, W, 0.05, D, 0, 0.5, pal.wood()),
             box(0.1, W - 0.1, 0.12, 0.17, 0.6, 0.6 + 0.56 * sw, hsv(0.62, 0.6, 0.18)),
             box(W / 2 - 0.05, W / 2 + 0.05, 0.12, 0.2, 0.5, 0.6, hsv(0, 0, 0.1))]
    return parts, W, D, "wall"


def desk(rng, pal):
    W, D = rng.uniform(1.1, 1.5), rng.uniform(0.6, 0.7)
    c, leg = pal.wood(), hsv(0, 0, 0.25)
    parts = [box(0, W, 0, D, 0.72, 0.77, c)]
    for u in (0.03, W - 0.07):
        parts.append(box(u, u + 0.04, 0.03, D - 0.03, 0, 0.72, leg))
    parts.append(box(W / 2 - 0.28, W / 2 + 0.28, 0.08, 0.12, 0.8, 1.15, hsv(0, 0, 0.1)))
    parts.append(box(W / 2 - 0.25, W / 2 + 0.25, 0.075, 0.08, 0.83, 1.12, hsv(0.58, 0.7, 0.8), emission=0.5))
    return parts, W, D, "wall"


def table(rng, pal):
    W, D = rng.uniform(0.9, 1.6), rng.uniform(0.7, 1.0)
    c = pal.wood() if rng.random() < 0.7 else pal.fabric()
    parts = [box(0, W, 0, D, 0.72, 0.77, c)]
    for u in (0.08, W - 0.08):
        for v in (0.08, D - 0.08):
            parts.append(cyl(u, v, 0.035, 0, 0.72, c))
    return parts, W, D, "free"


def round_table(rng, pal):
    r = rng.uniform(0.4, 0.6)
    c = pal.wood() if rng.random() < 0.6 else pal.neutral()
    parts = [cyl(r, r, r, 0.72, 0.76, c), cyl(r, r, 0.06, 0.03, 0.72, hsv(0, 0, 0.2)), cyl(r, r, 0.28, 0, 0.03, hsv(0, 0, 0.2))]
    return parts, 2 * r, 2 * r, "free"


def coffee_table(rng, pal):
    W, D = rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.7)
    parts = [box(0, W, 0, D, 0.0, 0.42, pal.wood())]
    return parts, W, D, "free"


def lamp(rng, pal):
    W = D = 0.44
    shade = hsv(rng.uniform(0.08, 0.16), rng.uniform(0.2, 0.6), 1.0)
    parts = [cyl(0.22, 0.22, 0.16, 0, 0.03, hsv(0, 0, 0.2)), cyl(0.22, 0.22, 0.02, 0.03, 1.45, hsv(0, 0, 0.25)),
             cyl(0.22, 0.22, 0.21, 1.4, 1.7, shade, emission=0.8)]
    return parts, W, D, "corner"


def plant(rng, pal):
    r = rng.uniform(0.25, 0.38)
    W = D = 2 * r + 0.04
    c = W / 2
    pot = hsv(rng.uniform(0.02, 0.08), rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.7))
    leaves = hsv(rng.uniform(0.22, 0.38), rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.65))
    parts = [cyl(c, c, 0.17, 0, 0.35, pot), sphere(c, c, 0.35 + 0.9 * r, r, leaves)]
    if rng.random() < 0.5:
        parts.append(sphere(c, c, 0.35 + 1.7 * r, 0.7 * r, leaves))
    return parts, W, D, "corner"


def bathtub(rng, pal):
    W, D = rng.uniform(1.5, 1.75), rng.uniform(0.72, 0.8)
    parts = [box(0, W, 0, D, 0, 0.56, hsv(0.55, 0.03, 0.95)),
             box(0.08, W - 0.08, 0.08, D - 0.08, 0.56, 0.57, hsv(0.55, 0.6, 0.85))]
    return parts, W, D, "wall"


def sink(rng, pal):
    W, D = rng.uniform(0.6, 0.85), 0.5
    parts = [box(0, W, 0, D, 0, 0.8, pal.wood() if rng.random() < 0.5 else pal.fabric()),
             box(0.03, W - 0.03, 0.03, D, 0.8, 0.88, hsv(0, 0, 0.97)),
             box(0.1, W - 0.1, 0, 0.03, 1.1, 1.8, hsv(0.55, 0.15, 0.9))]
    return parts, W, D, "wall"


def bench(rng, pal):
    W, D = rng.uniform(1.0, 1.4), 0.4
    c = pal.wood()
    parts = [box(0, W, 0, D, 0.4, 0.46, c), box(0.05, 0.12, 0.05, D - 0.05, 0, 0.4, c),
             box(W - 0.12, W - 0.05, 0.05, D - 0.05, 0, 0.4, c)]
    return parts, W, D, "wall"


def toy_blocks(rng, pal):
    W = D = 0.8
    parts = []
    for k in range(int(rng.integers(3, 6))):
        s = rng.uniform(0.15, 0.3)
        u, v = rng.uniform(0, W - s), rng.uniform(0, D - s)
        z0 = 0.0 if k < 3 else 0.3
        parts.append(box(u, u + s, v, v + s, z0, z0 + s, pal.bright()))
    return parts, W, D, "free"


def chest(rng, pal):
    W, D = rng.uniform(0.7, 1.0), rng.uniform(0.45, 0.55)
    c = pal.wood()
    parts = [box(0, W, 0, D, 0, 0.5, c), box(0, W, 0, D, 0.5, 0.55, hsv(0.1, 0.5, 0.25))]
    return parts, W, D, "wall"


FURNITURE: dict[str, Maker] = {
    "bed": bed, "wardrobe": wardrobe, "bookshelf": bookshelf, "counter": counter, "fridge": fridge, "sofa": sofa,
    "armchair": armchair, "tv": tv, "desk": desk, "table": table, "round_table": round_table,
    "coffee_table": coffee_table, "lamp": lamp, "plant": plant, "bathtub": bathtub, "sink": sink, "bench": bench,
    "toy_blocks": toy_blocks, "chest": chest,
}

# room kind -> (signature items placed first, optional items drawn at random)
ROOM_CATALOGUE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bedroom": (("bed", "wardrobe"), ("lamp", "plant", "chest", "desk", "bookshelf")),
    "kitchen": (("counter", "fridge"), ("table", "round_table", "plant", "chest")),
    "living room": (("sofa", "tv"), ("armchair", "coffee_table", "lamp", "plant", "bookshelf")),
    "office": (("desk", "bookshelf"), ("armchair", "lamp", "plant", "chest", "bookshelf")),
    "bathroom": (("bathtub", "sink"), ("plant", "chest", "wardrobe")),
    "dining room": (("table", "counter"), ("round_table", "plant", "lamp", "chest")),
    "library": (("bookshelf", "armchair"), ("bookshelf", "lamp", "round_table", "plant")),
    "playroom": (("toy_blocks", "chest"), ("round_table", "plant", "toy_blocks", "armchair")),
    "hallway": (("plant", "bench"), ("lamp", "plant", "chest", "bench")),
}


# ---- wall decorations -------------------------------------------------------------------------


def painting(rng, pal):
    W, H = rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.8)
    z0 = rng.uniform(1.55, 1.75) - H / 2
    frame = hsv(rng.random(), 0.3, rng.uniform(0.1, 0.8))
    tex = pal.tex("painting", frame, frame)
    return [box(0, W, 0, 0.04, z0, z0 + H, frame, tex)], W, 0.04, "wall"


def clock(rng, pal):
    r = rng.uniform(0.15, 0.22)
    z = rng.uniform(1.8, 2.0)
    face = LocalPart("cylinder", r, 0.03, z, r, 0.03, 0.0, hsv(0, 0, 0.95), axis="v")
    rim = LocalPart("cylinder", r, 0.015, z, r + 0.03, 0.015, 0.0, pal.dark(), axis="v")
    hand = box(r - 0.01, r + 0.01, 0.06, 0.065, z, z + 0.8 * r, hsv(0, 0, 0.05))
    return [rim, face, hand], 2 * r + 0.06, 0.065, "wall"


def window(rng, pal):
    W, H = rng.uniform(0.8, 1.3), rng.uniform(0.9, 1.2)
    z0 = 0.9
    sky = pal.tex("noise", hsv(0.58, 0.45, 1.0), hsv(0.58, 0.08, 1.0), period=2)
    fr = hsv(0, 0, 0.97)
    return [box(0, W, 0, 0.02, z0, z0 + H, sky.color1, sky, emission=0.6), box(0, W, 0, 0.05, z0 - 0.05, z0, fr),
            box(0, W, 0, 0.05, z0 + H, z0 + H + 0.05, fr), box(W / 2 - 0.025, W / 2 + 0.025, 0, 0.04, z0, z0 + H, fr)
            ], W, 0.05, "wall"


DECORATIONS: dict[str, Maker] = {"painting": painting, "clock": clock, "window": window}
DECORATION_WEIGHTS: dict[str, float] = {"painting": 0.6, "clock": 0.15, "window": 0.25}
