"""Procedural houses: rooms, walls, doors, furniture and wall decorations, deterministic by seed.

Every element is axis-aligned. Rooms are rectangles on the floor plan (``x0 <= x <= x1``,
``y0 <= y <= y1``, wall centre lines) that share edges with their neighbours; each room draws its own
half-thickness walls on the inside of its rectangle, so the two faces of a shared wall carry the
colours of the two rooms. Doors are gaps in both halves of a shared wall (with a lintel above).

A :class:`House` is plain data and round-trips through JSON (``to_dict`` / ``from_dict``); the
renderer (:mod:`pewm.sim.render`) and the top-down map (:mod:`pewm.sim.topdown`) only read it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from pewm.sim.freespace import FreeSpaceGrid
from pewm.sim.furniture import DECORATION_WEIGHTS, DECORATIONS, FURNITURE, ROOM_CATALOGUE, LocalPart, Palette
from pewm.sim.textures import FLOOR_KINDS, WALL_KINDS, TextureSpec, hsv

FAMILIES = ("grid", "corridor", "L", "U")
"""Layout families: a grid of rooms, a hallway with rooms on both sides, L- and U-shaped chains."""

_EPS = 1e-6
_SNAP = 0.05  # layout coordinates are multiples of 5 cm


def _q(v: float) -> float:
    """Snap to the 5 cm layout grid (and round away float noise)."""
    return round(round(v / _SNAP) * _SNAP, 3)


# ----------------------------------------------------------------------------------------------
# Configuration and data
# ----------------------------------------------------------------------------------------------


@dataclass
class HouseConfig:
    """Knobs of :func:`generate_house` (sizes in metres)."""

    min_rooms: int = 2
    max_rooms: int = 8
    room_size: tuple[float, float] = (3.0, 6.0)
    wall_height: float = 2.6
    wall_thickness: float = 0.12
    door_width: float = 1.0
    door_height: float = 2.1
    corridor_width: tuple[float, float] = (1.6, 2.2)
    furniture_per_room: tuple[int, int] = (2, 5)
    decorations_per_room: tuple[int, int] = (1, 3)
    extra_door_prob: float = 0.3
    family: str | None = None  # one of FAMILIES, or None to draw it from the seed
    texture_size: int = 64

    def __post_init__(self) -> None:
        self.room_size = tuple(float(v) for v in self.room_size)  # type: ignore[assignment]
        self.corridor_width = tuple(float(v) for v in self.corridor_width)  # type: ignore[assignment]
        self.furniture_per_room = tuple(int(v) for v in self.furniture_per_room)  # type: ignore[assignment]
        self.decorations_per_room = tuple(int(v) for v in self.decorations_per_room)  # type: ignore[assignment]
        if not 2 <= self.min_rooms <= self.max_rooms <= 8:
            raise ValueError(
                f"HouseConfig: need 2 <= min_rooms <= max_rooms <= 8, got min_rooms={self.min_rooms}, "
                f"max_rooms={self.max_rooms}"
            )
        lo, hi = self.room_size
        if not 2.5 <= lo <= hi:
            raise ValueError(f"HouseConfig: room_size must be (lo, hi) with 2.5 <= lo <= hi, got {self.room_size}")
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"HouseConfig: unknown family {self.family!r}; valid: {', '.join(FAMILIES)}")
        if not 0.6 <= self.door_width <= lo - 0.6:
            raise ValueError(f"HouseConfig: door_width {self.door_width} must be in [0.6, room_size[0] - 0.6]")
        if not 0.02 <= self.wall_thickness <= 0.5:
            raise ValueError(f"HouseConfig: wall_thickness must be in [0.02, 0.5], got {self.wall_thickness}")
        if not 1.8 <= self.door_height < self.wall_height:
            raise ValueError(
                f"HouseConfig: need 1.8 <= door_height < wall_height, got {self.door_height}, {self.wall_height}"
            )
        for name in ("furniture_per_room", "decorations_per_room"):
            a, b = getattr(self, name)
            if not 0 <= a <= b:
                raise ValueError(f"HouseConfig: {name} must be (lo, hi) with 0 <= lo <= hi, got {(a, b)}")

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "HouseConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"HouseConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)


@dataclass
class Room:
    """A rectangular room; ``(x0, y0, x1, y1)`` are the wall centre lines."""

    id: int
    name: str
    kind: str
    x0: float
    y0: float
    x1: float
    y1: float
    floor_color: tuple[float, float, float]
    wall_color: tuple[float, float, float]
    ceiling_color: tuple[float, float, float]
    floor_texture: TextureSpec
    wall_texture: TextureSpec

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1))

    @property
    def size(self) -> tuple[float, float]:
        return (self.x1 - self.x0, self.y1 - self.y0)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("floor_color", "wall_color", "ceiling_color"):
            d[k] = list(d[k])
        d["floor_texture"] = self.floor_texture.to_dict()
        d["wall_texture"] = self.wall_texture.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Room":
        d = dict(d)
        for k in ("floor_color", "wall_color", "ceiling_color"):
            d[k] = tuple(float(c) for c in d[k])
        d["floor_texture"] = TextureSpec.from_dict(d["floor_texture"])
        d["wall_texture"] = TextureSpec.from_dict(d["wall_texture"])
        return cls(**d)


@dataclass
class Door:
    """An opening of ``width`` centred at ``(x, y)`` in the wall between ``room_a`` and ``room_b``.

    ``normal`` is ``"x"`` when the wall is the line ``x = const`` (walk through along x), else ``"y"``.
    """

    id: int
    room_a: int
    room_b: int
    x: float
    y: float
    normal: str
    width: float
    height: float

    def approach_points(self, offset: float = 0.45) -> tuple[tuple[float, float], tuple[float, float]]:
        """Points ``offset`` metres in front of the door on both sides."""
        if self.normal == "x":
            return (self.x - offset, self.y), (self.x + offset, self.y)
        return (self.x, self.y - offset), (self.x, self.y + offset)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Door":
        return cls(**d)


@dataclass
class Wall:
    """A wall box: footprint ``[x0, x1] x [y0, y1]``, from ``z0`` to ``z1``, coloured by ``room``.

    Lintels above doors are walls with ``z0`` at the door height; they do not block the agent.
    """

    room: int
    x0: float
    y0: float
    x1: float
    y1: float
    z0: float
    z1: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Wall":
        return cls(**d)


@dataclass
class Part:
    """One primitive of an object, in world coordinates.

    ``shape`` is ``"box"`` (``size`` = half extents), ``"cylinder"`` (``size = (radius, half_length, 0)``,
    along ``axis``) or ``"sphere"`` (``size = (radius, 0, 0)``). ``emission`` makes it glow (lamps).
    """

    shape: str
    pos: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[float, float, float]
    axis: str = "z"
    texture: TextureSpec | None = None
    emission: float = 0.0

    def bbox(self) -> tuple[float, float, float, float, float, float]:
        """Axis-aligned bounds ``(xmin, ymin, zmin, xmax, ymax, zmax)``."""
        x, y, z = self.pos
        if self.shape == "box":
            hx, hy, hz = self.size
        elif self.shape == "sphere":
            hx = hy = hz = self.size[0]
        else:
            r, h = self.size[0], self.size[1]
            hx, hy, hz = {"z": (r, r, h), "x": (h, r, r), "y": (r, h, r)}[self.axis]
        return (x - hx, y - hy, z - hz, x + hx, y + hy, z + hz)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("pos", "size", "color"):
            d[k] = list(d[k])
        d["texture"] = None if self.texture is None else self.texture.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Part":
        d = dict(d)
        for k in ("pos", "size", "color"):
            d[k] = tuple(float(c) for c in d[k])
        d["texture"] = None if d.get("texture") is None else TextureSpec.from_dict(d["texture"])
        return cls(**d)


@dataclass
class HouseObject:
    """Furniture, a rug or a wall decoration, made of :class:`Part` primitives.

    ``category`` is ``"furniture"`` (blocks the agent), ``"decoration"`` (on a wall) or ``"rug"``
    (flat on the floor, never blocks).
    """

    id: int
    room: int
    kind: str
    category: str
    parts: list[Part]

    @property
    def blocking(self) -> bool:
        return self.category != "rug"

    def bbox(self) -> tuple[float, float, float, float, float, float]:
        b = np.array([p.bbox() for p in self.parts])
        return (*(float(v) for v in b[:, :3].min(0)), *(float(v) for v in b[:, 3:].max(0)))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {"id": self.id, "room": self.room, "kind": self.kind, "category": self.category,
                "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, d: dict) -> "HouseObject":
        return cls(int(d["id"]), int(d["room"]), str(d["kind"]), str(d["category"]),
                   [Part.from_dict(p) for p in d["parts"]])


@dataclass
class House:
    """A generated house: plain data, JSON round-trip, geometry queries."""

    seed: int
    family: str
    config: HouseConfig
    rooms: list[Room]
    doors: list[Door]
    walls: list[Wall]
    objects: list[HouseObject] = field(default_factory=list)

    # ---- queries -----------------------------------------------------------------------------
    @property
    def wall_height(self) -> float:
        return self.config.wall_height

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of all rooms."""
        return (
            min(r.x0 for r in self.rooms), min(r.y0 for r in self.rooms),
            max(r.x1 for r in self.rooms), max(r.y1 for r in self.rooms),
        )

    def room_at(self, x: float, y: float) -> int | None:
        """Id of the room containing ``(x, y)`` (the first one on a shared edge), or ``None``."""
        for r in self.rooms:
            if r.contains(x, y):
                return r.id
        return None

    @property
    def furniture(self) -> list[HouseObject]:
        return [o for o in self.objects if o.category == "furniture"]

    @property
    def decorations(self) -> list[HouseObject]:
        return [o for o in self.objects if o.category == "decoration"]

    def free_space(self, agent_radius: float = 0.2, resolution: float = 0.05) -> FreeSpaceGrid:
        """Where the agent's centre may be: room floors minus walls and furniture, dilated by ``agent_radius``."""
        return _free_space(self.rooms, self.walls, self.objects, self.bounds, agent_radius, resolution)

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "family": self.family,
            "config": self.config.to_dict(),
            "rooms": [r.to_dict() for r in self.rooms],
            "doors": [d.to_dict() for d in self.doors],
            "walls": [w.to_dict() for w in self.walls],
            "objects": [o.to_dict() for o in self.objects],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "House":
        missing = {"seed", "family", "config", "rooms", "doors", "walls"} - set(d)
        if missing:
            raise ValueError(f"House.from_dict: missing field(s) {sorted(missing)}")
        return cls(
            seed=int(d["seed"]),
            family=str(d["family"]),
            config=HouseConfig.from_dict(d["config"]),
            rooms=[Room.from_dict(r) for r in d["rooms"]],
            doors=[Door.from_dict(x) for x in d["doors"]],
            walls=[Wall.from_dict(w) for w in d["walls"]],
            objects=[HouseObject.from_dict(o) for o in d.get("objects", [])],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> "House":
        return cls.from_dict(json.loads(s))


# ----------------------------------------------------------------------------------------------
# Free space
# ----------------------------------------------------------------------------------------------


def _cell_range(lo: float, hi: float, origin: float, res: float, n: int, overlap: bool) -> slice:
    """Cells along one axis either overlapping ``[lo, hi]`` or with their centre inside it."""
    if overlap:
        a, b = math.floor((lo - origin) / res + 1e-9), math.ceil((hi - origin) / res - 1e-9)
    else:
        a, b = math.ceil((lo - origin) / res - 0.5 - 1e-9), math.floor((hi - origin) / res - 0.5 + 1e-9) + 1
    return slice(max(0, a), min(n, b))


def _free_space(rooms, walls, objects, bounds, agent_radius: float, resolution: float) -> FreeSpaceGrid:
    from scipy import ndimage

    if agent_radius < 0 or resolution <= 0:
        raise ValueError(f"free_space: need agent_radius >= 0 and resolution > 0, got {agent_radius}, {resolution}")
    margin = 0.5
    x0, y0 = bounds[0] - margin, bounds[1] - margin
    cols = int(math.ceil((bounds[2] - bounds[0] + 2 * margin) / resolution))
    rows = int(math.ceil((bounds[3] - bounds[1] + 2 * margin) / resolution))
    floor = np.zeros((rows, cols), dtype=bool)
    for r in rooms:
        floor[_cell_range(r.y0, r.y1, y0, resolution, rows, False), _cell_range(r.x0, r.x1, x0, resolution, cols, False)] = True
    blocked = ~floor
    boxes = [(w.x0, w.y0, w.x1, w.y1) for w in walls if w.z0 < 1.0]
    for o in objects:
        if o.blocking:
            boxes.extend((b[0], b[1], b[3], b[4]) for b in (p.bbox() for p in o.parts) if b[2] < 1.8)
    for bx0, by0, bx1, by1 in boxes:
        blocked[_cell_range(by0, by1, y0, resolution, rows, True), _cell_range(bx0, bx1, x0, resolution, cols, True)] = True
    dist = ndimage.distance_transform_edt(~blocked) * resolution
    free = dist >= agent_radius + 0.5 * resolution
    return FreeSpaceGrid(free=free, origin=(float(x0), float(y0)), resolution=float(resolution))


# ----------------------------------------------------------------------------------------------
# Layouts: lists of rectangles plus the edges that must get a door
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def generate_house(seed: int, cfg: HouseConfig | None = None) -> House:
    """A random house, fully determined by ``seed`` and ``cfg``."""
    cfg = HouseConfig() if cfg is None else cfg
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"generate_house: seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    rng = np.random.default_rng([seed, 0x9E3779B9])
    family = cfg.family if cfg.family is not None else FAMILIES[int(rng.integers(len(FAMILIES)))]
    n = int(rng.integers(cfg.min_rooms, cfg.max_rooms + 1))
    if family == "grid":
        rects, structural, hallway = _layout_grid(rng, n, cfg)
    elif family == "corridor":
        rects, structural, hallway = _layout_corridor(rng, n, cfg)
    else:
        rects, structural, hallway = _layout_chain(rng, n, cfg, turns=1 if family == "L" else 2)
    rooms = _make_rooms(rng, rects, hallway)
    doors = _make_doors(rng, rooms, structural, cfg)
    walls = _make_walls(rooms, doors, cfg)
    house = House(seed=seed, family=family, config=cfg, rooms=rooms, doors=doors, walls=walls, objects=[])
    _furnish(rng, house)
    return house


_ROOM_KINDS = ("bedroom", "kitchen", "living room", "office", "bathroom", "dining room", "library", "playroom")


def _make_rooms(rng: np.random.Generator, rects: list[Rect], hallway: int | None) -> list[Room]:
    kinds = [str(k) for k in rng.permutation(_ROOM_KINDS)]
    base_hue = rng.random()
    floor_kinds = [str(k) for k in rng.permutation(FLOOR_KINDS)]
    wall_kinds = [str(k) for k in rng.permutation(WALL_KINDS)]
    rooms = []
    for i, rect in enumerate(rects):
        kind = "hallway" if i == hallway else str(kinds.pop(0) if kinds else rng.choice(_ROOM_KINDS))
        h = (base_hue + 0.618034 * i) % 1.0
        wall = hsv(h, rng.uniform(0.25, 0.6), rng.uniform(0.6, 0.9))
        wall2 = hsv(h + rng.uniform(-0.08, 0.08), rng.uniform(0.45, 0.8), rng.uniform(0.35, 0.6))
        fk = floor_kinds[i % len(floor_kinds)]
        if fk == "planks":
            fh = rng.uniform(0.04, 0.11)
            floor = hsv(fh, rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.7))
            floor2 = hsv(fh, rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.4))
        else:
            fh = h + rng.uniform(0.3, 0.7)
            floor = hsv(fh, rng.uniform(0.2, 0.55), rng.uniform(0.45, 0.8))
            floor2 = hsv(fh + rng.uniform(-0.15, 0.15), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.5))
        ceiling = hsv(h, 0.06, 0.93)
        rooms.append(Room(
            id=i, name=f"{kind} {i}", kind=kind,
            x0=rect[0], y0=rect[1], x1=rect[2], y1=rect[3],
            floor_color=floor, wall_color=wall, ceiling_color=ceiling,
            floor_texture=TextureSpec(fk, floor, floor2, period=int(rng.integers(2, 5)), seed=int(rng.integers(2**31))),
            wall_texture=TextureSpec(wall_kinds[i % len(wall_kinds)], wall, wall2, period=int(rng.integers(2, 5)),
                                     seed=int(rng.integers(2**31))),
        ))
    return rooms


def _make_doors(rng: np.random.Generator, rooms: list[Room], structural, cfg: HouseConfig) -> list[Door]:
    margin = cfg.wall_thickness / 2 + 0.3
    need = cfg.door_width + 2 * margin
    rects = [(r.x0, r.y0, r.x1, r.y1) for r in rooms]
    adj = {}
    for i in range(len(rooms)):
        for j in range(i + 1, len(rooms)):
            e = _shared_edge(rects[i], rects[j], need)
            if e is not None:
                adj[(i, j)] = e
    parent = list(range(len(rooms)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    chosen: list[tuple[int, int]] = []
    for i, j in structural:
        key = (min(i, j), max(i, j))
        if key not in adj:
            raise RuntimeError(f"layout bug: structural edge {key} has no shared wall")  # pragma: no cover
        chosen.append(key)
        parent[find(i)] = find(j)
    keys = sorted(adj)
    for k in rng.permutation(len(keys)):
        i, j = keys[int(k)]
        if find(i) != find(j):
            parent[find(i)] = find(j)
            chosen.append((i, j))
        elif (i, j) not in chosen and rng.random() < cfg.extra_door_prob:
            chosen.append((i, j))
    roots = {find(i) for i in range(len(rooms))}
    if len(roots) != 1:
        raise RuntimeError(f"layout bug: rooms are not connected ({len(roots)} components)")  # pragma: no cover
    doors = []
    for k, (i, j) in enumerate(sorted(set(chosen))):
        normal, coord, lo, hi = adj[(i, j)]
        c = _q(rng.uniform(lo + margin + cfg.door_width / 2, hi - margin - cfg.door_width / 2))
        c = min(max(c, lo + margin + cfg.door_width / 2), hi - margin - cfg.door_width / 2)
        x, y = (coord, c) if normal == "x" else (c, coord)
        doors.append(Door(k, i, j, float(x), float(y), normal, cfg.door_width, cfg.door_height))
    return doors


def _make_walls(rooms: list[Room], doors: list[Door], cfg: HouseConfig) -> list[Wall]:
    t2 = cfg.wall_thickness / 2
    H = cfg.wall_height
    walls: list[Wall] = []
    for r in rooms:
        mine = [d for d in doors if r.id in (d.room_a, d.room_b)]
        # (normal, line coordinate, span lo, span hi, inner offset sign)
        sides = (("y", r.y0, r.x0, r.x1, +1), ("y", r.y1, r.x0, r.x1, -1),
                 ("x", r.x0, r.y0, r.y1, +1), ("x", r.x1, r.y0, r.y1, -1))
        for normal, coord, lo, hi, sign in sides:
            gaps = sorted(
                ((d.x if normal == "y" else d.y) - d.width / 2, (d.x if normal == "y" else d.y) + d.width / 2, d)
                for d in mine
                if d.normal == normal and abs((d.y if normal == "y" else d.x) - coord) < 1e-6
            )
            pieces: list[tuple[float, float, float, float]] = []  # (a, b, z0, z1) along the wall
            a = lo
            for g0, g1, d in gaps:
                if g0 - a > 1e-6:
                    pieces.append((a, g0, 0.0, H))
                pieces.append((g0, g1, d.height, H))
                a = g1
            if hi - a > 1e-6:
                pieces.append((a, hi, 0.0, H))
            c0, c1 = sorted((coord, coord + sign * t2))
            for a, b, z0, z1 in pieces:
                if normal == "y":
                    walls.append(Wall(r.id, a, c0, b, c1, z0, z1))
                else:
                    walls.append(Wall(r.id, c0, a, c1, b, z0, z1))
    return walls


# ----------------------------------------------------------------------------------------------
# Furniture and decorations
# ----------------------------------------------------------------------------------------------


def _box_overlap3(a, b, margin: float = 0.0) -> bool:
    return all(a[k] < b[k + 3] + margin and b[k] < a[k + 3] + margin for k in range(3))


def _place_local(parts: list[LocalPart], side: str, ax: float, ay: float, W: float, D: float) -> list[Part]:
    """Map parts from the item frame (u along the wall, v away from it) to world coordinates.

    ``(ax, ay)`` is the world corner of the footprint at ``u = 0`` on the wall (``v = 0``).
    """
    def to_world(u: float, v: float) -> tuple[float, float]:
        if side == "S":
            return ax + u, ay + v
        if side == "N":
            return ax + u, ay - v
        if side == "W":
            return ax + v, ay + u
        return ax - v, ay + u  # "E"

    out = []
    for p in parts:
        (x, y) = to_world(p.u, p.v)
        if p.shape == "box":
            su, sv = p.su, p.sv
            hx, hy = (su, sv) if side in ("S", "N") else (sv, su)
            size = (hx, hy, p.sz)
        else:
            size = (p.su, p.sz, 0.0) if p.shape == "cylinder" else (p.su, 0.0, 0.0)
        axis = p.axis
        if p.shape == "cylinder" and axis != "z":
            along_u = axis == "u"
            axis = ("x" if along_u else "y") if side in ("S", "N") else ("y" if along_u else "x")
            size = (p.su, p.sv, 0.0)
        out.append(Part(p.shape, (round(x, 4), round(y, 4), round(p.z, 4)), tuple(round(s, 4) for s in size),
                        p.color, axis, p.texture, p.emission))
    return out


def _furnish(rng: np.random.Generator, house: House) -> None:
    cfg = house.config
    t2 = cfg.wall_thickness / 2
    oid = 0
    for room in house.rooms:
        pal = Palette(rng, room_hue=float(rng.random()))
        ix0, iy0, ix1, iy1 = room.x0 + t2, room.y0 + t2, room.x1 - t2, room.y1 - t2
        keep_out = []  # footprints (x0, y0, x1, y1) no furniture may cover
        for d in house.doors:
            if room.id in (d.room_a, d.room_b):
                w = d.width / 2 + 0.3
                if d.normal == "x":
                    keep_out.append((d.x - 1.3, d.y - w, d.x + 1.3, d.y + w))
                else:
                    keep_out.append((d.x - w, d.y - 1.3, d.x + w, d.y + 1.3))
        cx, cy = room.center
        keep_out.append((cx - 0.5, cy - 0.5, cx + 0.5, cy + 0.5))
        placed: list[HouseObject] = []
        # a rug in the middle of some rooms (never blocks)
        if room.kind != "hallway" and rng.random() < 0.5:
            w = min(ix1 - ix0 - 1.6, rng.uniform(1.4, 2.6))
            dd = min(iy1 - iy0 - 1.6, rng.uniform(1.0, 2.0))
            if w > 0.8 and dd > 0.6:
                tex = TextureSpec(str(rng.choice(["stripes", "diamonds", "checker", "dots"])), pal.fabric(), pal.fabric(),
                                  period=int(rng.integers(2, 5)), seed=int(rng.integers(2**31)))
                part = Part("box", (cx, cy, 0.005), (w / 2, dd / 2, 0.005), tex.color1, texture=tex)
                placed.append(HouseObject(oid, room.id, "rug", "rug", [part]))
                oid += 1
        signature, optional = ROOM_CATALOGUE[room.kind]
        lo, hi = cfg.furniture_per_room
        count = int(rng.integers(lo, hi + 1))
        wanted = list(signature)[:count] + [str(rng.choice(optional)) for _ in range(max(0, count - len(signature)))]
        for kind in wanted:
            obj = _try_place(rng, FURNITURE[kind], kind, "furniture", pal, (ix0, iy0, ix1, iy1), keep_out, placed,
                             oid, room.id, house)
            if obj is not None:
                placed.append(obj)
                oid += 1
        lo, hi = cfg.decorations_per_room
        for _ in range(int(rng.integers(lo, hi + 1))):
            names = list(DECORATIONS)
            kind = str(rng.choice(names, p=np.array([DECORATION_WEIGHTS[k] for k in names])))
            obj = _try_place(rng, DECORATIONS[kind], kind, "decoration", pal, (ix0, iy0, ix1, iy1), keep_out, placed,
                             oid, room.id, house)
            if obj is not None:
                placed.append(obj)
                oid += 1
        house.objects.extend(placed)
    _ensure_connected(house)


def _try_place(rng, maker, kind, category, pal, interior, keep_out, placed, oid, room_id, house):
    """Try a few random spots for one item; ``None`` if none fits."""
    ix0, iy0, ix1, iy1 = interior
    cfg = house.config
    for _ in range(25):
        parts, W, D, placement = maker(rng, pal)
        if placement == "free":
            clearance = 0.75
            side = "S" if rng.random() < 0.5 else "W"
            Lx, Ly = (W, D) if side == "S" else (D, W)
            if ix1 - ix0 - 2 * clearance < Lx or iy1 - iy0 - 2 * clearance < Ly:
                continue
            x0 = rng.uniform(ix0 + clearance, ix1 - clearance - Lx)
            y0 = rng.uniform(iy0 + clearance, iy1 - clearance - Ly)
            ax, ay = x0, y0
        else:
            side = str(rng.choice(["S", "N", "W", "E"]))
            length = (ix1 - ix0) if side in ("S", "N") else (iy1 - iy0)
            if length < W + 0.1:
                continue
            if placement == "corner":
                s = 0.02 if rng.random() < 0.5 else length - W - 0.02
            else:
                s = rng.uniform(0.02, length - W - 0.02)
            gap = 0.0 if category == "decoration" else 0.01
            if side == "S":
                ax, ay = ix0 + s, iy0 + gap
            elif side == "N":
                ax, ay = ix0 + s, iy1 - gap
            elif side == "W":
                ax, ay = ix0 + gap, iy0 + s
            else:
                ax, ay = ix1 - gap, iy0 + s
        world = _place_local(parts, side, ax, ay, W, D)
        obj = HouseObject(oid, room_id, kind, category, world)
        bb = obj.bbox()
        if bb[0] < ix0 - 1e-6 or bb[1] < iy0 - 1e-6 or bb[3] > ix1 + 1e-6 or bb[4] > iy1 + 1e-6:
            continue
        if bb[5] > cfg.wall_height - 0.05:
            continue
        if category == "furniture":
            if any(bb[0] < k[2] and k[0] < bb[3] and bb[1] < k[3] and k[1] < bb[4] for k in keep_out):
                continue
        else:  # decorations keep clear of door openings only (they hang above furniture)
            if any(bb[0] < k[2] and k[0] < bb[3] and bb[1] < k[3] and k[1] < bb[4] for k in keep_out[:-1]):
                continue
        if any(_box_overlap3(bb, o.bbox(), 0.08) for o in placed if o.category != "rug"):
            continue
        return obj
    return None


def _ensure_connected(house: House) -> None:
    """Drop furniture until every door's approach points and every room centre share one free component."""
    from scipy import ndimage

    cfg = house.config
    for _ in range(50):
        fs = house.free_space(0.2, 0.05)
        labels, _n = ndimage.label(fs.free)
        pts = [p for d in house.doors for p in d.approach_points(0.45)] + [r.center for r in house.rooms]
        owners = [(d.room_a, d.room_b) for d in house.doors for _ in range(2)] + [(r.id,) for r in house.rooms]
        labs = []
        for (x, y) in pts:
            i, j = fs.world_to_cell(x, y)
            labs.append(int(labels[i, j]) if 0 <= i < labels.shape[0] and 0 <= j < labels.shape[1] else 0)
        counts = np.bincount([lab for lab in labs if lab > 0], minlength=1)
        main = int(np.argmax(counts)) if counts.size > 1 else 0
        bad_rooms = sorted({r for lab, own in zip(labs, owners) if lab == 0 or lab != main for r in own})
        if not bad_rooms:
            return
        victims = [o for o in house.objects if o.room in bad_rooms and o.category == "furniture"]
        if not victims:
            raise RuntimeError(
                f"house seed {house.seed}: rooms {bad_rooms} are unreachable even without furniture "
                f"(door_width={cfg.door_width}, wall_thickness={cfg.wall_thickness})"
            )
        house.objects.remove(victims[-1])
