"""Furnishing a house: furniture, rugs and wall decorations placed room by room, then thinned out
until every door and room centre is reachable.

The items themselves (their parts in an item frame, palettes, which items suit which room) come
from :mod:`pewm.sim.furniture`; this module places them against walls or free in the room and maps
them to world coordinates.
"""

from __future__ import annotations

import numpy as np

from pewm.sim.furniture import DECORATION_WEIGHTS, DECORATIONS, FURNITURE, ROOM_CATALOGUE, LocalPart, Palette
from pewm.sim.house_model import House, HouseObject, Part
from pewm.sim.textures import TextureSpec


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
