"""The gymnasium environment: API, determinism, action semantics, collisions, truncation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pewm.geometry import Action, AgentState, apply_action
from pewm.sim.env import EmbodiedEnv, SimConfig
from pewm.sim.house import HouseConfig, generate_house

SMALL = HouseConfig(min_rooms=2, max_rooms=4)


@pytest.fixture(scope="module")
def env():
    e = EmbodiedEnv(SimConfig(resolution=64, max_steps=20, house=SMALL))
    yield e
    e.close()


def test_spaces_and_observation(env):
    obs, info = env.reset(seed=0)
    assert env.action_space.n == 3
    assert env.observation_space.contains(obs)
    assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].shape == (64, 64) and obs["depth"].dtype == np.float32
    assert obs["pose"].shape == (4, 4) and obs["pose"].dtype == np.float64
    assert info["step"] == 0 and info["collided"] is False and isinstance(info["state"], AgentState)
    np.testing.assert_allclose(obs["pose"], env.state.camera_pose(1.25))
    assert env.intrinsics.width == 64
    assert np.array_equal(env.render(), obs["rgb"])
    # the start is in the largest connected free region
    i, j = env.free_space.world_to_cell(env.state.x, env.state.y)
    assert env.reachable[i, j]


def test_reset_is_deterministic_by_seed(env):
    o1, i1 = env.reset(seed=5)
    h1, s1 = env.house.to_dict(), env.state
    o2, i2 = env.reset(seed=5)
    assert env.house.to_dict() == h1 and env.state == s1
    assert np.array_equal(o1["rgb"], o2["rgb"]) and np.array_equal(o1["depth"], o2["depth"])
    o3, _ = env.reset(seed=6)
    assert env.house.to_dict() != h1
    # the same actions from the same seed give the same frames
    seqs = []
    for _ in range(2):
        env.reset(seed=5)
        seqs.append([env.step(a)[0]["rgb"] for a in (0, 1, 0, 2)])
    assert all(np.array_equal(a, b) for a, b in zip(*seqs))


def test_reset_options_house_seed_house_and_state():
    e = EmbodiedEnv(SimConfig(house=SMALL))
    try:
        e.reset(seed=1, options={"house_seed": 42})
        assert e.house.seed == 42
        h = generate_house(43, SMALL)
        st = AgentState(*h.rooms[0].center, 0.5)
        obs, info = e.reset(options={"house": h, "state": st})
        assert e.house is h and e.state == st and info["room"] == 0
        with pytest.raises(ValueError, match="bogus"):
            e.reset(options={"bogus": 1})
    finally:
        e.close()


def test_action_semantics_follow_geometry(env):
    env.reset(seed=3)
    h = env.house
    st = AgentState(*h.rooms[0].center, 0.0)
    env.teleport(st)
    for a in (Action.TURN_LEFT, Action.TURN_RIGHT, Action.TURN_RIGHT):
        before = env.state
        obs, r, term, trunc, info = env.step(int(a))
        assert info["state"] == apply_action(before, int(a), env.config.actions)
        assert r == 0.0 and term is False
    yaw0 = env.state.yaw
    env.step(int(Action.TURN_LEFT))
    assert env.state.yaw == pytest.approx(yaw0 + math.radians(15))  # left = yaw increases


def test_forward_moves_when_free_and_pose_matches_state(env):
    env.reset(seed=3)
    c = env.house.rooms[0].center
    env.teleport(AgentState(c[0], c[1], 0.0))
    # find a heading with room ahead
    for k in range(24):
        yaw = 2 * math.pi * k / 24
        s = AgentState(c[0], c[1], yaw)
        nxt = apply_action(s, 0)
        if env.free_space.segment_is_free(s.x, s.y, nxt.x, nxt.y):
            break
    env.teleport(s)
    obs, _, _, _, info = env.step(0)
    assert not info["collided"]
    assert env.state.x == pytest.approx(s.x + 0.25 * math.cos(yaw)) and env.state.y == pytest.approx(s.y + 0.25 * math.sin(yaw))
    np.testing.assert_allclose(obs["pose"], env.state.camera_pose(1.25))


def test_collision_stops_motion_and_is_reported(env):
    env.reset(seed=3)
    r = env.house.rooms[0]
    fs = env.free_space
    # walk east from the room centre until the next forward step would leave free space
    s = AgentState(r.center[0], r.center[1], 0.0)
    while fs.segment_is_free(s.x, s.y, s.x + 0.25, s.y):
        s = AgentState(s.x + 0.25, s.y, 0.0)
    env.teleport(s)
    obs0 = env.render_state(s)
    obs, _, _, _, info = env.step(0)
    assert info["collided"] is True
    assert env.state == s
    assert np.array_equal(obs["rgb"], obs0["rgb"])
    obs, _, _, _, info = env.step(1)  # turning is always possible
    assert info["collided"] is False


def test_truncation_at_max_steps(env):
    env.reset(seed=2)
    for t in range(1, 21):
        _, _, term, trunc, info = env.step(1)
        assert info["step"] == t and term is False
        assert trunc == (t >= 20)


def test_invalid_action_raises_naming_it(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="7"):
        env.step(7)
    with pytest.raises(ValueError, match="-1"):
        env.step(-1)
    with pytest.raises(ValueError):
        env.step([0, 1])
    env.step(np.int64(1))  # numpy ints are fine


def test_use_before_reset_raises():
    e = EmbodiedEnv()
    with pytest.raises(RuntimeError, match="reset"):
        e.step(0)
    e.close()


def test_sim_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="camera_height"):
        SimConfig(camera_height=3.0)
    with pytest.raises(ValueError, match="resolution"):
        SimConfig(resolution=2)
    cfg = SimConfig(resolution=128, pitch_deg=10.0)
    assert SimConfig.from_dict(cfg.to_dict()) == cfg
