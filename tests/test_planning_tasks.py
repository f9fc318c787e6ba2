"""Goal-reaching tasks (pewm.planning.tasks): every goal beyond view and reachable, determinism,
the visibility test on synthetic scenes, scoring with yaw wrap-around, errors, JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pewm.data import open_dataset
from pewm.geometry import AgentState, camera_pose_from_agent, heading_of_pose, intrinsics_from_fov
from pewm.geometry import project_points, unproject_depth
from pewm.planning import (
    GoalTask,
    TaskConfig,
    goal_visible_fraction,
    is_success,
    load_task_frames,
    make_tasks,
    pose_error,
    read_tasks,
    write_tasks,
)
from pewm.sim import SimConfig, generate_house

# the module's dataset has 101-frame episodes, two per split
SMALL = TaskConfig(prefix_range=(40, 101))


@pytest.fixture(scope="module")
def task_dataset(tmp_path_factory):
    """3 houses x 2 episodes x 100 steps at 64x64 (train/val/test one house each; ~3 s)."""
    from pewm.sim.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("tasks") / "ds"
    cfg = GenerateConfig(houses=3, episodes_per_house=2, steps=100, seed=7)
    generate_dataset(out, cfg)
    return out, cfg


@pytest.fixture(scope="module")
def small_tasks(task_dataset):
    root, _ = task_dataset
    return {split: make_tasks(root, split, n=4, seed=0, config=SMALL) for split in ("train", "val", "test")}


# ------------------------------------------------------------------------------ independent checks
def _visible_fraction_torch(goal_depth, goal_pose, start_depth, start_pose, K, stride, rel=0.05, abs_=0.05):
    """The visibility test again, through pewm.geometry's torch projection helpers."""
    K = torch.as_tensor(np.asarray(K), dtype=torch.float64)
    pts = unproject_depth(torch.as_tensor(goal_depth, dtype=torch.float64), K,
                          torch.as_tensor(goal_pose, dtype=torch.float64))[::stride, ::stride].reshape(-1, 3)
    uv, z = project_points(pts, K, torch.as_tensor(start_pose, dtype=torch.float64))
    H, W = start_depth.shape
    u = torch.floor(uv[:, 0] + 0.5).long()
    v = torch.floor(uv[:, 1] + 0.5).long()
    inside = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    d = torch.as_tensor(start_depth, dtype=torch.float64)[v[inside], u[inside]]
    seen = (d <= 0) | (z[inside] <= d * (1 + rel) + abs_)
    return float(seen.sum()) / pts.shape[0]


def _fresh_path_length(root, task):
    sim = SimConfig.from_dict(open_dataset(root).spec.generator["sim"])
    grid = generate_house(task.house_seed, sim.house).free_space(sim.agent_radius, sim.free_space_resolution)
    assert grid.is_free(*task.start_state[:2]) and grid.is_free(*task.goal_state[:2])
    pts = grid.shortest_path(task.start_state[:2], task.goal_state[:2])
    assert pts is not None, f"{task.task_id}: goal unreachable"
    return sum(math.dist(a, b) for a, b in zip(pts[:-1], pts[1:]))


def test_every_goal_is_beyond_view_and_reachable(task_dataset, small_tasks):
    root, _ = task_dataset
    ds = open_dataset(root)
    tasks = [t for ts in small_tasks.values() for t in ts]
    assert len(tasks) == 12
    for t in tasks:
        fr = load_task_frames(ds, t)
        ep = ds.read(t.episode, frames=(0, t.prefix))
        assert fr.rgb.shape[0] == fr.depth.shape[0] == fr.poses.shape[0] == t.prefix
        np.testing.assert_array_equal(fr.goal_rgb, ep.rgb[t.goal_frame])
        np.testing.assert_array_equal(fr.start_rgb, ep.rgb[t.prefix - 1])
        np.testing.assert_array_equal(fr.start_pose, ep.poses[t.prefix - 1])
        # the states are the poses' (x, y, heading)
        for frame, state in ((t.goal_frame, t.goal_state), (t.prefix - 1, t.start_state)):
            np.testing.assert_allclose(ep.poses[frame][:2, 3], state[:2], atol=1e-9)
            assert abs(math.remainder(float(heading_of_pose(ep.poses[frame])) - state[2], 2 * math.pi)) < 1e-6
        vis = _visible_fraction_torch(fr.goal_depth, ep.poses[t.goal_frame], fr.start_depth, fr.start_pose, fr.K,
                                      SMALL.visibility_stride)
        assert vis < SMALL.max_goal_visible, t
        assert vis == pytest.approx(t.visible_fraction, abs=1e-5)
        length = _fresh_path_length(root, t)
        assert SMALL.min_path_m <= length <= SMALL.max_path_m, t
        assert length == pytest.approx(t.path_length_m, abs=1e-5)
        turn = abs(math.degrees(math.remainder(t.goal_state[2] - t.start_state[2], 2 * math.pi)))
        assert t.turn_deg == pytest.approx(turn, abs=1e-5) and 0 <= t.turn_deg <= 180
        assert 0 <= t.goal_frame < t.prefix - 1 and SMALL.prefix_range[0] <= t.prefix <= SMALL.prefix_range[1]


def test_tasks_are_deterministic_spread_and_prefix_stable(task_dataset, small_tasks):
    root, _ = task_dataset
    again = make_tasks(open_dataset(root), "test", n=4, seed=0, config=SMALL)
    assert again == small_tasks["test"]
    assert make_tasks(root, "test", n=2, seed=0, config=SMALL) == small_tasks["test"][:2]
    other = make_tasks(root, "test", n=4, seed=1, config=SMALL)
    assert other != small_tasks["test"]
    for split, ts in small_tasks.items():
        assert len({t.task_id for t in ts}) == len(ts)  # no task twice
        assert {t.split for t in ts} == {split}


# ------------------------------------------------------------------------------ synthetic scenes
def _box_room_depth(x, y, yaw, K, H=64, W=64, half=5.0, height=2.6, cam_h=1.25):
    """z-depth of a camera at (x, y, cam_h) looking along yaw inside the box [-half, half]^2 x [0, height]."""
    pose = camera_pose_from_agent(x, y, yaw, cam_h)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], -1) @ pose[:3, :3].T  # z_cam = 1
    o = pose[:3, 3]
    t = np.full((H, W), np.inf)
    for axis, lo, hi in ((0, -half, half), (1, -half, half), (2, 0.0, height)):
        d = rays[..., axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            for plane in (lo, hi):
                tt = (plane - o[axis]) / d
                t = np.where((tt > 0) & np.isfinite(tt), np.minimum(t, tt), t)
    return t.astype(np.float32), pose


def test_goal_visible_fraction_synthetic():
    K = intrinsics_from_fov(64, 64, 90.0)
    depth, pose = _box_room_depth(0.0, 0.0, 0.3, K)
    assert goal_visible_fraction(depth, pose, depth, pose, K) == 1.0
    assert goal_visible_fraction(depth, pose, depth, pose, K.matrix, stride=1) == 1.0
    back, back_pose = _box_room_depth(0.0, 0.0, 0.3 + math.pi, K)
    assert goal_visible_fraction(depth, pose, back, back_pose, K) < 0.01
    # a quarter turn overlaps a little at the edge of the view, a small move keeps most of it
    side, side_pose = _box_room_depth(0.0, 0.0, 0.3 + math.pi / 2, K)
    assert goal_visible_fraction(depth, pose, side, side_pose, K) < 0.1
    near, near_pose = _box_room_depth(0.3, 0.1, 0.3, K)
    assert goal_visible_fraction(depth, pose, near, near_pose, K) > 0.7
    # a wall 1 m in front of the start camera's left half hides the left half of the goal view
    walled = depth.copy()
    walled[:, :32] = 1.0
    frac = goal_visible_fraction(depth, pose, walled, pose, K)
    assert 0.45 < frac < 0.55
    walled[:] = 1.0
    assert goal_visible_fraction(depth, pose, walled, pose, K) == 0.0
    # no start measurement does not occlude; no goal depth gives NaN
    assert goal_visible_fraction(depth, pose, np.zeros_like(depth), pose, K) == 1.0
    assert math.isnan(goal_visible_fraction(np.zeros_like(depth), pose, depth, pose, K))
    with pytest.raises(ValueError, match="stride"):
        goal_visible_fraction(depth, pose, depth, pose, K, stride=0)


# ------------------------------------------------------------------------------------ scoring
def test_pose_error_and_success_wrap_yaw():
    a = (1.0, 2.0, math.radians(179.0))
    b = (1.3, 2.4, math.radians(-179.0))
    dist, ang = pose_error(a, b)
    assert dist == pytest.approx(0.5) and ang == pytest.approx(2.0)
    assert is_success(a, b) and is_success(AgentState(*a), b)
    assert pose_error((0, 0, 0.0), (0, 0, math.pi)) == (0.0, pytest.approx(180.0))
    assert not is_success((0, 0, 0.0), (0, 0, math.radians(31.0)))
    assert is_success((0, 0, 0.0), (0, 0, math.radians(29.0)))
    assert not is_success((0, 0, 0.0), (0.51, 0, 0.0))
    assert is_success((0, 0, 0.0), (0.51, 0, 0.0), TaskConfig(success_dist_m=0.6))
    with pytest.raises(ValueError, match="goal_state"):
        pose_error((0, 0, 0), (0, 0))


# ------------------------------------------------------------------------------------- errors
def test_bad_inputs_name_the_option(task_dataset, tmp_path):
    root, _ = task_dataset
    with pytest.raises(ValueError, match="split"):
        make_tasks(root, "bogus", n=1, config=SMALL)
    with pytest.raises(ValueError, match="n "):
        make_tasks(root, "test", n=0, config=SMALL)
    with pytest.raises(ValueError, match="prefix_range"):
        make_tasks(root, "test", n=1, config=TaskConfig(prefix_range=(150, 200)))  # > the 101-frame episodes
    impossible = TaskConfig(prefix_range=(40, 101), min_path_m=0.005, max_path_m=0.01, max_rounds=2)
    with pytest.raises(ValueError, match=r"only 0 of n=3 .*max_path_m"):
        make_tasks(root, "test", n=3, config=impossible)
    for kwargs, name in (({"prefix_range": (1, 5)}, "prefix_range"), ({"prefix_range": (9, 5)}, "prefix_range"),
                         ({"max_goal_visible": 0.0}, "max_goal_visible"), ({"success_deg": 200}, "success_deg"),
                         ({"min_path_m": 3.0, "max_path_m": 2.0}, "max_path_m"), ({"budget": 0}, "budget"),
                         ({"success_dist_m": -1}, "success_dist_m")):
        with pytest.raises(ValueError, match=name):
            TaskConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown option"):
        TaskConfig.from_dict({"budgett": 3})


def test_split_without_episodes(task_dataset, tmp_path):
    """A dataset whose episodes are all train: asking for test tasks says which splits exist."""
    import shutil

    root, _ = task_dataset
    ds = open_dataset(root)
    copy = tmp_path / "train_only"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("ep_*"))
    first = next(i for i in ds.episode_indices() if ds.read_info(i).split == "train")
    shutil.copy(ds.episode_path(first), copy / "episodes" / ds.episode_path(first).name)
    with pytest.raises(ValueError, match=r"split 'test'.*no episodes.*\['train'\]"):
        make_tasks(copy, "test", n=1, config=SMALL)


# --------------------------------------------------------------------------------------- JSON
def test_json_round_trip(small_tasks, tmp_path):
    tasks = small_tasks["test"] + small_tasks["val"]
    path = write_tasks(tmp_path / "tasks.json", tasks, config=SMALL)
    assert read_tasks(path) == tasks
    doc = json.loads(path.read_text())
    assert TaskConfig.from_dict(doc["config"]) == SMALL
    assert GoalTask.from_dict(json.loads(json.dumps(tasks[0].to_dict()))) == tasks[0]
    (tmp_path / "bad.json").write_text('{"tasks": []}')
    with pytest.raises(ValueError, match="not a goal-task file"):
        read_tasks(tmp_path / "bad.json")
    doc["tasks"][0].pop("goal_state")
    (tmp_path / "bad2.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="goal_state"):
        read_tasks(tmp_path / "bad2.json")
