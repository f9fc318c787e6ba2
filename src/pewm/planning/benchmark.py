"""The goal-reaching benchmark (``pewm plan``): planners x memories x seeds on held-out tasks.

Rows (each a planner and what it imagines through, arXiv 2505.05495 §4.2 Table 2, §5.1 Fig. 6a):

* ``rank/<memory>`` and ``cem/<memory>`` for each ``--memory``: the world model with its memory
  (the model's reader, e.g. ``voxel-render``: the exploration prefix is in the map) or ``none``
  (same weights, empty memory);
* ``rank/oracle``, ``cem/oracle``: the same planners with the **simulator as the world model**
  (perfect imagination: the upper bound);
* ``rank/map-only``, ``cem/map-only``: the same planners without a world model: candidates reach the
  poses their actions lead to and "see" the current view; the memory of the prefix is kept (with
  the ``map`` cost: what planning gains without imagination);
* ``random``: a random proposal executed without imagination (the lower bound).

Every episode's result is written to ``OUT/episodes/<row>/<task>_s<seed>.json`` as soon as it is
done, so an interrupted run continues where it stopped (same command); ``OUT/results.json`` holds
the summary (mean ± std over seeds, success split by difficulty, a bootstrap interval over
episodes) and ``OUT/videos/<task>/<row>.mp4`` one video per task and row (first seed).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from pewm.assets import load_model, resolve_model_path
from pewm.atomic import atomic_write_text
from pewm.data import SPLITS, open_dataset, require_complete
from pewm.geometry import AgentState
from pewm.model import MemoryBuilder, SamplingConfig
from pewm.model.frame_ops import fit_to_model
from pewm.outputs import check_output_dir
from pewm.planning.costs import COSTS, make_cost
from pewm.planning.episode import Blind, run_episode
from pewm.planning.map_cost import MapCostConfig, MapGoalCost
from pewm.planning.metrics import METRICS, bootstrap_success, summarize
from pewm.planning.planners import (
    CEMConfig,
    RankConfig,
    StopRule,
    cem,
    make_proposals,
    random_choice,
    rank,
)
from pewm.planning.proposals import ActionPrior, fit_prior_from_dataset
from pewm.planning.tasks import GoalTask, TaskConfig, TaskFrames, load_task_frames, make_tasks
from pewm.planning.worlds import Frame, MapOnlyWorld, ModelWorld, SimulatorWorld
from pewm.model.rollout_memory import RolloutMemory
from pewm.sim import EmbodiedEnv, SimConfig, generate_house
from pewm.video import write_video

METHODS = ("rank", "cem")
GOAL_COSTS = ("map", *COSTS)  # "map": find the goal in the memory's map (pewm.planning.map_cost)
BASELINES = ("oracle", "map-only", "random")
ARTEFACTS = ("results.json", "episodes", "videos", "plan_config.json")


@dataclass
class PlanConfig:
    """Settings of one benchmark run (the ``pewm plan`` options; see ``pewm plan --help``)."""

    data: str
    out: str
    model: str | None = None
    split: str = "test"
    tasks: int = 30
    task_seed: int = 0
    methods: tuple[str, ...] = METHODS
    memories: tuple[str, ...] = ("voxel-render", "none")
    baselines: tuple[str, ...] = BASELINES
    seeds: int = 2
    rank: RankConfig = field(default_factory=RankConfig)
    cem: CEMConfig = field(default_factory=CEMConfig)
    execute: int = 8
    cost: str = "map"
    image_cost: str = "latent"
    map_cost: MapCostConfig = field(default_factory=MapCostConfig)
    stop_threshold: float | None = None
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(steps=4))
    task_config: TaskConfig = field(default_factory=TaskConfig)
    videos: bool = True
    overwrite: bool = False
    allow_incomplete: bool = False

    def validate(self) -> None:
        for name, values, valid in (("--method", self.methods, METHODS), ("--baselines", self.baselines, BASELINES)):
            bad = [v for v in values if v not in valid]
            if bad:
                raise ValueError(f"{name}: unknown {bad}; choose from {list(valid)}")
        if not self.methods and not self.baselines:
            raise ValueError("--method: nothing to run (no method and no baseline)")
        if not isinstance(self.tasks, int) or self.tasks < 1:
            raise ValueError(f"--tasks must be >= 1, got {self.tasks!r}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds!r}")
        if not isinstance(self.execute, int) or self.execute < 1:
            raise ValueError(f"--execute must be >= 1 action per decision, got {self.execute!r}")
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r}: choose from {list(SPLITS)}")
        if isinstance(self.task_seed, bool) or not isinstance(self.task_seed, int) or self.task_seed < 0:
            raise ValueError(f"--task-seed must be >= 0, got {self.task_seed!r}")
        if self.stop_threshold is not None and not math.isfinite(self.stop_threshold):
            raise ValueError(f"--stop-threshold must be a finite number, got {self.stop_threshold!r}")
        if self.cost not in GOAL_COSTS:
            raise ValueError(f"--cost {self.cost!r}: unknown goal cost; choose from {list(GOAL_COSTS)}")
        if self.image_cost not in COSTS:
            raise ValueError(f"--image-cost {self.image_cost!r}: unknown image cost; choose from {sorted(COSTS)}")
        if self.execute > min(self.rank.horizon, self.cem.horizon):
            raise ValueError(f"--execute {self.execute} is longer than the planned horizon "
                             f"({min(self.rank.horizon, self.cem.horizon)})")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("out", "overwrite", "videos", "allow_incomplete"):
            d.pop(k)
        return json.loads(json.dumps(d, default=list))


@dataclass(frozen=True)
class Row:
    """One row of the table: a planner (``rank``, ``cem``, ``random``) and its world (a memory name,
    ``none``, ``oracle`` or ``blind``)."""

    method: str
    world: str

    @property
    def name(self) -> str:
        return "random" if self.method == "random" else f"{self.method}/{self.world}"

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-")


def rows_of(cfg: PlanConfig) -> list[Row]:
    rows = [Row(m, w) for m in cfg.methods for w in cfg.memories]
    if "oracle" in cfg.baselines:
        rows += [Row(m, "oracle") for m in (cfg.methods or ("rank",))]
    if "map-only" in cfg.baselines:
        rows += [Row(m, "map-only") for m in (cfg.methods or ("rank",))]
    if "random" in cfg.baselines:
        rows.append(Row("random", "blind"))
    return rows


def _rng(seed: int, task: GoalTask, row: Row) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.task_id.encode()), zlib.crc32(row.name.encode())])


def _decider(row: Row, cfg: PlanConfig, cost_fn, goal, rng, prior: ActionPrior | None) -> Callable:
    goal_rgb, goal_depth = goal

    def decide(world, step: int):
        if row.method == "cem":
            return cem(world, cost_fn, goal_rgb, goal_depth, cfg.cem, rng)
        props = make_proposals(cfg.rank, rng, prior)
        if row.method == "random":
            return random_choice(rng, props)
        return rank(world, cost_fn, goal_rgb, goal_depth, props, cfg.rank.budget)

    return decide


class _Houses:
    """One simulator per house, reused across rows and seeds."""

    def __init__(self, sim: SimConfig) -> None:
        self.sim, self.env, self.seed = sim, EmbodiedEnv(sim), None

    def get(self, house_seed: int) -> EmbodiedEnv:
        if self.seed != house_seed:
            self.env.reset(seed=0, options={"house": generate_house(house_seed, self.sim.house)})
            self.seed = house_seed
        return self.env

    def close(self) -> None:
        self.env.close()


def _check_resume(out: Path, cfg: PlanConfig) -> None:
    path = out / "plan_config.json"
    want = cfg.to_dict()
    if path.exists():
        have = json.loads(path.read_text())
        if have != want:
            changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ValueError(f"--out {out} holds an unfinished run with other settings ({', '.join(changed)}); "
                             "pass --overwrite to start again, or choose another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(want, indent=2) + "\n")


def run_plan_benchmark(cfg: PlanConfig, on_progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Run (or continue) the benchmark described by ``cfg``; returns the summary also written to
    ``OUT/results.json``. ``on_progress(done, total, what)`` after each episode."""
    cfg.validate()
    out = Path(cfg.out)
    check_output_dir(out, ["results.json"], cfg.overwrite)
    if cfg.overwrite:
        check_output_dir(out, ARTEFACTS, True)
    if not cfg.allow_incomplete:
        require_complete(cfg.data)  # cheap: file names, sizes and the manifest
    ds = open_dataset(cfg.data)
    model_dir = resolve_model_path(cfg.model)
    model = load_model(model_dir)
    readers = {model.config.reader, "none"}
    bad = [m for m in cfg.memories if m not in readers]
    if bad:
        raise ValueError(f"--memory {','.join(bad)}: this model reads {model.config.reader!r}; "
                         f"choose from {sorted(readers)}")
    sim = SimConfig.from_dict(ds.spec.generator["sim"])
    if sim.resolution != model.config.image_height:
        sim = replace(sim, resolution=model.config.image_height)
    tasks = make_tasks(ds, cfg.split, cfg.tasks, cfg.task_seed, cfg.task_config)
    image_cost = make_cost(cfg.image_cost if cfg.cost == "map" else cfg.cost, model)
    builder = MemoryBuilder.for_model(model, render_supersample=cfg.sampling.render_supersample)
    prior = fit_prior_from_dataset(cfg.data, "train") if cfg.rank.proposal == "prior" else None
    _check_resume(out, cfg)  # last of the checks: it writes OUT/plan_config.json
    rows = rows_of(cfg)
    total, done = len(tasks) * len(rows) * cfg.seeds, 0
    houses = _Houses(sim)
    results: dict[str, dict[int, list[dict]]] = {r.name: {s: [] for s in range(cfg.seeds)} for r in rows}
    try:
        for task in tasks:
            frames = None
            for seed in range(cfg.seeds):
                for row in rows:
                    path = out / "episodes" / row.slug / f"{task.task_id}_s{seed}.json"
                    if path.exists():
                        results[row.name][seed].append(json.loads(path.read_text()))
                        done += 1
                        if on_progress:
                            on_progress(done, total, f"{row.name} {task.task_id} (done before)")
                        continue
                    frames = frames or _fit_frames(load_task_frames(ds, task), model)
                    env = houses.get(task.house_seed)
                    world = _world(row, cfg, model, frames, env, task, seed, builder)
                    cost_fn = _episode_cost(cfg, image_cost, world, frames)
                    rng = _rng(seed, task, row)
                    decide = _decider(row, cfg, cost_fn, (frames.goal_rgb, frames.goal_depth), rng, prior)
                    record = cfg.videos and seed == 0
                    res = run_episode(task, frames, env, world, decide, cost_fn, StopRule(cfg.stop_threshold),
                                      cfg.task_config, cfg.execute, record)
                    entry = {**res.to_dict(), "row": row.name, "seed": seed, "path_length_m": task.path_length_m,
                             "turn_deg": task.turn_deg, **_goal_estimate(cost_fn, task)}
                    if record and res.video:
                        write_video(out / "videos" / task.task_id / f"{row.slug}.mp4", res.video, fps=4)
                    atomic_write_text(path, json.dumps(entry) + "\n")
                    results[row.name][seed].append(entry)
                    done += 1
                    if on_progress:
                        on_progress(done, total, f"{row.name} {task.task_id}")
    finally:
        houses.close()
    summary = _summary(cfg, model_dir, tasks, rows, results)
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _fit_frames(frames: TaskFrames, model) -> TaskFrames:
    """A task's frames at the model's resolution, as the simulator renders the executed ones
    (:func:`~pewm.model.frame_ops.fit_to_model`; unchanged for a dataset at that resolution)."""
    h, w = model.config.image_height, model.config.image_width
    if frames.rgb.shape[1:3] == (h, w):
        return frames
    rgb, depth, K = fit_to_model(frames.rgb, frames.depth, frames.K, h, w)
    goal_rgb, goal_depth, _ = fit_to_model(frames.goal_rgb[None], frames.goal_depth[None], frames.K, h, w)
    return replace(frames, rgb=rgb, depth=depth, K=K, goal_rgb=goal_rgb[0], goal_depth=goal_depth[0],
                   start_rgb=rgb[-1].copy(), start_depth=depth[-1].copy())


def _episode_cost(cfg: PlanConfig, image_cost, world, frames: TaskFrames):
    """The goal cost of one episode: the image cost, or a fresh ``map`` cost bound to the world's map."""
    if cfg.cost != "map" or isinstance(world, Blind):
        return image_cost
    return MapGoalCost(image_cost, world.memory_map, frames.goal_rgb, frames.goal_depth, frames.K, frames.start_pose,
                       cfg.map_cost)


def _goal_estimate(cost_fn, task: GoalTask) -> dict:
    """What the ``map`` cost made of the goal: where it registered it and how far that is from the truth."""
    if not isinstance(cost_fn, MapGoalCost):
        return {}
    est = cost_fn.estimate
    if est is None:
        return {"goal_found": False, "image_cost_decisions": cost_fn.fallbacks}
    dx, dy = est.x - task.goal_state[0], est.y - task.goal_state[1]
    dyaw = abs(math.degrees(math.remainder(est.yaw - task.goal_state[2], 2 * math.pi)))
    return {"goal_found": True, "goal_estimate": list(est.state), "goal_estimate_score": est.score,
            "goal_estimate_error_m": math.hypot(dx, dy), "goal_estimate_error_deg": dyaw,
            "image_cost_decisions": cost_fn.fallbacks}


def _world(row: Row, cfg: PlanConfig, model, frames, env: EmbodiedEnv, task: GoalTask, seed: int,
           builder: MemoryBuilder):
    if row.world == "oracle":
        # perfect imagination; with the map cost it consults the same memory of the prefix as the model
        memory = RolloutMemory.from_frames(builder, frames.rgb, frames.depth, frames.poses, frames.K) \
            if cfg.cost == "map" else None
        w = SimulatorWorld(env, memory=memory)
        w.reset(AgentState(*task.start_state))
        return w
    if row.world == "map-only":  # no imagination: the prefix memory and dead reckoning
        w = MapOnlyWorld(RolloutMemory.from_frames(builder, frames.rgb, frames.depth, frames.poses, frames.K), frames.K)
        w.reset(frames.start_rgb, frames.start_depth, frames.start_pose)
        return w
    if row.world == "blind":
        return Blind(Frame(frames.start_rgb, frames.start_depth, frames.start_pose))
    w = ModelWorld(model, frames.K, sampling=replace(cfg.sampling, seed=None), use_memory=row.world != "none",
                   seed=seed, max_batch=32)
    w.reset(frames.rgb, frames.depth, frames.poses, frames.start_rgb, frames.start_depth, frames.start_pose,
            prefix_K=frames.K)
    return w


def _bins(entries: list[dict], key: str, edges: list[float]) -> dict:
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [e["success"] for e in entries if lo <= e[key] < hi]
        out[f"{lo:g}-{hi:g}"] = {"success": 100.0 * float(np.mean(sel)) if sel else None, "episodes": len(sel)}
    return out


def _summary(cfg: PlanConfig, model_dir, tasks: list[GoalTask], rows: list[Row], results) -> dict:
    table = {}
    for row in rows:
        per_seed = results[row.name]
        flat = [e for s in per_seed for e in per_seed[s]]
        s = summarize(per_seed, METRICS)
        s["success_ci95_over_episodes"] = bootstrap_success([e["success"] for e in flat])
        s["success_by_path_m"] = _bins(flat, "path_length_m", [1.0, 2.0, 3.0, 4.01])
        s["success_by_turn_deg"] = _bins(flat, "turn_deg", [0.0, 90.0, 180.01])
        s["stopped"] = int(sum(e["stopped"] for e in flat))
        found = [e for e in flat if "goal_found" in e]
        if found:  # the map cost: how often (and how well) the goal was found in the memory
            s["goal_found_pct"] = 100.0 * float(np.mean([e["goal_found"] for e in found]))
            errs = [e["goal_estimate_error_m"] for e in found if e["goal_found"]]
            s["goal_estimate_error_m_median"] = float(np.median(errs)) if errs else None
        table[row.name] = s
    return {"model": str(model_dir), "config": cfg.to_dict(), "tasks": [t.to_dict() for t in tasks],
            "rows": table, "metric_definitions": "pewm.planning.metrics (docs/results.md, planning)"}


__all__ = ["ARTEFACTS", "BASELINES", "METHODS", "PlanConfig", "Row", "rows_of", "run_plan_benchmark"]
