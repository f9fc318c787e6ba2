"""MuJoCo RGB-D rendering: shapes, determinism, metric z-depth, exact agreement with the intrinsics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pewm.geometry import AgentState, intrinsics_from_fov, project_points, unproject_depth
from pewm.sim.house import HouseConfig, generate_house
from pewm.sim.meshes import MeshBuilder
from pewm.sim.render import RGBDRenderer


@pytest.fixture(scope="module")
def house():
    return generate_house(3, HouseConfig(family="grid"))


@pytest.fixture(scope="module")
def renderer(house):
    r = RGBDRenderer(house, 64, 64, 90.0)
    yield r
    r.close()


def _view(house):
    """A free spot facing 2.5 m of open floor (no furniture, no rug) in the first room that has one."""
    free = house.free_space(agent_radius=0.2)
    rugs = [o.bbox() for o in house.objects if o.category == "rug"]

    def clear(x, y, yaw):
        ex, ey = x + 2.5 * math.cos(yaw), y + 2.5 * math.sin(yaw)
        if not free.segment_is_free(x, y, ex, ey):
            return False
        for s in np.linspace(0.0, 2.5, 26):  # a 1 m wide corridor ahead must be rug-free
            px, py = x + s * math.cos(yaw), y + s * math.sin(yaw)
            if any(b[0] - 0.5 <= px <= b[3] + 0.5 and b[1] - 0.5 <= py <= b[4] + 0.5 for b in rugs):
                return False
        return True

    for r in house.rooms:
        for fx in (0.5, 0.3, 0.7):
            for fy in (0.5, 0.3, 0.7):
                x, y = r.x0 + fx * (r.x1 - r.x0), r.y0 + fy * (r.y1 - r.y0)
                for k in range(16):
                    yaw = k * math.pi / 8
                    if free.is_free(x, y) and clear(x, y, yaw):
                        return AgentState(x, y, yaw)
    raise AssertionError("no open view in this house")


def test_shapes_dtypes_and_depth_range(renderer, house):
    rgb, depth = renderer.render(_view(house).camera_pose(1.25))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert depth.shape == (64, 64) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth > 0).all()  # indoors every ray hits something
    assert depth.max() < 30.0
    assert rgb.std() > 5  # not a blank image
    assert renderer.intrinsics == intrinsics_from_fov(64, 64, 90.0)


@pytest.mark.parametrize("res", [128, 256])
def test_other_resolutions(house, res):
    with RGBDRenderer(house, res, res) as r:
        rgb, depth = r.render(_view(house).camera_pose(1.25))
    assert rgb.shape == (res, res, 3) and depth.shape == (res, res)
    assert (depth > 0).all()


def test_same_house_same_pose_identical_images(house, renderer):
    pose = _view(house).camera_pose(1.25)
    a = renderer.render(pose)
    b = renderer.render(pose)
    with RGBDRenderer(generate_house(3, HouseConfig(family="grid")), 64, 64) as other:
        c = other.render(pose)
    for x, y in ((a, b), (a, c)):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])


def test_depth_is_metric_z_depth_on_the_floor(renderer, house):
    """Looking level at height h, floor pixel row v has z-depth h * fy / (v - cy) exactly."""
    h = 1.25
    rgb, depth = renderer.render(_view(house).camera_pose(h))
    K = renderer.intrinsics
    rows = np.arange(K.height - 6, K.height)
    expected = h * K.fy / (rows - K.cy)
    np.testing.assert_allclose(depth[rows, K.width // 2], expected, rtol=2e-3)


def test_depth_ahead_matches_the_open_floor_plan(renderer, house):
    """Facing 2.5 m of free floor, the centre ray travels at least that far, and no farther than the
    house allows (the bounds' diagonal)."""
    v = _view(house)
    rgb, depth = renderer.render(v.camera_pose(1.25))
    centre = float(depth[31:33, 31:33].min())
    xmin, ymin, xmax, ymax = house.bounds
    assert 2.5 - 0.2 <= centre <= math.hypot(xmax - xmin, ymax - ymin)


def test_nonsquare_images_match_intrinsics(house):
    with RGBDRenderer(house, 96, 64, 70.0) as r:
        rgb, depth = r.render(_view(house).camera_pose(1.0))
        K = r.intrinsics
    assert rgb.shape == (64, 96, 3) and K.width == 96 and K.height == 64
    rows = np.arange(58, 64)
    np.testing.assert_allclose(depth[rows, 48], 1.0 * K.fy / (rows - K.cy), rtol=2e-3)


def test_box_mesh_texture_coordinates_are_world_scaled():
    mb = MeshBuilder()
    mb.add_box_world((0, 0, 0, 4, 0.1, 2.6), texture_metres=2.0)
    v, f, uv = mb.arrays()
    assert v.shape == (24, 3) and f.shape == (12, 3) and uv.shape == (24, 2)
    assert uv.max() == pytest.approx(2.0)  # 4 m along x / 2 m per texture copy


def test_render_after_close_raises(house):
    r = RGBDRenderer(house, 32, 32)
    r.close()
    r.close()  # idempotent
    with pytest.raises(RuntimeError, match="close"):
        r.render(np.eye(4))


def test_bad_pose_rejected(renderer):
    with pytest.raises(ValueError, match="4x4"):
        renderer.render(np.eye(3))


# ---- reprojection: frame t's depth, unprojected with pose t, must land on frame t+1's depth -------


def reprojection_error(depth_a, pose_a, depth_b, pose_b, K) -> float:
    """Median relative depth disagreement over pixels of frame a that project inside frame b."""
    H, W = depth_a.shape
    pts = unproject_depth(torch.from_numpy(depth_a).double(), K, pose_a).reshape(-1, 3)
    uv, z = project_points(pts, K, pose_b)
    inside = (z > 0.05) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    inside &= torch.from_numpy(depth_a).reshape(-1) > 0
    grid = torch.stack([uv[:, 0] / (W - 1) * 2 - 1, uv[:, 1] / (H - 1) * 2 - 1], -1)[inside].float()
    sampled = F.grid_sample(torch.from_numpy(depth_b)[None, None], grid[None, None], mode="bilinear",
                            align_corners=True)[0, 0, 0].double()
    rel = (sampled - z[inside]).abs() / sampled.clamp_min(1e-6)
    assert inside.float().mean() > 0.3, "too few co-visible pixels for a meaningful test"
    return float(rel.median())


def test_reprojection_consistency_on_env_frames():
    from pewm.sim.env import EmbodiedEnv, SimConfig

    env = EmbodiedEnv(SimConfig(resolution=64))
    house = generate_house(11, HouseConfig(family="corridor", furniture_per_room=(2, 3)))
    env.reset(seed=0, options={"house": house})
    # start in the hallway (a long free stretch) facing along it
    hall = house.rooms[0]
    start = AgentState(hall.x0 + 1.0, hall.center[1], 0.0)
    assert env.free_space.is_free(start.x, start.y)
    obs = env.teleport(start)
    actions = [0, 1, 0, 2, 0, 2, 0, 1, 0, 0, 1, 0]  # consecutive actions mostly differ
    frames = [obs]
    for a in actions:
        obs, _, _, _, info = env.step(a)
        assert not info["collided"]
        frames.append(obs)
    K = env.intrinsics.matrix
    good, shifted = [], []
    for t in range(len(actions)):
        a, b = frames[t], frames[t + 1]
        good.append(reprojection_error(a["depth"], a["pose"], b["depth"], b["pose"], K))
        if t + 2 < len(frames) and actions[t] != actions[t + 1]:
            # off-by-one: frame t paired with pose t+1 and frame t+1 with pose t+2
            shifted.append(reprojection_error(a["depth"], b["pose"], b["depth"], frames[t + 2]["pose"], K))
    env.close()
    assert max(good) < 0.005, good
    assert float(np.median(good)) < 0.001, good
    assert float(np.median(shifted)) > 0.02, shifted
