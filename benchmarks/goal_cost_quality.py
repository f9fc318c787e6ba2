"""How much does a goal cost know about the pose? (issue #13: choosing the planners' cost on val.)

A planner that ranks imagined frames by their cost against the goal image can only be as good as
the cost's ordering of views: a view from near the goal pose must cost less than one from far
away. For each of ``--tasks`` goal-reaching tasks of the ``--split`` (``pewm.planning.make_tasks``),
``--views`` views are rendered by the simulator at random free positions within ``--radius``
metres of the goal, facing random directions (perfect imagination: this measures the cost alone).
Reported per cost (``pewm.planning.COSTS`` and pooled-colour variants), mean over tasks:

* ``spearman``: rank correlation between the cost and the pose error ``d + 0.5 m * angle / 30 deg``;
* ``top10_error``: mean pose error of the 10 cheapest views (random views: ``random_error``);
* ``success_in_top1``: how often the cheapest view is within the success radius (0.5 m, 30 deg).

The ``map`` row is the planners' default cost (``pewm.planning.map_cost.MapGoalCost``): the memory
of the task's exploration prefix is built as ``pewm plan`` builds it, the goal RGB-D is registered
in its map, and each view is scored by ``pose_cost`` of its camera pose: metres still to go (the
path length through the mapped free space plus turns). Where the goal is not registered the cost
falls back, as in planning, to its image cost (``latent``). Also reported (means over tasks):
``goal_found`` (the registered goal within 0.5 m and 30 deg of the true goal), ``register_s`` (the
first ``field()`` call: registration plus the first field) and ``rebuild_s`` (one ``NavField``).

    python benchmarks/goal_cost_quality.py [--data /work/data/houses160] [--split val] [--tasks 8]
        [--views 200] [--radius 3.0] [--out benchmarks/results/goal_cost_quality.json]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from _results import write_results
from scipy.stats import spearmanr

from pewm.assets import load_model
from pewm.data import open_dataset
from pewm.geometry import AgentState
from pewm.model import MemoryBuilder
from pewm.model.threads import set_threads
from pewm.planning import COSTS, TaskConfig, is_success, load_task_frames, make_cost, make_tasks, pose_error
from pewm.planning.localize import map_surface
from pewm.planning.map_cost import MapGoalCost
from pewm.planning.navigation import NavField
from pewm.model.rollout_memory import RolloutMemory
from pewm.sim import EmbodiedEnv, SimConfig, generate_house


def pooled_cost(size: int):
    """Mean squared difference of the ``size x size`` average-pooled RGB (coarse layout only)."""

    def cost(rgb, depth, goal_rgb, goal_depth):
        a = F.adaptive_avg_pool2d(torch.as_tensor(np.asarray(rgb)).permute(0, 3, 1, 2).float() / 255, size)
        b = F.adaptive_avg_pool2d(torch.as_tensor(np.asarray(goal_rgb))[None].permute(0, 3, 1, 2).float() / 255, size)
        return ((a - b) ** 2).mean((1, 2, 3)).numpy()

    return cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/data/houses160")
    ap.add_argument("--split", default="val")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--views", type=int, default=200)
    ap.add_argument("--radius", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/goal_cost_quality.json")
    args = ap.parse_args()
    set_threads(None)
    model = load_model()
    ds = open_dataset(args.data)
    tasks = make_tasks(ds, args.split, args.tasks, args.seed)
    sim = SimConfig.from_dict(ds.spec.generator["sim"])
    env = EmbodiedEnv(sim)
    costs = {name: make_cost(name, model) for name in COSTS if name != "dinov2"}
    costs.update({f"pooled-rgb-{s}x{s}": pooled_cost(s) for s in (2, 4, 8)})
    rng = np.random.default_rng(args.seed)
    builder = MemoryBuilder.for_model(model)
    per = {n: {"spearman": [], "top10_error": [], "success_in_top1": []} for n in [*costs, "map"]}
    found, register_s, rebuild_s = [], [], []
    random_error = []
    cfg = TaskConfig()
    try:
        for t in tasks:
            frames = load_task_frames(ds, t)
            env.reset(seed=0, options={"house": generate_house(t.house_seed, sim.house)})
            gx, gy, gyaw = t.goal_state
            memory = RolloutMemory.from_frames(builder, frames.rgb, frames.depth, frames.poses, frames.K)
            cost = MapGoalCost(costs["latent"], lambda: memory.pmap, frames.goal_rgb, frames.goal_depth, frames.K,
                               frames.start_pose)
            t0 = time.perf_counter()
            cost.field()
            register_s.append(time.perf_counter() - t0)
            d, ang = pose_error(cost.estimate.state, t.goal_state) if cost.estimate else (math.inf, math.inf)
            found.append(float(d <= 0.5 and ang <= 30.0))
            if cost.estimate is not None:
                points = map_surface(memory.pmap)[0]
                t0 = time.perf_counter()
                NavField(points, cost.estimate.state, cost.floor_z, cost.config.nav)
                rebuild_s.append(time.perf_counter() - t0)
            rgb, depth, err, ok, poses = [], [], [], [], []
            while len(rgb) < args.views:
                r, a = args.radius * math.sqrt(rng.uniform()), rng.uniform(-math.pi, math.pi)
                x, y = gx + r * math.cos(a), gy + r * math.sin(a)
                if not env.free_space.is_free(x, y):
                    continue
                state = (x, y, gyaw + rng.uniform(-math.pi, math.pi))
                obs = env.render_state(AgentState(*state))
                d, ang = pose_error(state, t.goal_state)
                rgb.append(obs["rgb"])
                depth.append(obs["depth"])
                poses.append(obs["pose"])
                err.append(d + 0.5 * ang / 30.0)
                ok.append(is_success(state, t.goal_state, cfg))
            rgb, depth, err, ok = np.stack(rgb), np.stack(depth), np.asarray(err), np.asarray(ok)
            random_error.append(float(err.mean()))
            scores = {n: np.asarray(c(rgb, depth, frames.goal_rgb, frames.goal_depth)) for n, c in costs.items()}
            scores["map"] = np.array([cost.pose_cost(p) for p in poses])
            if not np.isfinite(scores["map"]).all():  # goal not registered: the image cost, as in planning
                scores["map"] = scores["latent"]
            for name, v in scores.items():
                order = np.argsort(v)
                per[name]["spearman"].append(float(spearmanr(v, err).correlation))
                per[name]["top10_error"].append(float(err[order[:10]].mean()))
                per[name]["success_in_top1"].append(float(ok[order[0]]))
    finally:
        env.close()
    rows = {n: {k: float(np.mean(v)) for k, v in d.items()} for n, d in per.items()}
    print(f"{'cost':18s} spearman  top10 error  cheapest view a success   (random views: error {np.mean(random_error):.2f})")
    for n, r in sorted(rows.items(), key=lambda kv: -kv[1]["spearman"]):
        print(f"{n:18s} {r['spearman']:8.3f}  {r['top10_error']:11.2f}  {100 * r['success_in_top1']:6.0f} %")
    mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    goal = {"goal_found": mean(found), "register_s": mean(register_s), "rebuild_s": mean(rebuild_s)}
    print(f"map: goal found in {100 * goal['goal_found']:.0f} % of tasks; registration {goal['register_s']:.2f} s, "
          f"field rebuild {goal['rebuild_s']:.2f} s (means)")
    write_results(args.out, {"data": args.data, "split": args.split, "tasks": len(tasks), "views": args.views,
                             "radius_m": args.radius, "random_error": float(np.mean(random_error)), "costs": rows,
                             "map": goal})


if __name__ == "__main__":
    main()
