"""Procedural houses: determinism, layout families, connectivity, free space, JSON, textures, top-down map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pewm.geometry import AgentState
from pewm.sim.house import FAMILIES, House, HouseConfig, generate_house
from pewm.sim.textures import TEXTURE_KINDS, TextureSpec, make_texture
from pewm.sim.topdown import top_down_image, topdown_size, world_to_topdown_pixel

SEEDS = range(4)


@pytest.fixture(scope="module")
def houses():
    """A few houses of every family (generation is ~20 ms each)."""
    return {fam: [generate_house(s, HouseConfig(family=fam, min_rooms=2, max_rooms=8)) for s in SEEDS] for fam in FAMILIES}


def test_same_seed_same_house_and_different_seeds_differ():
    a, b = generate_house(7), generate_house(7)
    assert a.to_dict() == b.to_dict()
    c = generate_house(8)
    assert c.to_dict() != a.to_dict()


def test_family_drawn_from_seed_covers_all_families():
    seen = {generate_house(s, HouseConfig(furniture_per_room=(0, 0), decorations_per_room=(0, 0))).family
            for s in range(24)}
    assert seen == set(FAMILIES)


def test_json_round_trip(houses):
    for h in houses["grid"][:2] + houses["U"][:1]:
        s = json.dumps(h.to_dict())
        back = House.from_dict(json.loads(s))
        assert back.to_dict() == h.to_dict()
        assert House.from_json(h.to_json()).to_dict() == h.to_dict()


def test_room_counts_names_and_room_at(houses):
    for fam, hs in houses.items():
        for h in hs:
            assert h.family == fam
            assert 2 <= len(h.rooms) <= 8
            assert len({r.id for r in h.rooms}) == len(h.rooms)
            assert all(r.name and r.kind for r in h.rooms)
            xmin, ymin, xmax, ymax = h.bounds
            for r in h.rooms:
                assert h.room_at(*r.center) == r.id
                assert xmin <= r.x0 < r.x1 <= xmax and ymin <= r.y0 < r.y1 <= ymax
                assert 2.5 <= min(r.size) or (r.kind == "hallway" and 1.5 <= min(r.size))
            assert h.room_at(xmin - 1.0, ymin - 1.0) is None


def test_rooms_do_not_overlap(houses):
    for hs in houses.values():
        for h in hs:
            for i, a in enumerate(h.rooms):
                for b in h.rooms[i + 1:]:
                    ox = min(a.x1, b.x1) - max(a.x0, b.x0)
                    oy = min(a.y1, b.y1) - max(a.y0, b.y0)
                    assert not (ox > 1e-6 and oy > 1e-6), (h.family, h.seed, a.id, b.id)


def test_door_graph_connects_all_rooms(houses):
    for hs in houses.values():
        for h in hs:
            seen, stack = {0}, [0]
            while stack:
                r = stack.pop()
                for d in h.doors:
                    for u, v in ((d.room_a, d.room_b), (d.room_b, d.room_a)):
                        if u == r and v not in seen:
                            seen.add(v)
                            stack.append(v)
            assert seen == {r.id for r in h.rooms}


def test_doors_passable_shortest_paths_between_all_room_centres(houses):
    for hs in houses.values():
        for h in hs[:2]:
            fs = h.free_space(agent_radius=0.2, resolution=0.05)
            c0 = h.rooms[0].center
            assert fs.is_free(*c0)
            for r in h.rooms[1:]:
                path = fs.shortest_path(c0, r.center)
                assert path is not None, (h.family, h.seed, r.id)
                for p, q in zip(path[:-1], path[1:]):
                    assert fs.segment_is_free(*p, *q)


def test_free_space_excludes_walls_and_furniture(houses):
    h = houses["grid"][0]
    fs = h.free_space()
    for w in h.walls:
        if w.z0 == 0.0:
            assert not fs.is_free((w.x0 + w.x1) / 2, (w.y0 + w.y1) / 2)
    for o in h.furniture:
        b = o.bbox()
        assert not fs.is_free((b[0] + b[3]) / 2, (b[1] + b[4]) / 2), o.kind
    # outside the house is never free
    xmin, ymin, _, _ = h.bounds
    assert not fs.is_free(xmin - 0.3, ymin - 0.3)
    # a larger agent has less room
    assert h.free_space(agent_radius=0.3).free.sum() < fs.free.sum()


def test_furniture_and_decorations_present_and_inside_their_room(houses):
    kinds = set()
    for hs in houses.values():
        for h in hs:
            assert h.furniture, (h.family, h.seed)
            for o in h.objects:
                kinds.add(o.kind)
                r = h.rooms[o.room]
                b = o.bbox()
                assert r.x0 - 1e-6 <= b[0] and b[3] <= r.x1 + 1e-6 and r.y0 - 1e-6 <= b[1] and b[4] <= r.y1 + 1e-6
                assert b[5] <= h.wall_height
    assert {"painting"} <= kinds
    assert len(kinds) >= 10


def test_rooms_look_different(houses):
    for hs in houses.values():
        for h in hs:
            looks = {(r.wall_texture.kind, r.wall_color, r.floor_texture.kind, r.floor_color) for r in h.rooms}
            assert len(looks) == len(h.rooms)


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="max_rooms=9"):
        HouseConfig(max_rooms=9)
    with pytest.raises(ValueError, match="'mansion'"):
        HouseConfig(family="mansion")
    with pytest.raises(ValueError, match="door_width"):
        HouseConfig(door_width=5.0)
    with pytest.raises(ValueError, match="unknown field"):
        HouseConfig.from_dict({"rooms": 3})


def test_textures_all_kinds_deterministic():
    for k, kind in enumerate(TEXTURE_KINDS):
        spec = TextureSpec(kind, (0.8, 0.2, 0.2), (0.1, 0.1, 0.6), period=3, seed=k)
        img = make_texture(spec, 64)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert np.array_equal(img, make_texture(spec, 64))
        assert TextureSpec.from_dict(spec.to_dict()) == spec
        if kind != "plain":
            assert img.reshape(-1, 3).std(0).max() > 10, kind
    with pytest.raises(ValueError, match="'marble'"):
        TextureSpec("marble", (0, 0, 0), (1, 1, 1))


def test_top_down_image_north_up_with_path_and_agent(houses):
    h = houses["corridor"][0]
    img = top_down_image(h, px_per_m=10)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[:2] == topdown_size(h, 10)
    r = h.rooms[0]
    c_lo, r_lo = world_to_topdown_pixel(h, r.center[0], r.y0 + 0.5, 10)
    c_hi, r_hi = world_to_topdown_pixel(h, r.center[0], r.y1 - 0.5, 10)
    assert r_hi < r_lo  # world +y is up in the image
    fs = h.free_space()
    path = fs.shortest_path(h.rooms[0].center, h.rooms[1].center)
    img2 = top_down_image(h, path=path, px_per_m=10, agent_state=AgentState(*h.rooms[0].center, 0.0))
    assert img2.shape == img.shape and (img2 != img).any()
    col, row = (int(v) for v in world_to_topdown_pixel(h, *h.rooms[0].center, 10))
    assert tuple(img2[row, col]) != tuple(img[row, col])  # the agent marker / path start is drawn there
