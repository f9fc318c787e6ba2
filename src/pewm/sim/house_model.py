"""The house as plain data: :class:`HouseConfig`, :class:`Room`, :class:`Door`, :class:`Wall`,
:class:`Part`, :class:`HouseObject` and :class:`House`, each with its JSON round trip.

Every element is axis-aligned. Rooms are rectangles on the floor plan (``x0 <= x <= x1``,
``y0 <= y <= y1``, wall centre lines); walls are boxes, objects are made of box, cylinder and sphere
primitives. :func:`pewm.sim.house.generate_house` builds them; the renderer
(:mod:`pewm.sim.render`) and the top-down map (:mod:`pewm.sim.topdown`) only read them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from pewm.sim.freespace import FreeSpaceGrid, house_free_space
from pewm.sim.textures import TextureSpec

FAMILIES = ("grid", "corridor", "L", "U")
"""Layout families: a grid of rooms, a hallway with rooms on both sides, L- and U-shaped chains."""


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
        return house_free_space(self.rooms, self.walls, self.objects, self.bounds, agent_radius, resolution)

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
