"""The ``map`` goal cost (pewm.planning.map_cost) and its parts: registering the goal RGB-D against
the persistent map (pewm.planning.localize) and the free-space cost-to-go field (pewm.planning.navigation).

Localisation runs on a real simulated house (seed 3: a bathroom at x < 5.9 m, a living room at
x 5.9..10.5 m, y -0.5..4.5 m) mapped from views that face east, away from the bathroom; the field
is tested on hand-made points (a wall with a door)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pewm.geometry import AgentState, unproject_depth
from pewm.planning.localize import GoalEstimate, LocalizeConfig, SurfaceGrid, goal_cloud, localize_goal, map_surface
from pewm.planning.map_cost import MapCostConfig, MapGoalCost
from pewm.planning.navigation import NavConfig, NavField, path_lengths, wrap
from pewm.planning.planners import last_frame_costs
from pewm.planning.worlds import Imagined

SEEN = [(8.2, 2.0), (7.0, 1.0)]  # living-room spots the map is built from ...
SEEN_DEG = range(-75, 76, 15)  # ... facing east (the bathroom, x < 5.9, is never in view)
GOAL = AgentState(8.2, 2.0, math.radians(30.0))  # one of the mapped views
REF = AgentState(7.0, 1.0, 2.5)  # the agent's own camera: only its height and pitch may matter
UNSEEN = AgentState(3.0, 1.5, math.pi)  # in the bathroom


@pytest.fixture(scope="module")
def env():
    from pewm.sim import EmbodiedEnv, SimConfig
    from pewm.sim.house import HouseConfig

    e = EmbodiedEnv(SimConfig(resolution=64, pitch_deg=-10.0, house=HouseConfig(min_rooms=2, max_rooms=3)))
    e.reset(seed=3)
    h = e.house  # the layout the module relies on
    assert h.room_at(*SEEN[0]) == h.room_at(*SEEN[1]) != h.room_at(UNSEEN.x, UNSEEN.y)
    assert all(e.free_space.is_free(x, y) for x, y in [*SEEN, (UNSEEN.x, UNSEEN.y)])
    yield e
    e.close()


def _views(env, spots=SEEN, degs=SEEN_DEG):
    obs = [env.render_state(AgentState(x, y, math.radians(a))) for x, y in spots for a in degs]
    return tuple(np.stack([o[k] for o in obs]) for k in ("rgb", "depth", "pose"))


@pytest.fixture(scope="module")
def pmap(env):
    from pewm.memory import PersistentMap, make_extractor

    pm = PersistentMap(extractor=make_extractor("rgb"))
    rgb, depth, poses = _views(env)
    pm.integrate(rgb, depth, env.intrinsics.matrix, poses)
    return pm


@pytest.fixture(scope="module")
def surface(pmap):
    pts, col = map_surface(pmap)
    assert pts.shape == col.shape and pts.shape[1] == 3 and len(pts) > 1000
    assert 0.0 <= col.min() and col.max() <= 1.0
    assert pts[:, 0].min() > 5.5  # nothing of the bathroom
    return pts, col


def _goal(env, state=GOAL):
    o = env.render_state(state)
    return o["rgb"], o["depth"]


# -- localisation ------------------------------------------------------------------------------------


def test_goal_cloud_is_the_goal_view_in_the_agent_frame(env):
    rgb, depth = _goal(env)
    K = env.intrinsics.matrix
    pts, col = goal_cloud(rgb, depth, K, env.pose_of(REF), max_depth=8.0)
    ok = (depth > 0) & (depth <= 8.0)
    world = unproject_depth(depth, K, env.pose_of(GOAL)).numpy()[ok]
    c, s = math.cos(GOAL.yaw), math.sin(GOAL.yaw)
    moved = pts @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + [GOAL.x, GOAL.y, 0.0]
    np.testing.assert_allclose(moved, world, atol=1e-4)
    np.testing.assert_allclose(col, rgb[ok] / 255.0)
    assert len(goal_cloud(rgb, np.where(depth > 2.0, 0.0, depth), K, env.pose_of(REF), 8.0)[0]) < len(pts)


@pytest.mark.parametrize("truth", [GOAL, AgentState(7.63, 1.37, 0.3)], ids=["mapped-view", "between-views"])
def test_localize_recovers_the_pose_of_a_seen_goal(env, surface, truth):
    rgb, depth = _goal(env, truth)
    est = localize_goal(*surface, rgb, depth, env.intrinsics.matrix, env.pose_of(REF))
    assert isinstance(est, GoalEstimate) and est.state == (est.x, est.y, est.yaw)
    assert math.hypot(est.x - truth.x, est.y - truth.y) < 0.15, (est.state, truth)
    assert wrap(est.yaw - truth.yaw) < math.radians(5.0), (est.state, truth)
    assert est.score > 0.8
    # the pose is the agent camera (height, pitch) at the estimate
    np.testing.assert_allclose(est.pose, env.pose_of(AgentState(est.x, est.y, est.yaw)), atol=1e-6)


def test_localize_an_unseen_place_scores_low_and_no_map_gives_none(env, surface):
    K, ref = env.intrinsics.matrix, env.pose_of(REF)
    known = localize_goal(*surface, *_goal(env), K, ref)
    unseen = localize_goal(*surface, *_goal(env, UNSEEN), K, ref)
    assert unseen is not None and unseen.score < 0.5 and unseen.score < known.score - 0.3
    rgb, depth = _goal(env)
    recoloured = localize_goal(*surface, 255 - rgb, depth, K, ref)  # the right shapes, the wrong colours
    assert recoloured.score < known.score - 0.3
    assert localize_goal(None, None, *_goal(env), K, ref) is None and map_surface(None) is None
    assert localize_goal(np.zeros((0, 3)), np.zeros((0, 3)), *_goal(env), K, ref) is None
    assert localize_goal(*surface, rgb, np.zeros_like(depth), K, ref) is None  # no valid depth


def test_surface_grid_distance_and_colour():
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    col = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    g = SurfaceGrid(pts, col, cell=0.1, pad=0.5)
    d, c = g.lookup(np.array([[0.02, 0.02, 0.02], [0.02, 0.35, 0.02], [1.02, 0.02, 0.25], [5.0, 0.0, 0.0]]))
    np.testing.assert_allclose(d, [0.0, 0.3, 0.2, np.inf], atol=1e-6)  # cell to cell
    np.testing.assert_allclose(c[:3], [[1, 0, 0], [1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError):
        SurfaceGrid(pts, col[:1])
    with pytest.raises(ValueError):
        SurfaceGrid(np.zeros((0, 3)), np.zeros((0, 3)))


# -- the cost-to-go field ------------------------------------------------------------------------------

GRID = np.arange(-4.0, 4.001, 0.05)
DOOR_Y, DOOR_W = 2.0, 1.0  # a door in the wall x = 0 between y 1.5 and 2.5
START, TARGET = np.array([-2.0, 0.0]), (2.0, 0.0, 0.0)


def _points(wall=True, lintel=False):
    fx, fy = np.meshgrid(GRID, GRID)
    parts = [np.stack([fx.ravel(), fy.ravel(), np.zeros(fx.size)], 1)]  # floor: never an obstacle
    if wall:
        ys = GRID[np.abs(GRID - DOOR_Y) > DOOR_W / 2]
        wy, wz = np.meshgrid(ys, np.arange(0.3, 1.6, 0.1))
        parts.append(np.stack([np.zeros(wy.size), wy.ravel(), wz.ravel()], 1))
    if lintel:  # above the obstacle band
        ly = GRID[np.abs(GRID - DOOR_Y) <= DOOR_W / 2]
        parts.append(np.stack([np.zeros(ly.size), ly, np.full(ly.size, 2.2)], 1))
    return np.concatenate(parts)


def _octile(dx, dy):
    dx, dy = abs(dx), abs(dy)
    return max(dx, dy) + (math.sqrt(2.0) - 1.0) * min(dx, dy)


def _descent(nf, start, goal):
    """The cells of the shortest path: from ``start`` to the lowest-D free 8-neighbour, to ``goal``."""
    (i, j), g = (int(v) for v in nf.cell(start)), tuple(int(v) for v in nf.cell(np.asarray(goal[:2])))
    path = [(i, j)]
    while (i, j) != g and len(path) < 1000:
        nb = [(i + a, j + b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0) and nf.free[i + a, j + b]]
        i, j = min(nb, key=lambda c: nf.D[c])
        path.append((i, j))
    rc = np.array(path)
    return nf.origin + (rc[:, ::-1] + 0.5) * nf.config.cell_m  # (x, y) of the cell centres


def test_path_lengths_on_a_small_grid():
    free = np.ones((3, 4), bool)
    free[:, 2] = False
    free[2, 2] = True
    D = path_lengths(free, (0, 0), 0.5)
    assert D[0, 0] == 0.0 and D[2, 0] == pytest.approx(1.0) and D[1, 1] == pytest.approx(0.5 * math.sqrt(2))
    assert D[0, 3] == pytest.approx(0.5 * (3 * math.sqrt(2) + 1))  # through the only free cell (2, 2)
    assert D[0, 2] == np.inf
    np.testing.assert_allclose(wrap([0.1 + 2 * math.pi, -1.5 * math.pi, math.pi, -0.2]),
                               [0.1, 0.5 * math.pi, math.pi, 0.2])


def test_field_goes_round_the_wall_through_the_door():
    cfg = NavConfig()
    nf = NavField(_points(), TARGET, floor_z=0.0, config=cfg)
    open_field = NavField(_points(wall=False), TARGET, floor_z=0.0, config=cfg)
    straight = float(np.hypot(*(START - TARGET[:2])))
    assert float(open_field.path_length(START)) == pytest.approx(straight, abs=2 * cfg.cell_m)
    # via the door: at least through its edge (no dilation), at most octile via its middle + a cell each way
    edge = DOOR_Y - DOOR_W / 2
    lo = 2 * math.hypot(2.0, edge)
    hi = 2 * _octile(2.0, DOOR_Y) + 2 * cfg.cell_m
    d = float(nf.path_length(START))
    assert lo < d < hi and d > straight + 0.9, (lo, d, hi)
    assert not nf.is_free(np.array([0.0, 0.0])) and not nf.is_free(np.array([cfg.agent_radius_m, -1.0]))
    assert nf.is_free(np.array([0.0, DOOR_Y])) and nf.is_free(START)
    # a lintel above the obstacle band does not close the door
    assert NavField(_points(lintel=True), TARGET, 0.0, cfg).path_length(START) == pytest.approx(d)
    # at the goal, facing its heading costs nothing; facing away costs the half turn
    g = np.array(TARGET[:2])
    assert float(nf.cost_to_go(g, 0.0)) < 0.05
    assert float(nf.cost_to_go(g, math.pi)) == pytest.approx(math.pi * cfg.turn_m_per_rad, abs=0.05)
    assert float(nf.cost_to_go(START, 0.0)) >= d


def _walk_costs(nf):
    """Cost-to-go along the shortest path, facing the direction of motion; and which steps are
    clear of obstacles (both cells at least 2 cells from a blocked one)."""
    from scipy import ndimage

    xy = _descent(nf, START, TARGET)
    mv = np.diff(xy, axis=0)
    cost = nf.cost_to_go(xy[1:], np.arctan2(mv[:, 1], mv[:, 0]))
    near = ndimage.binary_dilation(~nf.free, structure=np.ones((5, 5), bool))
    clear = ~near[nf.cell(xy[1:])]
    return xy, cost, clear[1:] & clear[:-1]


def test_cost_to_go_falls_along_the_shortest_path():
    cfg = NavConfig()
    nf = NavField(_points(), TARGET, floor_z=0.0, config=cfg)
    xy, cost, clear = _walk_costs(nf)
    assert np.hypot(*(xy[-1] - TARGET[:2])) < cfg.cell_m and np.abs(xy[:, 0]).min() < cfg.cell_m  # through the door
    D = nf.path_length(xy)
    assert np.all(np.diff(D) <= -cfg.cell_m + 1e-9)  # path length strictly falls
    tol = cfg.turn_m_per_rad * math.radians(22.5)  # the 8-connected field's direction resolution
    assert np.diff(cost)[clear].max() <= tol and clear.sum() > 0.7 * len(clear)
    assert cost[-1] < 0.05 < float(nf.cost_to_go(START, 0.0)) - 3.0


def test_cost_to_go_does_not_jump_in_the_doorway():
    cfg = NavConfig()
    nf = NavField(_points(), TARGET, floor_z=0.0, config=cfg)
    _, cost, _ = _walk_costs(nf)
    assert np.diff(cost).max() <= cfg.turn_m_per_rad * math.radians(22.5)


def test_goal_inside_an_obstacle_still_gives_a_finite_field():
    cfg = NavConfig()
    nf = NavField(_points(), (0.0, 0.0, 0.0), floor_z=0.0, config=cfg)
    g = np.array([0.0, 0.0])
    assert not nf.is_free(g) and np.isfinite(nf.D).all()
    assert cfg.unreachable_penalty_m <= float(nf.path_length(g)) < cfg.unreachable_penalty_m + 3 * cfg.agent_radius_m
    for side in (START, -START):  # one side direct, the other through the door
        assert 1.5 < float(nf.path_length(side)) < 2 * _octile(2.0, DOOR_Y) + 1.0
    assert np.isfinite(nf.cost_to_go(np.stack([START, -START, g]), np.zeros(3))).all()
    with pytest.raises(ValueError):
        NavField(np.zeros((0, 3)), (0.0, 0.0, 0.0), 0.0)


# -- the map cost --------------------------------------------------------------------------------------


class ImageCost:
    name, calls = "image", 0

    def __call__(self, rgb, depth, goal_rgb, goal_depth):
        self.calls += 1
        return 7.0 + 10.0 * np.arange(len(rgb))


def _imagined(env, paths):
    poses = np.array([[env.pose_of(AgentState(*s)) for s in p] for p in paths])
    N, k = poses.shape[:2]
    return Imagined(np.zeros((N, k, 4, 4, 3), np.uint8), np.ones((N, k, 4, 4), np.float32), poses)


WALL = (10.45, 2.0)  # the living room's east wall (x = 10.5), in the map
PATHS = [
    [(7.4, 1.4, 0.5), (7.8, 1.7, 0.5), (GOAL.x, GOAL.y, GOAL.yaw)],  # ends at the goal
    [(7.4, 1.4, 0.5), (7.3, 1.3, 0.5), (7.0, 1.0, 0.5)],  # ends ~1.6 m away
    [(7.4, 1.4, 0.5), (*WALL, 0.5), (GOAL.x, GOAL.y, GOAL.yaw)],  # as the first, through the wall
]


def _cost(env, pmap, config=MapCostConfig(), memory_map=None):
    return MapGoalCost(ImageCost(), memory_map or (lambda: pmap), *_goal(env), env.intrinsics.matrix,
                       env.pose_of(REF), config)


def test_map_cost_prefers_the_candidate_nearer_the_goal_and_penalises_walls(env, pmap):
    cfg = MapCostConfig(blocked_penalty_m=2.5)
    cost = _cost(env, pmap, cfg)
    im = _imagined(env, PATHS)
    c = cost.trajectory_costs(im)
    assert c.shape == (3,) and cost.fallbacks == 0 and cost.image_cost.calls == 0  # image_weight 0: not needed
    est = cost.estimate
    assert math.hypot(est.x - GOAL.x, est.y - GOAL.y) < 0.15 and wrap(est.yaw - GOAL.yaw) < math.radians(5)
    nav = cost.field()
    assert not nav.is_free(np.array(WALL)) and nav.is_free(im.poses[:2, :, :2, 3]).all()
    assert c[0] < 0.5 and c[1] > c[0] + 1.0 and c[1] >= float(nav.path_length(im.poses[1, -1, :2, 3]))
    assert c[2] - c[0] == pytest.approx(2.5)
    # the image term, near the goal only
    cw = _cost(env, pmap, MapCostConfig(blocked_penalty_m=2.5, image_weight=0.5)).trajectory_costs(im)
    near = np.clip(1.0 - nav.path_length(im.poses[:, -1, :2, 3]) / cfg.nav.near_m, 0.0, 1.0)
    np.testing.assert_allclose(cw - c, 0.5 * near * (7.0 + 10.0 * np.arange(3)), atol=1e-9)
    assert near[0] > 0.5 and near[1] == 0.0
    # called like any goal cost: the image cost
    rgb, depth = _goal(env)
    np.testing.assert_array_equal(cost(rgb[None], depth[None], rgb, depth), [7.0])
    # planners use the trajectory costs when the cost has them
    np.testing.assert_array_equal(last_frame_costs(im, cost, rgb, depth), c)


def test_map_cost_falls_back_to_the_image_cost(env, pmap):
    im = _imagined(env, PATHS)
    none = _cost(env, pmap, memory_map=lambda: None)
    for n in (1, 2):
        np.testing.assert_array_equal(none.trajectory_costs(im), [7.0, 17.0, 27.0])
        assert none.fallbacks == n and none.estimate is None and none.field() is None
    strict = _cost(env, pmap, MapCostConfig(min_score=1.0))  # no registration scores 1
    np.testing.assert_array_equal(strict.trajectory_costs(im), [7.0, 17.0, 27.0])
    assert strict.fallbacks == 1 and strict.estimate is None and strict.image_cost.calls == 1


def test_map_cost_localises_once_and_rebuilds_the_field_when_the_map_grows(env, monkeypatch):
    import pewm.planning.map_cost as mc
    from pewm.model import MemoryBuilder, from_preset
    from pewm.model.rollout_memory import RolloutMemory
    from pewm.planning.worlds import SimulatorWorld

    world = SimulatorWorld(env, memory=RolloutMemory(MemoryBuilder(from_preset("micro", reader="voxel-render"))))
    world.reset(REF)
    assert world.memory_map() is not None and map_surface(world.memory_map()) is None
    calls = []
    monkeypatch.setattr(mc, "localize_goal", lambda *a, **k: calls.append(1) or localize_goal(*a, **k))
    cost = MapGoalCost(ImageCost(), world.memory_map, *_goal(env), env.intrinsics.matrix, env.pose_of(REF))
    im = _imagined(env, PATHS[:2])
    np.testing.assert_array_equal(cost.trajectory_costs(im), [7.0, 17.0])  # empty map: fallback, no search
    assert cost.fallbacks == 1 and calls == []
    world.observe(*_views(env, SEEN[:1]))
    c1 = cost.trajectory_costs(im)
    f1 = cost.field()
    assert calls == [1] and cost.estimate is not None and cost.fallbacks == 1 and c1[0] < c1[1]
    assert cost.field() is f1  # same map: same field
    world.observe(*_views(env, SEEN[1:]))
    cost.trajectory_costs(im)
    assert cost.field() is not f1 and calls == [1]  # more map: new field, same estimate


def test_map_cost_retries_registration_once_the_map_has_grown(env, monkeypatch):
    """A map that does not hold the goal yet: no estimate (fallback); more map: registered."""
    import pewm.planning.map_cost as mc

    calls = []
    monkeypatch.setattr(mc, "localize_goal", lambda *a, **k: calls.append(1) or localize_goal(*a, **k))
    maps = []

    def current():
        return maps[-1]

    from pewm.memory import PersistentMap, make_extractor

    far = PersistentMap(extractor=make_extractor("rgb"))
    rgb, depth, poses = _views(env, [(UNSEEN.x, UNSEEN.y)], range(150, 211, 30))
    far.integrate(rgb, depth, env.intrinsics.matrix, poses)
    maps.append(far)
    cost = MapGoalCost(ImageCost(), current, *_goal(env), env.intrinsics.matrix, env.pose_of(REF))
    im = _imagined(env, PATHS[:2])
    cost.trajectory_costs(im)
    cost.trajectory_costs(im)
    assert cost.estimate is None and cost.fallbacks == 2 and calls == [1]  # same map: not searched again
    rgb, depth, poses = _views(env)
    far.integrate(rgb, depth, env.intrinsics.matrix, poses)
    c = cost.trajectory_costs(im)
    assert calls == [1, 1] and cost.estimate is not None and cost.fallbacks == 2 and c[0] < c[1]


def test_stop_rule_asks_the_map_cost_about_the_current_pose(env, pmap):
    from pewm.planning.planners import StopRule
    from pewm.planning.worlds import Frame

    class At:
        def __init__(self, state):
            o = env.render_state(state)
            self.current = Frame(o["rgb"], o["depth"], o["pose"])

    cost = _cost(env, pmap)
    rgb, depth = _goal(env)
    stop, c = StopRule(0.3).check(At(GOAL), cost, rgb, depth)
    assert stop and c < 0.3
    stop, c = StopRule(0.3).check(At(REF), cost, rgb, depth)
    assert not stop and c > 1.0
    assert StopRule(None).check(At(GOAL), cost, rgb, depth)[0] is False
    none = _cost(env, pmap, memory_map=lambda: None)  # no map: NaN, never stops
    stop, c = StopRule(0.3).check(At(GOAL), none, rgb, depth)
    assert not stop and math.isnan(c)


def test_last_frame_costs_dispatches_to_trajectory_costs():
    im = Imagined(np.zeros((3, 2, 4, 4, 3), np.uint8), np.ones((3, 2, 4, 4), np.float32),
                  np.tile(np.eye(4), (3, 2, 1, 1)))

    class Traj:
        name = "traj"
        def __init__(self, out):
            self.out, self.seen = out, None
        def __call__(self, *a):
            raise AssertionError("the image cost must not be called")
        def trajectory_costs(self, imagined):
            self.seen = imagined
            return self.out

    t = Traj(np.array([3.0, np.nan, 1.0]))
    np.testing.assert_array_equal(last_frame_costs(im, t, None, None), [3.0, np.inf, 1.0])
    assert t.seen is im
    with pytest.raises(ValueError, match="traj"):
        last_frame_costs(im, Traj(np.zeros(2)), None, None)
    np.testing.assert_array_equal(last_frame_costs(im, ImageCost(), None, None), [7.0, 17.0, 27.0])


# -- configuration -------------------------------------------------------------------------------------

BAD = [
    (LocalizeConfig, "grid_m", -0.1), (LocalizeConfig, "sigma_m", True), (LocalizeConfig, "sigma_color", math.nan),
    (LocalizeConfig, "max_depth_m", 0.0), (LocalizeConfig, "coarse_step_deg", math.inf),
    (LocalizeConfig, "clearance_m", "0.2"), (LocalizeConfig, "coarse_points", 0), (LocalizeConfig, "refine_top", True),
    (LocalizeConfig, "fine_points", 2.5),
    (NavConfig, "cell_m", -0.1), (NavConfig, "camera_height_m", True), (NavConfig, "pad_m", math.nan),
    (NavConfig, "near_m", 0.0), (NavConfig, "agent_radius_m", -0.01), (NavConfig, "unreachable_penalty_m", math.nan),
    (NavConfig, "turn_m_per_rad", True), (NavConfig, "obstacle_min_m", -0.1), (NavConfig, "obstacle_max_m", math.nan),
    (NavConfig, "obstacle_max_m", 0.1),
    (MapCostConfig, "min_score", -0.1), (MapCostConfig, "min_score", 1.5), (MapCostConfig, "min_score", math.nan),
    (MapCostConfig, "blocked_penalty_m", -1.0), (MapCostConfig, "blocked_penalty_m", True),
    (MapCostConfig, "image_weight", math.nan), (MapCostConfig, "image_weight", math.inf),
]


@pytest.mark.parametrize("cls,name,value", BAD, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in BAD])
def test_config_rejects_bad_values_naming_the_field(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls(**{name: value})


@pytest.mark.parametrize("cls,name,value", [(MapCostConfig, "min_score", True), (NavConfig, "obstacle_max_m", True),
                                            (MapCostConfig, "min_score", "0.5"), (NavConfig, "obstacle_max_m", "2")])
def test_config_rejects_bools_and_strings_everywhere(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls(**{name: value})


def test_config_accepts_edge_values():
    NavConfig(agent_radius_m=0, unreachable_penalty_m=0.0, turn_m_per_rad=0, obstacle_min_m=0.0)
    MapCostConfig(min_score=0.0, blocked_penalty_m=0.0)
    MapCostConfig(min_score=1)
    LocalizeConfig(coarse_points=1, refine_top=1, fine_points=1, grid_m=1)


def test_map_only_world_reckons_poses_shows_the_current_view_and_remembers(env):
    """The no-model baseline: poses by dead reckoning (like the world model's), frames = the real view."""
    from pewm.geometry.kinematics import poses_from_actions
    from pewm.model import MemoryBuilder, from_preset
    from pewm.planning.worlds import MapOnlyWorld, World
    from pewm.model.rollout_memory import RolloutMemory

    world = MapOnlyWorld(RolloutMemory(MemoryBuilder(from_preset("micro", reader="voxel-render"))), env.intrinsics.matrix)
    with pytest.raises(RuntimeError, match="reset"):
        world.current
    o = env.render_state(REF)
    world.reset(o["rgb"], o["depth"], o["pose"])
    assert isinstance(world, World)
    acts = np.array([[0, 0, 1], [2, 0, 0]])
    im = world.imagine(acts)
    for i, a in enumerate(acts):
        np.testing.assert_allclose(im.poses[i], poses_from_actions(o["pose"], a)[1:])
        assert (im.rgb[i] == o["rgb"]).all() and (im.depth[i] == o["depth"]).all()
    assert map_surface(world.memory_map()) is None  # nothing fused yet
    world.observe(*_views(env, SEEN[:1], range(0, 31, 15)))
    assert map_surface(world.memory_map()) is not None and world.current.pose[0, 3] == pytest.approx(SEEN[0][0])
    with pytest.raises(ValueError, match="RolloutMemory"):
        MapOnlyWorld("map", env.intrinsics.matrix)
