"""Goal-reaching tasks for planning with the world model (arXiv 2505.05495, §4.2 and Table 2).

The paper plans toward a goal *image*: candidate action sequences are imagined and the one whose
last frame looks most like the goal is executed (ranking, Table 2), or the action distribution is
refined with the cross-entropy method (MPC). A :class:`GoalTask` is one such problem in a
held-out house of a ``pewm.sim`` dataset:

* the agent has already walked an **exploration prefix** (the first ``prefix`` ground-truth frames
  of an episode, which fill the memory); it starts at the prefix's last frame (``prefix - 1``);
* the **goal** is an earlier prefix frame (``goal_frame < prefix - 1``), given to a planner as its
  RGB-D image only; its pose (``goal_state``) is for scoring;
* the goal is **beyond the current view**: less than ``max_goal_visible`` of the goal view's surface
  is visible from the start view (:func:`goal_visible_fraction`), and its free-space shortest path
  from the start is ``min_path_m .. max_path_m`` long;
* **success**: within ``success_dist_m`` and ``success_deg`` of the goal pose (:func:`is_success`).

Tasks are a deterministic function of (dataset, split, n, seed, config) (:func:`make_tasks`) and
carry their difficulty (``path_length_m``, ``turn_deg``) so results can be split by it.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pewm.atomic import atomic_write_text
from pewm.data import SPLITS, Dataset, open_dataset
from pewm.geometry import AgentState, intrinsics_matrix, wrap_angle
from pewm.sim import FreeSpaceGrid, SimConfig, generate_house

__all__ = [
    "TASKS_FORMAT",
    "GoalTask",
    "TaskConfig",
    "TaskFrames",
    "goal_visible_fraction",
    "is_success",
    "load_task_frames",
    "make_tasks",
    "path_length_m",
    "pose_error",
    "read_tasks",
    "write_tasks",
]

TASKS_FORMAT = "pewm-goal-tasks"
TASKS_VERSION = 1


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TaskConfig:
    """How goal-reaching tasks are drawn and scored (defaults: the issue's benchmark, §4.2).

    ``prefix_range`` (inclusive) bounds the number of exploration frames before the start;
    ``min_path_m``/``max_path_m`` the free-space path from start to goal; ``max_goal_visible`` the
    fraction of the goal view visible from the start (strictly less than it is accepted);
    ``budget`` the planner's actions; ``success_dist_m``/``success_deg`` the success radius.
    ``visibility_stride`` subsamples the goal depth for the visibility test, ``occlusion_rel`` /
    ``occlusion_abs`` are its depth tolerance (a point is unoccluded when its depth in the start
    camera is at most ``start_depth * (1 + rel) + abs``). ``prefix_draws`` is how many prefix
    lengths one visit of an episode tries (each scanning its goal frames in random order) and
    ``max_rounds`` how many round-robin passes over the split's episodes :func:`make_tasks` makes.
    """

    prefix_range: tuple[int, int] = (100, 200)
    min_path_m: float = 1.0
    max_path_m: float = 4.0
    max_goal_visible: float = 0.10
    budget: int = 48
    success_dist_m: float = 0.5
    success_deg: float = 30.0
    visibility_stride: int = 2
    occlusion_rel: float = 0.05
    occlusion_abs: float = 0.05
    prefix_draws: int = 4
    max_rounds: int = 20

    def __post_init__(self) -> None:
        pr = self.prefix_range
        if (not isinstance(pr, (tuple, list)) or len(pr) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pr)):
            raise ValueError(f"TaskConfig.prefix_range must be two ints (lo, hi), got {pr!r}")
        object.__setattr__(self, "prefix_range", (int(pr[0]), int(pr[1])))
        lo, hi = self.prefix_range
        if not 2 <= lo <= hi:
            raise ValueError(f"TaskConfig.prefix_range must satisfy 2 <= lo <= hi (the goal is a frame before "
                             f"the start), got {pr!r}")
        if not (math.isfinite(self.min_path_m) and self.min_path_m >= 0):
            raise ValueError(f"TaskConfig.min_path_m must be >= 0, got {self.min_path_m}")
        if not (math.isfinite(self.max_path_m) and self.max_path_m >= self.min_path_m and self.max_path_m > 0):
            raise ValueError(f"TaskConfig.max_path_m must be > 0 and >= min_path_m ({self.min_path_m}), "
                             f"got {self.max_path_m}")
        if not 0.0 < self.max_goal_visible <= 1.0:
            raise ValueError(f"TaskConfig.max_goal_visible must be in (0, 1], got {self.max_goal_visible}")
        for name in ("budget", "visibility_stride", "prefix_draws", "max_rounds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"TaskConfig.{name} must be an int >= 1, got {v!r}")
        if not (math.isfinite(self.success_dist_m) and self.success_dist_m > 0):
            raise ValueError(f"TaskConfig.success_dist_m must be > 0, got {self.success_dist_m}")
        if not 0.0 < self.success_deg <= 180.0:
            raise ValueError(f"TaskConfig.success_deg must be in (0, 180], got {self.success_deg}")
        for name in ("occlusion_rel", "occlusion_abs"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"TaskConfig.{name} must be >= 0, got {v}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prefix_range"] = list(self.prefix_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TaskConfig: unknown option(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "prefix_range" in d:
            d["prefix_range"] = tuple(d["prefix_range"])
        return cls(**d)


# ------------------------------------------------------------------------------------------ task
def _state3(s: Any, what: str) -> tuple[float, float, float]:
    """``(x, y, yaw)`` from an :class:`AgentState` or a length-3 sequence."""
    if isinstance(s, AgentState):
        return (float(s.x), float(s.y), float(s.yaw))
    a = np.asarray(s, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise ValueError(f"{what} must be (x, y, yaw) with finite values, got {s!r}")
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True)
class GoalTask:
    """One goal-reaching problem (see the module docstring). JSON via :meth:`to_dict`/:meth:`from_dict`.

    ``goal_state`` (and ``goal_frame``) is for scoring only: a planner gets the goal's images from
    :func:`load_task_frames`. ``turn_deg`` is ``|wrap(goal_yaw - start_yaw)|`` in [0, 180];
    ``visible_fraction`` the part of the goal view visible from the start view.
    """

    task_id: str
    episode: int
    house_seed: int
    prefix: int
    goal_frame: int
    start_state: tuple[float, float, float]
    goal_state: tuple[float, float, float]
    path_length_m: float
    turn_deg: float
    visible_fraction: float
    house_id: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_state", _state3(self.start_state, "GoalTask.start_state"))
        object.__setattr__(self, "goal_state", _state3(self.goal_state, "GoalTask.goal_state"))
        if not 0 <= self.goal_frame < self.prefix - 1:
            raise ValueError(f"GoalTask {self.task_id!r}: goal_frame must be in [0, prefix - 1) = "
                             f"[0, {self.prefix - 1}), got {self.goal_frame}")

    @property
    def start_frame(self) -> int:
        """Index of the start frame in the episode (the prefix's last frame)."""
        return self.prefix - 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start_state"], d["goal_state"] = list(self.start_state), list(self.goal_state)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GoalTask":
        known = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.name not in d)
        if missing or set(d) - known:
            raise ValueError(f"GoalTask: missing field(s) {missing}, unknown field(s) {sorted(set(d) - known)}")
        return cls(**{**d, "start_state": tuple(d["start_state"]), "goal_state": tuple(d["goal_state"])})


# ------------------------------------------------------------------------------------- scoring
def pose_error(state: Any, goal_state: Any) -> tuple[float, float]:
    """``(distance_m, angle_deg)`` between two ``(x, y, yaw)`` states; the angle is wrapped to [0, 180]."""
    x, y, yaw = _state3(state, "state")
    gx, gy, gyaw = _state3(goal_state, "goal_state")
    return math.hypot(x - gx, y - gy), abs(math.degrees(wrap_angle(yaw - gyaw)))


def is_success(state: Any, goal_state: Any, config: TaskConfig = TaskConfig()) -> bool:
    """Whether ``state`` is within ``config.success_dist_m`` and ``config.success_deg`` of the goal."""
    dist, ang = pose_error(state, goal_state)
    return dist <= config.success_dist_m and ang <= config.success_deg


# ----------------------------------------------------------------------------------- visibility
def goal_visible_fraction(goal_depth, goal_pose, start_depth, start_pose, K, stride: int = 2,
                          occlusion_rel: float = 0.05, occlusion_abs: float = 0.05) -> float:
    """Fraction of the goal view's surface that the start camera sees (numpy, no rendering).

    The goal depth (every ``stride``-th pixel with valid depth) is unprojected to world points with
    the goal pose (camera-to-world, OpenCV axes) and ``K``, then projected into the start camera. A
    point counts as visible when it is in front of the camera, lands inside the image, and is not
    occluded: its start-camera depth is at most ``start_depth * (1 + occlusion_rel) +
    occlusion_abs`` at its (nearest) pixel; a pixel without a start measurement does not occlude.
    Returns NaN when the goal has no valid depth.
    """
    gd = np.asarray(goal_depth, dtype=np.float64)
    sd = np.asarray(start_depth, dtype=np.float64)
    if gd.ndim != 2 or sd.ndim != 2:
        raise ValueError(f"goal_visible_fraction: depths must be (H, W), got {gd.shape} and {sd.shape}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"goal_visible_fraction: stride must be an int >= 1, got {stride!r}")
    H, W = sd.shape
    Km = intrinsics_matrix(K, *gd.shape, what="goal_visible_fraction K")
    Tg = np.asarray(goal_pose, dtype=np.float64)
    Ts = np.asarray(start_pose, dtype=np.float64)
    v, u = np.mgrid[0:gd.shape[0]:stride, 0:gd.shape[1]:stride]
    z = gd[::stride, ::stride]
    ok = np.isfinite(z) & (z > 0)
    if not ok.any():
        return float("nan")
    u, v, z = u[ok].astype(np.float64), v[ok].astype(np.float64), z[ok]
    p_cam = np.stack([(u - Km[0, 2]) / Km[0, 0] * z, (v - Km[1, 2]) / Km[1, 1] * z, z], axis=1)
    p_world = p_cam @ Tg[:3, :3].T + Tg[:3, 3]
    q = (p_world - Ts[:3, 3]) @ Ts[:3, :3]  # R^T (p - t)
    zs = q[:, 2]
    front = zs > 1e-6
    us = np.full(zs.shape, -1, dtype=np.int64)
    vs = np.full(zs.shape, -1, dtype=np.int64)
    us[front] = np.floor(Km[0, 0] * q[front, 0] / zs[front] + Km[0, 2] + 0.5).astype(np.int64)
    vs[front] = np.floor(Km[1, 1] * q[front, 1] / zs[front] + Km[1, 2] + 0.5).astype(np.int64)
    inside = front & (us >= 0) & (us < W) & (vs >= 0) & (vs < H)
    d_start = sd[vs[inside], us[inside]]
    measured = np.isfinite(d_start) & (d_start > 0)
    unoccluded = ~measured | (zs[inside] <= d_start * (1.0 + occlusion_rel) + occlusion_abs)
    return float(unoccluded.sum()) / float(z.size)


# ---------------------------------------------------------------------------------------- frames
@dataclass
class TaskFrames:
    """What a planner gets for a task: the exploration prefix, the start view and the goal *image*.

    ``rgb`` (P, h, w, 3) uint8, ``depth`` (P, h, w) metres, ``poses`` (P, 4, 4) camera-to-world and
    ``actions`` (P - 1,) (or ``None``) of the prefix; ``K`` (3, 3); ``start_*`` the last prefix frame.
    The goal's pose and frame index are not here (they stay in the :class:`GoalTask`).
    """

    rgb: np.ndarray
    depth: np.ndarray
    poses: np.ndarray
    K: np.ndarray
    goal_rgb: np.ndarray
    goal_depth: np.ndarray
    start_rgb: np.ndarray
    start_depth: np.ndarray
    start_pose: np.ndarray
    actions: np.ndarray | None = None


def _as_dataset(dataset: Dataset | str | Path) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else open_dataset(dataset)


def load_task_frames(dataset: Dataset | str | Path, task: GoalTask) -> TaskFrames:
    """Read a task's prefix frames (only frames ``0 .. prefix - 1`` are decompressed).

    Raises ValueError when the episode does not match the task (another dataset).
    """
    ds = _as_dataset(dataset)
    ep = ds.read(task.episode, frames=(0, task.prefix))
    if ep.num_frames != task.prefix or int(ep.meta.get("house_seed", -1)) != task.house_seed:
        raise ValueError(f"task {task.task_id!r} does not match episode {task.episode} of {ds.root} "
                         f"(house_seed {ep.meta.get('house_seed')} vs {task.house_seed}, "
                         f"{ep.num_frames} frames read for prefix {task.prefix}); tasks were made from another dataset?")
    s, g = task.prefix - 1, task.goal_frame
    return TaskFrames(
        rgb=ep.rgb, depth=ep.depth, poses=ep.poses, K=np.asarray(ep.intrinsics.matrix, dtype=np.float64),
        goal_rgb=ep.rgb[g].copy(), goal_depth=ep.depth[g].copy(),
        start_rgb=ep.rgb[s].copy(), start_depth=ep.depth[s].copy(), start_pose=ep.poses[s].copy(),
        actions=ep.actions,
    )


# -------------------------------------------------------------------------------------- making
class _HouseSpace:
    """The free-space grid of one house with its connected components (built once per house)."""

    def __init__(self, house_seed: int, sim: SimConfig) -> None:
        from scipy import ndimage

        self.grid: FreeSpaceGrid = generate_house(int(house_seed), sim.house).free_space(
            sim.agent_radius, sim.free_space_resolution)
        self.labels = ndimage.label(self.grid.free)[0]

    def path_length(self, start: tuple[float, float], goal: tuple[float, float]) -> float | None:
        """:func:`path_length_m`, answering ``None`` at once for positions in different components."""
        g = self.grid
        la, lb = (int(self.labels[tuple(int(v) for v in g.world_to_cell(*g.nearest_free(*p)))]) for p in (start, goal))
        return None if la == 0 or la != lb else path_length_m(g, start, goal)


def path_length_m(grid: FreeSpaceGrid, start: tuple[float, float], goal: tuple[float, float]) -> float | None:
    """Length (metres) of the free-space shortest path between two positions (A* then line-of-sight
    smoothing, :meth:`FreeSpaceGrid.shortest_path`), ``None`` if unreachable. A position off the
    grid's free cells (discretisation) is moved to the nearest free cell first."""
    pts = grid.shortest_path(grid.nearest_free(*start), grid.nearest_free(*goal))
    if pts is None:
        return None
    return float(sum(math.hypot(x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:])))


def _sim_config(ds: Dataset) -> SimConfig:
    sim = (ds.spec.generator or {}).get("sim")
    if not isinstance(sim, dict):
        raise ValueError(f"dataset {ds.root}: goal-reaching tasks need a pewm.sim dataset (dataset.json "
                         "generator.sim is missing), to rebuild the houses' free space")
    return SimConfig.from_dict(sim)


def _try_episode(ds: Dataset, index: int, rng: np.random.Generator, cfg: TaskConfig, space: _HouseSpace,
                 seen: set[tuple[int, int, int]]) -> GoalTask | None:
    """Up to ``cfg.prefix_draws`` prefix lengths of one episode, each with its goal frames scanned in
    random order; the first (prefix, goal) that passes every test becomes a task."""
    ep = ds.read(index, validate=False)
    states = np.asarray(ep.meta["agent_states"], dtype=np.float64)
    T = ep.num_frames
    lo, hi = cfg.prefix_range[0], min(cfg.prefix_range[1], T)
    K = np.asarray(ep.intrinsics.matrix, dtype=np.float64)
    for _ in range(cfg.prefix_draws):
        prefix = int(rng.integers(lo, hi + 1))
        s = prefix - 1
        goals = rng.permutation(s)
        dist = np.hypot(states[goals, 0] - states[s, 0], states[goals, 1] - states[s, 1])
        for g in goals[dist <= cfg.max_path_m]:  # the path is never shorter than the straight line
            g = int(g)
            if (index, prefix, g) in seen:
                continue
            vis = goal_visible_fraction(ep.depth[g], ep.poses[g], ep.depth[s], ep.poses[s], K,
                                        cfg.visibility_stride, cfg.occlusion_rel, cfg.occlusion_abs)
            if not vis < cfg.max_goal_visible:
                continue
            length = space.path_length(tuple(states[s, :2]), tuple(states[g, :2]))
            if length is None or not cfg.min_path_m <= length <= cfg.max_path_m:
                continue
            seen.add((index, prefix, g))
            turn = abs(math.degrees(wrap_angle(states[g, 2] - states[s, 2])))
            return GoalTask(
                task_id=f"{ep.split}-ep{index:06d}-p{prefix:03d}-g{g:03d}", episode=int(index),
                house_seed=int(ep.meta["house_seed"]), prefix=prefix, goal_frame=g,
                start_state=tuple(states[s]), goal_state=tuple(states[g]), path_length_m=round(length, 6),
                turn_deg=round(turn, 6), visible_fraction=round(vis, 6), house_id=ep.house_id, split=ep.split,
            )  # fmt: skip
    return None


def make_tasks(dataset: Dataset | str | Path, split: str = "test", n: int = 30, seed: int = 0,
               config: TaskConfig = TaskConfig()) -> list[GoalTask]:
    """``n`` goal-reaching tasks from the ``split`` episodes of a ``pewm.sim`` dataset, deterministic in
    (dataset, split, n, seed, config) (§4.2 / Table 2 set-up; criteria in the module docstring).

    Episodes are visited round-robin in a seeded order (one task per visit, so tasks spread over
    episodes and houses); a visit tries ``config.prefix_draws`` prefix lengths from
    ``config.prefix_range`` (clipped to the episode's length), scanning the prefix's frames as goal
    candidates in random order. Raises ValueError for a bad ``split``/``n``, a split without
    (long enough) episodes, or when fewer than ``n`` tasks are found in ``config.max_rounds`` passes.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of tasks) must be an int >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(config, TaskConfig):
        raise TypeError(f"config must be a TaskConfig, got {type(config).__name__}")
    ds = _as_dataset(dataset)
    sim = _sim_config(ds)
    infos = [(i, ds.read_info(i)) for i in ds.episode_indices()]
    in_split = [(i, info) for i, info in infos if info.split == split]
    if not in_split:
        present = sorted({info.split for _, info in infos})
        raise ValueError(f"split {split!r}: dataset {ds.root} has no episodes of this split "
                         f"(splits present: {present or 'none'})")
    usable = [(i, info) for i, info in in_split if info.num_frames >= config.prefix_range[0]]
    if not usable:
        longest = max(info.num_frames for _, info in in_split)
        raise ValueError(f"prefix_range {config.prefix_range}: every {split!r} episode of {ds.root} is shorter "
                         f"than {config.prefix_range[0]} frames (longest: {longest}); lower prefix_range")
    for i, info in usable:
        if "agent_states" not in info.meta or "house_seed" not in info.meta:
            raise ValueError(f"episode {i} of {ds.root}: meta lacks 'agent_states'/'house_seed' "
                             "(goal-reaching tasks need a pewm.sim dataset)")
    rng = np.random.default_rng([int(seed), SPLITS.index(split), 0x60A1])  # not n: a smaller n gives a prefix
    spaces: dict[int, _HouseSpace] = {}
    seen: set[tuple[int, int, int]] = set()
    tasks: list[GoalTask] = []
    for _ in range(config.max_rounds):
        for k in rng.permutation(len(usable)):
            if len(tasks) >= n:
                return tasks
            i, info = usable[int(k)]
            hs = int(info.meta["house_seed"])
            if hs not in spaces:
                spaces[hs] = _HouseSpace(hs, sim)
            task = _try_episode(ds, i, rng, config, spaces[hs], seen)
            if task is not None:
                tasks.append(task)
        if len(tasks) >= n:
            return tasks
    raise ValueError(
        f"only {len(tasks)} of n={n} goal-reaching tasks found in split {split!r} of {ds.root} "
        f"({len(usable)} episode(s), {config.max_rounds} rounds): lower n, use a larger split, or relax "
        f"TaskConfig (prefix_range={config.prefix_range}, min_path_m={config.min_path_m}, "
        f"max_path_m={config.max_path_m}, max_goal_visible={config.max_goal_visible}, max_rounds)")


# ------------------------------------------------------------------------------------------ JSON
def write_tasks(path: str | Path, tasks: list[GoalTask], config: TaskConfig | None = None) -> Path:
    """Write ``tasks`` (and optionally the config that made them) as JSON, atomically."""
    doc: dict[str, Any] = {"format": TASKS_FORMAT, "version": TASKS_VERSION, "tasks": [t.to_dict() for t in tasks]}
    if config is not None:
        doc["config"] = config.to_dict()
    return atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def read_tasks(path: str | Path) -> list[GoalTask]:
    """Tasks written by :func:`write_tasks`; ValueError naming the file for anything else."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read goal tasks ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != TASKS_FORMAT or not isinstance(doc.get("tasks"), list):
        raise ValueError(f"{path}: not a goal-task file (expected format {TASKS_FORMAT!r} with a 'tasks' list)")
    if doc.get("version") != TASKS_VERSION:
        raise ValueError(f"{path}: goal-task file version {doc.get('version')!r} is not supported ({TASKS_VERSION})")
    try:
        return [GoalTask.from_dict(t) for t in doc["tasks"]]
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: invalid task: {e}") from e
