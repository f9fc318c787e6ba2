"""Imagined depth made into a box room before it is fused (``MemoryBuildConfig.imagined_depth="box"``),
on the analytic room of memory_scenes (floor z = 0, ceiling z = 2.5, walls x = 0 / 6, y = 0 / 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memory_scenes as S
from pewm.geometry.layout import box_depth, column_wall_distances, layout_depth
from pewm.model import MemoryBuildConfig, MemoryBuilder, from_preset
from pewm.model.rollout_memory import RolloutMemory

SIZE = 32
PLANES = (S.ROOM[0][2], S.ROOM[1][2])


def _view(x=1.5, y=2.5, yaw=180.0, with_box=False):
    K = S.intrinsics(SIZE).matrix
    rgb, depth, P = S.frames([S.pose(x, y, yaw)], K, SIZE, SIZE, with_box=with_box)
    return rgb, depth, P, K


def _noisy(depth, seed=0, spread=0.3):
    """Imagined-like depth: per-pixel multiplicative noise and a few far speckles."""
    rng = np.random.default_rng(seed)
    d = depth * np.exp(rng.normal(0.0, spread, depth.shape))
    d[rng.random(depth.shape) < 0.05] = 8.0
    return d.astype(np.float32)


def _absrel(pred, truth):
    return float(np.mean(np.abs(pred - truth) / truth))


def test_box_depth_of_noisy_depth_is_the_room_again():
    _, depth, P, K = _view()
    noisy = _noisy(depth)
    boxed = box_depth(noisy, P, K, PLANES)
    assert boxed.shape == depth.shape and boxed.dtype == np.float32
    assert _absrel(noisy, depth) > 0.2 and _absrel(boxed, depth) < 0.4 * _absrel(noisy, depth)
    # floor and ceiling pixels come from the planes, not from the noise (except where a column's
    # estimated wall is nearer than the plane)
    plane = layout_depth(P, K, SIZE, SIZE, PLANES, 1e3)
    on_plane = plane < 0.95 * 1.5  # nearer than the wall (z-depth 1.5 m): the floor or the ceiling
    assert on_plane.any()
    assert _absrel(boxed[on_plane], depth[on_plane]) < 0.3 * _absrel(noisy[on_plane], depth[on_plane])
    # exact depth stays exact (walls are constant per column for a level camera)
    np.testing.assert_allclose(box_depth(depth, P, K, PLANES), depth, rtol=1e-4)


def test_column_wall_distances_fall_back_where_a_column_shows_no_wall():
    far = np.full((1, 4, 3), 10.0)
    plane = np.full((1, 4, 3), 5.0)
    assert column_wall_distances(far, plane).tolist() == [[5.0] * 3]  # the farthest plane depth
    assert column_wall_distances(far, plane, fallback=2.0).tolist() == [[2.0] * 3]
    near = far.copy()
    near[0, :, 1] = [1.0, 1.2, np.nan, 0.0]  # invalid values are ignored: the median of 1.0 and 1.2
    assert column_wall_distances(near, plane, fallback=2.0)[0].tolist() == pytest.approx([2.0, 1.1, 2.0])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="fallback"):
            column_wall_distances(far, plane, fallback=bad)
    with pytest.raises(ValueError, match="column_wall_distances"):
        column_wall_distances(far[0], plane[0])
    with pytest.raises(ValueError, match="box_depth"):
        box_depth(far[0], np.eye(4)[None], np.eye(3), PLANES)


def _memory(imagined_depth: str) -> tuple[RolloutMemory, list[np.ndarray]]:
    """A voxel-render rollout memory whose builder records the depth of every fuse."""
    mem = RolloutMemory(MemoryBuilder(from_preset("micro", reader="voxel-render"),
                                      MemoryBuildConfig(imagined_depth=imagined_depth)))
    fused: list[np.ndarray] = []
    inner = mem.builder.fuse

    def fuse(store, rgb, depth, K, poses):
        fused.append(np.asarray(depth).copy())
        return inner(store, rgb, depth, K, poses)

    mem.builder.fuse = fuse
    return mem, fused


def test_imagined_frames_are_fused_as_a_box_and_observed_frames_as_they_are():
    K = S.intrinsics(SIZE).matrix
    rgb_h, depth_h, P_h = S.frames(S.look_around(1.5, 2.5, 4), K, SIZE, SIZE, with_box=False)
    rgb, depth, P, _ = _view(4.0, 2.5, 0.0)  # an unseen view: facing the +x wall
    noisy = _noisy(depth, seed=1)
    mem, fused = _memory("box")
    assert mem.planes is None
    mem.add(rgb_h, depth_h, P_h, K)  # observed: fused unchanged, and they give the room's planes
    np.testing.assert_array_equal(fused[-1], depth_h)
    assert mem.planes == pytest.approx(PLANES, abs=0.05)
    mem.add(rgb, noisy, P, K, imagined=True)
    np.testing.assert_allclose(fused[-1], box_depth(noisy, P, K, mem.planes, fallback=1e3), rtol=1e-6)
    assert _absrel(fused[-1], depth) < 0.5 * _absrel(noisy, depth)
    assert mem.planes == pytest.approx(PLANES, abs=0.05), "imagined frames never move the planes"
    assert mem.copy().planes == mem.planes
    # novel-only fusion of a generated frame fuses the box depth where the map is empty
    mem, fused = _memory("box")
    mem.add(rgb_h, depth_h, P_h, K)
    mem.add(rgb, noisy, P, K, novel_only=True, imagined=True)
    got = fused[-1][0]
    boxed = box_depth(noisy, P, K, mem.planes, fallback=1e3)[0]
    assert np.all((got == 0) | np.isclose(got, boxed, rtol=1e-6)) and (got > 0).any()

    plain, fused_plain = _memory("model")
    plain.add(rgb_h, depth_h, P_h, K)
    plain.add(rgb, noisy, P, K, imagined=True)
    np.testing.assert_array_equal(fused_plain[-1], noisy)  # the default: as generated
    assert plain.planes is None  # (nothing is estimated unless asked)


def test_without_a_room_in_the_observed_frames_imagined_depth_is_fused_as_generated():
    K = S.intrinsics(SIZE).matrix
    rgb, depth, P, _ = _view()
    mem, fused = _memory("box")
    band = np.where(np.abs(np.arange(SIZE) - (SIZE - 1) / 2)[None, :, None] < 3, depth, 0.0).astype(np.float32)
    mem.add(rgb, band, P, K)  # a thin band of heights: no floor and ceiling
    assert mem.planes is None
    noisy = _noisy(depth)
    mem.add(rgb, noisy, P, K, imagined=True)
    np.testing.assert_array_equal(fused[-1], noisy)
    with pytest.raises(ValueError, match="imagined_depth"):
        MemoryBuildConfig(imagined_depth="plane")


def _room_memory(**cfg) -> tuple[RolloutMemory, list[np.ndarray]]:
    mem, fused = _memory("box")
    mem.builder.cfg = MemoryBuildConfig(imagined_depth="box", **cfg)
    K = S.intrinsics(SIZE).matrix
    mem.add(*S.frames(S.look_around(1.5, 2.5, 4), K, SIZE, SIZE, with_box=False)[:2],
            np.stack(S.look_around(1.5, 2.5, 4)), K)
    return mem, fused


def test_a_delayed_chunk_is_boxed_when_it_is_fused_and_a_tilted_camera_keeps_its_depth():
    K = S.intrinsics(SIZE).matrix
    rgb, depth, P, _ = _view(4.0, 2.5, 0.0)
    noisy = _noisy(depth, seed=2)
    mem, fused = _room_memory(imagined_fuse_delay_chunks=1)
    n = len(fused)
    mem.add(rgb, noisy, P, K, imagined=True)
    assert len(fused) == n and mem.pending == 1  # waiting: nothing fused yet
    mem.add(rgb, noisy, P, K, imagined=True)  # the next chunk fuses the first, as a box
    np.testing.assert_allclose(fused[-1], box_depth(noisy, P, K, mem.planes, fallback=1e3), rtol=1e-6)
    tilted = np.stack([S.pose(4.0, 2.5, 0.0, pitch_deg=-30.0)])
    _, d_t, _ = S.frames(tilted, K, SIZE, SIZE, with_box=False)
    mem.add(rgb, _noisy(d_t), tilted, K, imagined=True)
    mem.flush()
    np.testing.assert_array_equal(fused[-1], _noisy(d_t))  # the box assumes a level camera


def test_edges_are_those_of_the_generated_depth_not_of_the_box():
    K = S.intrinsics(SIZE).matrix
    rgb, depth, P, _ = _view(4.0, 2.5, 0.0)
    noisy = _noisy(depth, seed=3, spread=0.01)  # smooth, with far speckles: their edges
    mem, fused = _room_memory(imagined_edge_tol=0.1)
    mem.add(rgb, noisy, P, K, imagined=True)
    from pewm.model.rollout_memory import depth_edges

    edges = depth_edges(torch.as_tensor(noisy), 0.1).numpy()
    boxed = box_depth(noisy, P, K, mem.planes, fallback=1e3)
    assert 0 < edges.mean() < 1
    np.testing.assert_array_equal(fused[-1] == 0, edges)
    np.testing.assert_allclose(fused[-1][~edges], boxed[~edges], rtol=1e-6)
