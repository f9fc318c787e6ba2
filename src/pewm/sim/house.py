"""Procedural houses: rooms, walls, doors, furniture and wall decorations, deterministic by seed.

Every element is axis-aligned. Rooms are rectangles on the floor plan (``x0 <= x <= x1``,
``y0 <= y <= y1``, wall centre lines) that share edges with their neighbours; each room draws its own
half-thickness walls on the inside of its rectangle, so the two faces of a shared wall carry the
colours of the two rooms. Doors are gaps in both halves of a shared wall (with a lintel above).

A :class:`House` is plain data and round-trips through JSON (``to_dict`` / ``from_dict``); the
renderer (:mod:`pewm.sim.render`) and the top-down map (:mod:`pewm.sim.topdown`) only read it.

This module holds :func:`generate_house` and re-exports the data classes; the pieces live in
:mod:`~pewm.sim.house_model` (the data classes and their JSON form), :mod:`~pewm.sim.house_layout`
(floor-plan rectangles of each layout family), :mod:`~pewm.sim.house_structure` (rooms, doors and
walls) and :mod:`~pewm.sim.house_furnish` (furniture and decorations).
"""

from __future__ import annotations

import numpy as np

from pewm.sim.house_furnish import _furnish
from pewm.sim.house_layout import Rect, _layout_chain, _layout_corridor, _layout_grid
from pewm.sim.house_model import FAMILIES, Door, House, HouseConfig, HouseObject, Part, Room, Wall
from pewm.sim.house_structure import _make_doors, _make_rooms, _make_walls

__all__ = ["FAMILIES", "Door", "House", "HouseConfig", "HouseObject", "Part", "Rect", "Room", "Wall", "generate_house"]


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
