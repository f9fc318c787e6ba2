"""Rooms, doors and walls of a house, built from a floor-plan layout (:mod:`pewm.sim.house_layout`).

Each room draws its own half-thickness walls on the inside of its rectangle, so the two faces of a
shared wall carry the colours of the two rooms. Doors are gaps in both halves of a shared wall (with
a lintel above); the doors connect every room (a random spanning tree over the shared walls, plus
the layout's structural doors and a few extra ones).
"""

from __future__ import annotations

import numpy as np

from pewm.sim.house_layout import Rect, _q, _shared_edge
from pewm.sim.house_model import Door, HouseConfig, Room, Wall
from pewm.sim.textures import FLOOR_KINDS, WALL_KINDS, TextureSpec, hsv

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
