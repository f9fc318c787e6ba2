"""Trajectory generators: discrete action sequences that follow shortest paths and revisit places.

The paper's data (§4, "Data") are shortest paths between random start/goal pairs, sometimes with a
look-around at the start. Persistence is only learned and measured where places are seen again, so
pewm adds revisit trajectories: out-and-back, loops and look-away-and-back. Every generator plans
against the same free-space grid and collision rule (:func:`pewm.sim.motion.move`) that the
simulator executes, so a planned sequence replays exactly and never passes through walls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pewm.geometry import Action, ActionConfig, AgentState, apply_action, wrap_angle
from pewm.sim.freespace import FreeSpaceGrid
from pewm.sim.motion import move

TRAJECTORY_KINDS = ("shortest", "out_and_back", "loop", "look_back")


@dataclass(frozen=True)
class TrajectoryConfig:
    """How episodes are planned."""

    kind_weights: dict[str, float] = field(
        default_factory=lambda: {"shortest": 0.25, "out_and_back": 0.3, "loop": 0.2, "look_back": 0.25}
    )
    look_around_prob: float = 0.5  # start with a full turn in place, as the paper's data sometimes does
    min_goal_distance_m: float = 2.0
    planning_margin_m: float = 0.15  # extra clearance for planned paths, on top of the agent radius
    waypoint_tolerance_m: float = 0.14
    planning_cell_m: float = 0.1  # A* cell size (the collision grid stays finer)
    waypoint_spacing_m: float = 0.5  # paths are followed through waypoints this far apart (bounds drift)

    def __post_init__(self) -> None:
        bad = set(self.kind_weights) - set(TRAJECTORY_KINDS)
        if bad:
            raise ValueError(f"unknown trajectory kind(s) {sorted(bad)}; known: {TRAJECTORY_KINDS}")
        if not any(w > 0 for w in self.kind_weights.values()):
            raise ValueError("TrajectoryConfig.kind_weights: at least one weight must be positive")


class _Planner:
    """Accumulates actions while simulating the agent on the free-space grid."""

    def __init__(self, free: FreeSpaceGrid, plan_free: FreeSpaceGrid, start: AgentState, steps: int,
                 action_cfg: ActionConfig, cfg: TrajectoryConfig, rng: np.random.Generator):
        self.free, self.plan_free = free, plan_free
        self.state, self.steps = start, steps
        self.acfg, self.cfg, self.rng = action_cfg, cfg, rng
        self.actions: list[int] = []
        self.turn = math.radians(action_cfg.turn_deg)
        self.component = plan_free.largest_component() if plan_free.free.any() else None

    @property
    def full(self) -> bool:
        return len(self.actions) >= self.steps

    def act(self, a: int) -> bool:
        if self.full:
            return False
        self.state, collided = move(self.state, a, self.free, self.acfg)
        self.actions.append(int(a))
        return not collided

    def turn_by(self, n: int) -> None:
        """``n`` turns: positive = left."""
        for _ in range(abs(n)):
            self.act(Action.TURN_LEFT if n > 0 else Action.TURN_RIGHT)

    def look_around(self) -> None:
        n = int(round(2 * math.pi / self.turn))
        self.turn_by(n if self.rng.random() < 0.5 else -n)

    def face(self, yaw: float) -> None:
        d = wrap_angle(yaw - self.state.yaw)
        self.turn_by(int(round(d / self.turn)))

    def go_to(self, goal: tuple[float, float]) -> bool:
        """Follow the shortest path to ``goal``; ``False`` if unreachable or stuck."""
        start = (self.state.x, self.state.y)
        if not self.free.is_free(*goal):
            return False
        # plan with clearance between the nearest cells of the planning grid; the short hops from
        # the start and to the goal are checked by the follower like every other move
        a, b = self.plan_free.nearest_free(*start), self.plan_free.nearest_free(*goal)
        path = self.plan_free.shortest_path(a, b)
        if path is not None:
            path = [start] + path + [goal]
        if path is None:
            return False
        tol = max(self.cfg.waypoint_tolerance_m, 0.55 * self.acfg.forward_m)
        for wx, wy in _densify(path, self.cfg.waypoint_spacing_m)[1:]:
            blocked = 0
            while not self.full:
                dx, dy = wx - self.state.x, wy - self.state.y
                if math.hypot(dx, dy) < tol:
                    break
                err = wrap_angle(math.atan2(dy, dx) - self.state.yaw)
                if abs(err) > 0.5 * self.turn + 1e-9:
                    self.act(Action.TURN_LEFT if err > 0 else Action.TURN_RIGHT)
                    continue
                ahead = apply_action(self.state, Action.FORWARD, self.acfg)
                if self.free.segment_is_free(self.state.x, self.state.y, ahead.x, ahead.y):
                    self.act(Action.FORWARD)
                    continue
                # the planner knows the map, so it never walks into a wall: rotate off the
                # obstacle toward the waypoint's side and try again, or give up on this goal
                blocked += 1
                if blocked > 3:
                    return False
                self.act(Action.TURN_LEFT if err >= 0 else Action.TURN_RIGHT)
            if self.full:
                return True
        return True

    def random_goal(self) -> tuple[float, float]:
        best, best_d = None, -1.0
        for _ in range(20):
            g = self.plan_free.sample_free(self.rng, self.component)
            d = math.hypot(g[0] - self.state.x, g[1] - self.state.y)
            if d >= self.cfg.min_goal_distance_m:
                return g
            if d > best_d:
                best, best_d = g, d
        return best  # type: ignore[return-value]


def plan_actions(
    free_space: FreeSpaceGrid,
    start: AgentState,
    kind: str,
    steps: int,
    rng: np.random.Generator,
    action_cfg: ActionConfig = ActionConfig(),
    cfg: TrajectoryConfig = TrajectoryConfig(),
    agent_radius: float = 0.2,
) -> list[int]:
    """Exactly ``steps`` actions of trajectory ``kind`` starting from ``start``.

    Kinds: ``shortest`` (chained shortest paths to random goals), ``out_and_back`` (to a goal, turn
    around, back to the start), ``loop`` (through 2-3 goals and back to the start), ``look_back``
    (shortest paths interrupted by turning away 90-180 degrees and back). Segments repeat until the
    episode is full; an optional look-around comes first.
    """
    if kind not in TRAJECTORY_KINDS:
        raise ValueError(f"unknown trajectory kind {kind!r}; known: {TRAJECTORY_KINDS}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not free_space.is_free(start.x, start.y):
        raise ValueError(f"start position ({start.x:.2f}, {start.y:.2f}) is not in free space")
    p = _Planner(free_space, _planning_grid(free_space, cfg), start, steps, action_cfg, cfg, rng)
    if rng.random() < cfg.look_around_prob:
        p.look_around()
    failures = 0
    while not p.full and failures < 20:
        ok = True
        if kind == "shortest":
            ok = p.go_to(p.random_goal())
        elif kind == "out_and_back":
            home, home_yaw = (p.state.x, p.state.y), p.state.yaw
            ok = p.go_to(p.random_goal())
            p.face(p.state.yaw + math.pi)
            ok = p.go_to(home) and ok
            p.face(home_yaw)
        elif kind == "loop":
            home = (p.state.x, p.state.y)
            for _ in range(int(rng.integers(2, 4))):
                ok = p.go_to(p.random_goal()) and ok
            ok = p.go_to(home) and ok
        elif kind == "look_back":
            ok = p.go_to(p.random_goal())
            n = int(rng.integers(6, 13)) * (1 if rng.random() < 0.5 else -1)
            p.turn_by(n)
            p.turn_by(-n)
        failures += 0 if ok else 1
    while not p.full:  # could not move on (tiny free space): look around in place
        p.act(Action.TURN_LEFT)
    return p.actions


def _planning_grid(free_space: FreeSpaceGrid, cfg: TrajectoryConfig) -> FreeSpaceGrid:
    """The grid paths are planned on: free space eroded by the planning margin, at about
    ``cfg.planning_cell_m`` per cell (4x fewer cells than the collision grid, same paths in practice)."""
    from scipy import ndimage

    margin_cells = int(math.ceil(cfg.planning_margin_m / free_space.resolution))
    plan_mask = ndimage.binary_erosion(free_space.free, iterations=margin_cells) if margin_cells else free_space.free
    plan_free = FreeSpaceGrid(plan_mask if plan_mask.any() else free_space.free, free_space.origin, free_space.resolution)
    coarse = plan_free.downsampled(max(1, int(round(cfg.planning_cell_m / free_space.resolution))))
    return coarse if coarse.free.any() else plan_free


def plan_house_tour(
    free_space: FreeSpaceGrid,
    house,
    start: AgentState,
    rng: np.random.Generator,
    action_cfg: ActionConfig = ActionConfig(),
    cfg: TrajectoryConfig = TrajectoryConfig(),
    max_steps: int = 4000,
) -> tuple[list[int], list[int]]:
    """A first full look-around of a house: turn 360 degrees where the agent stands, then walk to
    every other reachable room (nearest room centre first) and turn 360 degrees at the free spot
    of that room nearest its centre (planning clearance included).

    Returns ``(actions, toured_room_ids)``; rooms whose free space is unreachable from the start
    are skipped (and absent from the list). Used by the map-size benchmark as the baseline that a
    later walk through already seen rooms is compared with.
    """
    if not free_space.is_free(start.x, start.y):
        raise ValueError(f"start position ({start.x:.2f}, {start.y:.2f}) is not in free space")
    plan_free = _planning_grid(free_space, cfg)
    p = _Planner(free_space, plan_free, start, max_steps, action_cfg, cfg, rng)
    ii, jj = np.nonzero(plan_free.free & (p.component if p.component is not None else plan_free.free))
    cx, cy = plan_free.cell_to_world(ii, jj)
    spots: dict[int, tuple[float, float]] = {}
    for room in house.rooms:
        inside = (cx > room.x0) & (cx < room.x1) & (cy > room.y0) & (cy < room.y1)
        if not inside.any():
            continue
        d = np.hypot(cx[inside] - room.center[0], cy[inside] - room.center[1])
        k = int(np.argmin(d))
        spots[room.id] = (float(cx[inside][k]), float(cy[inside][k]))
    here = house.room_at(start.x, start.y)
    toured: list[int] = []
    n_turn = int(round(2 * math.pi / p.turn))
    p.turn_by(n_turn)
    if here is not None:
        if len(p.actions) == n_turn:
            toured.append(here)
        spots.pop(here, None)
    while spots and not p.full:
        rid = min(spots, key=lambda r: math.hypot(spots[r][0] - p.state.x, spots[r][1] - p.state.y))
        goal = spots.pop(rid)
        if p.go_to(goal) and not p.full and house.room_at(p.state.x, p.state.y) == rid:
            before = len(p.actions)
            p.turn_by(n_turn)
            if len(p.actions) - before == n_turn:  # a full turn, not one cut short by max_steps
                toured.append(rid)
    return p.actions, toured


def _densify(path: list[tuple[float, float]], spacing: float) -> list[tuple[float, float]]:
    """Insert waypoints so consecutive ones are at most ``spacing`` apart."""
    out = [path[0]]
    for (x0, y0), (x1, y1) in zip(path, path[1:]):
        n = max(1, int(math.ceil(math.hypot(x1 - x0, y1 - y0) / spacing)))
        out.extend((x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(1, n + 1))
    return out


def choose_kind(rng: np.random.Generator, cfg: TrajectoryConfig = TrajectoryConfig()) -> str:
    kinds = [k for k in TRAJECTORY_KINDS if cfg.kind_weights.get(k, 0) > 0]
    w = np.array([cfg.kind_weights[k] for k in kinds], dtype=np.float64)
    return kinds[int(rng.choice(len(kinds), p=w / w.sum()))]


def replay(free_space: FreeSpaceGrid, start: AgentState, actions, action_cfg: ActionConfig = ActionConfig()
           ) -> tuple[list[AgentState], list[bool]]:
    """States (``len(actions) + 1``) and collision flags from executing ``actions``."""
    states, hits = [start], []
    for a in Action.check(actions):
        s, c = move(states[-1], int(a), free_space, action_cfg)
        states.append(s)
        hits.append(c)
    return states, hits
