"""The box-layout depth guess (pewm.eval.layout) and the render-layout baseline, on the analytic box
room of memory_scenes (floor z = 0, ceiling z = 2.5, walls x = 0 / 6, y = 0 / 5)."""

from __future__ import annotations

import numpy as np
import pytest

import memory_scenes as S
from pewm.eval.baselines import BaselineConfig, render_layout, render_only
from pewm.eval.layout import layout_depth, oracle_wall_distances, room_planes
from pewm.model import MemoryBuilder, from_preset

SIZE = 32


def _scene(poses, with_box=False, size=SIZE):
    K = S.intrinsics(size).matrix
    rgb, depth, P = S.frames(poses, K, size, size, with_box=with_box)
    return rgb, depth, P, K


def test_room_planes_are_the_floor_and_ceiling():
    _, depth, P, K = _scene(S.look_around(1.5, 2.5, 8, pitch_deg=-20.0) + S.look_around(1.5, 2.5, 8, pitch_deg=20.0))
    floor_z, ceiling_z = room_planes(depth, P, K)
    assert abs(floor_z - S.ROOM[0][2]) < 0.02 and abs(ceiling_z - S.ROOM[1][2]) < 0.02


def test_room_planes_refuse_what_is_not_a_room():
    _, depth, P, K = _scene([S.pose(1.5, 2.5, 180.0)])
    assert room_planes(np.zeros_like(depth), P, K) is None  # no valid depth
    # a history that saw only a thin slab of heights (a camera looking at a wall band) is no room
    band = np.where(np.abs(np.arange(SIZE) - (SIZE - 1) / 2)[None, :, None] < 3, depth, 0.0).astype(np.float32)
    assert room_planes(band, P, K) is None
    with pytest.raises(ValueError, match="history_depth"):
        room_planes(depth[0], P, K)
    with pytest.raises(ValueError, match="poses"):
        room_planes(depth, P[:, :3], K)


def test_layout_depth_is_exact_in_a_box_room_facing_a_wall():
    # facing the x = 0 wall from x = 1.5 in the middle of the room: every column sees that wall,
    # the floor or the ceiling, so the layout with the true wall distance is the true depth
    P = [S.pose(1.5, 2.5, 180.0)]
    _, depth, P, K = _scene(P)
    guess = layout_depth(P, K, SIZE, SIZE, (0.0, 2.5), wall_m=1.5)
    np.testing.assert_allclose(guess, depth, rtol=1e-5, atol=1e-5)
    assert (depth < 1.5 - 1e-3).any(), "the view holds floor and ceiling nearer than the wall"


def test_layout_depth_planes_for_pitched_cameras():
    # looking straight down from 1.25 m: the floor is perpendicular to the optical axis, z-depth 1.25
    P = np.stack([S.pose(3.0, 2.5, 0.0, pitch_deg=-90.0)])
    K = S.intrinsics(SIZE).matrix
    np.testing.assert_allclose(layout_depth(P, K, SIZE, SIZE, (0.0, 2.5), wall_m=50.0), 1.25, rtol=1e-6)
    # looking up: the ceiling, 1.25 m above the camera
    P = np.stack([S.pose(3.0, 2.5, 0.0, pitch_deg=90.0)])
    np.testing.assert_allclose(layout_depth(P, K, SIZE, SIZE, (0.0, 2.5), wall_m=50.0), 1.25, rtol=1e-6)
    # pitched 30 degrees down, against the ray-cast room without walls in range (planes only)
    P = [S.pose(3.0, 2.5, 0.0, pitch_deg=-30.0)]
    _, depth, P, K = _scene(P)
    guess = layout_depth(P, K, SIZE, SIZE, (0.0, 2.5), wall_m=1e3)
    on_planes = guess < 1e3
    # the true depth is never beyond the plane (nothing is under the floor), and equals it on most
    # pixels (where no wall comes first)
    assert np.all(depth[on_planes] <= guess[on_planes] * (1 + 1e-5))
    hits_plane = on_planes & np.isclose(guess, depth, rtol=1e-5)
    assert hits_plane.mean() > 0.4


def test_layout_depth_without_planes_and_bad_input():
    P = np.stack([S.pose(1.0, 1.0, 0.0)])
    K = S.intrinsics(SIZE).matrix
    assert np.all(layout_depth(P, K, SIZE, SIZE, None, wall_m=3.0) == 3.0)
    # a camera above the ceiling sees no plane in front of it
    above = np.stack([S.pose(1.0, 1.0, 0.0, height=4.0, pitch_deg=30.0)])
    assert np.all(layout_depth(above, K, SIZE, SIZE, (0.0, 2.5), wall_m=3.0) <= 3.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="wall_m"):
            layout_depth(P, K, SIZE, SIZE, None, wall_m=bad)
    with pytest.raises(ValueError, match="target_poses"):
        layout_depth(P[0], K, SIZE, SIZE, None, wall_m=2.0)
    with pytest.raises(ValueError, match="layout_wall_m"):
        BaselineConfig(layout_wall_m=0.0).validate()


def test_render_layout_is_render_only_with_layout_depth_in_the_holes():
    cfg = from_preset("micro", reader="voxel-render")
    size = cfg.image_height  # the baselines take frames and intrinsics at the model's resolution
    history = S.look_around(1.5, 1.5, 6)
    rgb, depth, P, K = _scene(history, with_box=True, size=size)
    targets = np.stack([S.pose(4.5, 3.5, 200.0), S.pose(2.0, 4.0, -60.0)])
    builder = MemoryBuilder(cfg)
    base = render_only(builder, rgb, depth, P, K, targets)
    lay = render_layout(builder, rgb, depth, P, K, targets, wall_m=2.0)
    assert np.array_equal(lay["rgb"], base["rgb"]) and np.array_equal(lay["coverage"], base["coverage"])
    cov = base["coverage"]
    assert cov.any() and (~cov).any()
    assert np.array_equal(lay["depth"][cov], base["depth"][cov]) and np.array_equal(lay["render_depth"], base["depth"])
    expect = layout_depth(targets, K, size, size, lay["planes"], 2.0)
    assert np.array_equal(lay["depth"][~cov], expect[~cov])
    assert lay["planes"] is not None and abs(lay["planes"][0]) < 0.05 and abs(lay["planes"][1] - 2.5) < 0.05
    # without a known up axis: no planes, the wall distance in every hole
    flat = render_layout(builder, rgb, depth, P, K, targets, wall_m=2.0, z_up=False)
    assert flat["planes"] is None and np.all(flat["depth"][~cov] == 2.0)


def test_oracle_wall_distances_recover_the_wall_and_per_column_walls_work():
    _, depth, P, K = _scene([S.pose(1.5, 2.5, 180.0)])
    plane = layout_depth(P, K, SIZE, SIZE, (0.0, 2.5), wall_m=1e3)
    walls = oracle_wall_distances(depth, plane)
    assert walls.shape == (1, SIZE)
    np.testing.assert_allclose(walls, 1.5, rtol=1e-5)
    np.testing.assert_allclose(layout_depth(P, K, SIZE, SIZE, (0.0, 2.5), walls), depth, rtol=1e-5, atol=1e-5)
    # a column that sees no wall gets the frame's farthest plane depth
    w = oracle_wall_distances(np.full((1, 4, 2), 10.0), np.full((1, 4, 2), 5.0))
    assert w.tolist() == [[5.0, 5.0]]
    with pytest.raises(ValueError, match="per-column"):
        layout_depth(P, K, SIZE, SIZE, (0.0, 2.5), np.ones((1, SIZE + 1)))
    with pytest.raises(ValueError, match="oracle_wall_distances"):
        oracle_wall_distances(depth, plane[0])
