"""Conventions checked on recorded episodes (see docs/conventions.md).

* depth is metric z-depth and poses are camera-to-world in the OpenCV frame: frame t's depth,
  unprojected with pose t and projected with pose t+1, matches frame t+1's depth;
* ``action[t]`` moves the agent from frame t to frame t+1: each pose follows from the previous one
  by the recorded action (or stays, when the move collided);
* an off-by-one in the poses is caught by the same reprojection test.
"""

import numpy as np
import pytest

from pewm.data import open_dataset
from pewm.geometry import poses_from_actions, reprojection_depth_errors, unproject_depth


def _walls_and_furniture(ep, t):
    """Pixels that are neither floor nor ceiling: level floors look the same after any turn or move."""
    pts = unproject_depth(ep.depth[t], ep.intrinsics.matrix, ep.poses[t])
    return (pts[..., 2] > 0.05) & (pts[..., 2] < 2.4)


def _episodes(path):
    ds = open_dataset(path)
    return [ds.read(i) for i in range(len(ds.episode_paths()))]


def test_depth_reprojects_into_the_next_frame(small_dataset):
    path, _ = small_dataset
    for ep in _episodes(path):
        K = ep.intrinsics.matrix
        for t in range(ep.num_frames - 1):
            err = reprojection_depth_errors(ep.depth[t], ep.poses[t], ep.depth[t + 1], ep.poses[t + 1], K)
            assert err.numel() > 0.1 * ep.height * ep.width, f"{ep.episode_id} t={t}: too few co-visible pixels"
            med = float(err.median())
            assert med <= 0.005, f"{ep.episode_id} frames {t}->{t + 1}: median relative depth error {med:.4f}"


def test_poses_shifted_by_one_frame_fail_the_reprojection_test(small_dataset):
    path, _ = small_dataset
    checked = failed = 0
    for ep in _episodes(path):
        K = ep.intrinsics.matrix
        for t in range(ep.num_frames - 2):
            if np.allclose(ep.poses[t + 1], ep.poses[t + 2]):
                continue  # a collided step: shifting changes nothing here
            checked += 1
            err = reprojection_depth_errors(ep.depth[t], ep.poses[t], ep.depth[t + 1], ep.poses[t + 2], K,
                                            mask_a=_walls_and_furniture(ep, t))
            failed += int(err.numel() == 0 or float(err.median()) > 0.005)
            # and the true poses pass on exactly these pixels
            ok = reprojection_depth_errors(ep.depth[t], ep.poses[t], ep.depth[t + 1], ep.poses[t + 1], K,
                                           mask_a=_walls_and_furniture(ep, t))
            assert ok.numel() == 0 or float(ok.median()) <= 0.005
    assert checked > 20
    assert failed == checked, f"only {failed}/{checked} shifted pairs were caught"


def test_action_t_leads_from_frame_t_to_frame_t_plus_1(small_dataset):
    path, _ = small_dataset
    for ep in _episodes(path):
        assert ep.actions is not None and len(ep.actions) == ep.num_frames - 1
        assert ep.collided is not None and len(ep.collided) == ep.num_frames - 1
        for t, a in enumerate(ep.actions):
            expected = ep.poses[t] if ep.collided[t] else poses_from_actions(ep.poses[t], [a])[1]
            np.testing.assert_allclose(ep.poses[t + 1], expected, atol=1e-6,
                                       err_msg=f"{ep.episode_id}: action[{t}]={a} does not lead to pose {t + 1}")
        # the recorded agent states agree with the camera poses
        states = np.asarray(ep.meta["agent_states"])
        assert states.shape == (ep.num_frames, 3)
        np.testing.assert_allclose(ep.poses[:, :2, 3], states[:, :2], atol=1e-6)


def test_episodes_are_shortest_paths_without_collisions(small_dataset):
    path, _ = small_dataset
    for ep in _episodes(path):
        assert not ep.collided.any(), f"{ep.episode_id}: planned trajectory collided"
        moved = np.linalg.norm(ep.poses[-1, :2, 3] - ep.poses[0, :2, 3]) + (ep.actions == 0).sum()
        assert moved > 0


@pytest.mark.parametrize("kind", ["shortest", "out_and_back", "loop", "look_back"])
def test_planned_trajectories_never_cross_walls(kind):
    from pewm.geometry import AgentState
    from pewm.sim.house import generate_house
    from pewm.sim.trajectories import plan_actions, replay

    for seed in range(3):
        house = generate_house(seed)
        free = house.free_space(agent_radius=0.2)
        rng = np.random.default_rng(seed)
        x, y = free.sample_free(rng, free.largest_component())
        start = AgentState(x, y, 0.0)
        actions = plan_actions(free, start, kind, 300, rng)
        assert len(actions) == 300
        states, hits = replay(free, start, actions)
        assert not any(hits), f"{kind}, house {seed}: collision"
        assert all(free.is_free(s.x, s.y) for s in states)
        for s0, s1 in zip(states, states[1:]):
            assert free.segment_is_free(s0.x, s0.y, s1.x, s1.y)
        if kind in ("out_and_back", "loop"):  # revisit kinds come back near where they started
            d = [np.hypot(s.x - start.x, s.y - start.y) for s in states[len(states) // 3:]]
            assert min(d) < 0.5, f"{kind}, house {seed}: never returned to the start (closest {min(d):.2f} m)"


def test_house_tour_turns_full_circle_in_every_room_without_collisions():
    """plan_house_tour (the map-size benchmark's "first full look-around of a house"): every
    reachable room is entered and, inside it, the agent turns a full 360 degrees in place."""
    from pewm.geometry import Action, AgentState
    from pewm.sim.house import HouseConfig, generate_house
    from pewm.sim.trajectories import plan_house_tour, replay

    for seed in range(3):
        house = generate_house(seed, HouseConfig(min_rooms=3, max_rooms=6))
        free = house.free_space(agent_radius=0.2)
        rng = np.random.default_rng(seed)
        x, y = free.sample_free(rng, free.largest_component())
        start = AgentState(x, y, 0.0)
        actions, toured = plan_house_tour(free, house, start, rng)
        assert sorted(toured) == sorted(r.id for r in house.rooms), f"house {seed}: toured {toured}"
        states, hits = replay(free, start, actions)
        assert not any(hits), f"house {seed}: collision"
        # a run of 24 identical turns (15 degrees each) = a full look-around; find one per room
        spun_in: set = set()
        run = 0
        for i, a in enumerate(actions):
            run = run + 1 if a == Action.TURN_LEFT and i and actions[i - 1] == Action.TURN_LEFT else int(a == Action.TURN_LEFT)
            if run >= 24:
                spun_in.add(house.room_at(states[i + 1].x, states[i + 1].y))
        assert spun_in == set(toured), f"house {seed}: full turns in rooms {spun_in}, toured {toured}"
    with pytest.raises(ValueError, match="not in free space"):
        plan_house_tour(free, house, AgentState(-100.0, -100.0, 0.0), rng)
