"""Planning speed (pewm.planning, arXiv 2505.05495 §4.2 Table 2 and §5.1 Fig. 6a): seconds per decision.

A world model imagines candidates from a real simulator frame with a memory built from an
exploration prefix (a collision-free walk of ``--prefix`` steps through a procedural house), toward
a goal image (the prefix's first frame), with the ``latent`` goal cost. Measured, at the model's
default DDIM steps and at each of ``--fewer-steps``:

* one ranking decision (:func:`pewm.planning.planners.rank`) for N = 1, 4 and 16 proposals of one
  8-frame chunk (all N imagined in one batched generation);
* one CEM iteration with N = 60 (:func:`pewm.planning.planners.cem`, ``iterations=1``), in one
  generation of 60 and split into generations of ``--cem-max-batch`` (``ModelWorld.max_batch``:
  on a CPU smaller batches can be faster per candidate);

with the time split into memory reads (rendering the map into every candidate's 8 views) and
generation, and the seconds per candidate (how time scales with N).

    python benchmarks/planning_throughput.py [--model DIR] [--fewer-steps 4] [--threads N]
        [--out benchmarks/results/planning_throughput.json]

Targets (issue #13, this CPU): rank N = 16 <= 15 s per decision; one CEM iteration N = 60 <= 60 s.
Threads: ``--threads``, else ``$PEWM_THREADS``, else 1 (:mod:`pewm.model.threads`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from _results import write_results

import numpy as np
import torch

from pewm.assets import load_model, resolve_model_path
from pewm.model import SamplingConfig
from pewm.model.threads import set_threads
from pewm.planning.costs import LatentCost
from pewm.planning.planners import CEMConfig, cem, rank
from pewm.planning.proposals import uniform_proposals
from pewm.planning.worlds import ModelWorld

TARGETS = {"rank_16_seconds": 15.0, "cem_iteration_60_seconds": 60.0}


def exploration(resolution: int, steps: int, seed: int):
    """Frames, poses and intrinsics of a collision-free walk of ``steps`` actions (forward runs,
    turns at walls and now and then), ``steps + 1`` frames."""
    from pewm.sim import EmbodiedEnv, SimConfig

    env = EmbodiedEnv(SimConfig(resolution=resolution, max_steps=steps + 1))
    try:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        frames = [obs]
        turn, turning = 1, 0
        while len(frames) <= steps:
            if turning > 0:
                a, turning = turn, turning - 1
            elif rng.random() < 0.1:
                turn, turning = int(rng.choice([1, 2])), int(rng.integers(1, 6))
                continue
            else:
                a = 0
            obs, _, _, _, info = env.step(a)
            if info["collided"]:
                turn, turning = int(rng.choice([1, 2])), int(rng.integers(3, 8))
                continue
            frames.append(obs)
        stack = {k: np.stack([f[k] for f in frames]) for k in ("rgb", "depth", "pose")}
        return stack, env.intrinsics
    finally:
        env.close()


def measure(world: ModelWorld, cost, goal, method: str, n: int, horizon: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if method == "rank":
        d = rank(world, cost, *goal, uniform_proposals(rng, n, horizon))
    else:
        d = cem(world, cost, *goal, CEMConfig(n=n, horizon=horizon, iterations=1), rng)
    seconds = time.perf_counter() - t0
    return {"method": method, "n": n, "seconds": seconds, "seconds_per_candidate": seconds / n,
            "read_seconds": d.imagined.read_seconds, "generate_seconds": d.imagined.generate_seconds,
            "imagined_count": d.imagined_count}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--fewer-steps", default="4", help="comma-separated DDIM step counts besides the model's default")
    ap.add_argument("--rank-n", default="1,4,16", help="comma-separated numbers of ranked proposals")
    ap.add_argument("--cem-n", type=int, default=60, help="candidates of the CEM iteration")
    ap.add_argument("--cem-max-batch", type=int, default=16,
                    help="also time the CEM iteration in generations of at most this many candidates (0: skip)")
    ap.add_argument("--prefix", type=int, default=60, help="exploration steps that fill the memory")
    ap.add_argument("--threads", default=None,
                    help="torch threads: a number or 'auto' (default: $PEWM_THREADS, else 1; pewm.model.threads)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/planning_throughput.json")
    args = ap.parse_args()
    try:
        set_threads(args.threads)
        fewer = [int(s) for s in args.fewer_steps.split(",") if s.strip()]
        rank_ns = [int(s) for s in args.rank_n.split(",") if s.strip()]
    except ValueError as e:
        ap.error(str(e))

    model = load_model(args.model)
    cfg = model.config
    H = cfg.frames
    default_steps = cfg.diffusion.sampling_steps
    env_info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    print(f"torch {env_info['torch']}, {env_info['threads']} threads, load {env_info['loadavg_at_start']}")
    print(f"model: {resolve_model_path(args.model)}, reader {cfg.reader}, {cfg.image_height}x{cfg.image_width}, H={H}, "
          f"default DDIM steps {default_steps}")

    walk, K = exploration(cfg.image_height, args.prefix, args.seed)
    goal = (walk["rgb"][0], walk["depth"][0])
    cost = LatentCost(model)
    rows = []
    for steps in [default_steps] + [s for s in fewer if s != default_steps]:
        world = ModelWorld(model, K, SamplingConfig(steps=steps), seed=args.seed)
        world.reset(walk["rgb"][:-1], walk["depth"][:-1], walk["pose"][:-1],
                    walk["rgb"][-1], walk["depth"][-1], walk["pose"][-1])
        world.imagine(np.zeros((1, H), np.int64))  # warm-up (first-call allocations)
        runs = [("rank", n, None) for n in rank_ns] + [("cem", args.cem_n, None)]
        if args.cem_max_batch:
            runs.append(("cem", args.cem_n, args.cem_max_batch))
        for method, n, max_batch in runs:
            world.max_batch = max_batch
            calls = world.generate_calls
            r = measure(world, cost, goal, method, n, H, args.seed)
            r.update(ddim_steps=steps, max_batch=max_batch, generate_calls=world.generate_calls - calls,
                     memory_voxels=len(world.memory))
            rows.append(r)
            print(f"  steps {steps:>2}  {method:<4} N={n:<3} {r['seconds']:7.2f} s  "
                  f"({r['seconds_per_candidate']:.3f} s/candidate, {r['generate_calls']} generation(s))", flush=True)

    print(f"\n{'DDIM steps':>10} {'method':>7} {'N':>4} {'batch':>6} {'s/decision':>11} {'s/candidate':>12} "
          f"{'memory read s':>14} {'generate s':>11}")
    for r in rows:
        print(f"{r['ddim_steps']:>10} {r['method']:>7} {r['n']:>4} {r['max_batch'] or r['n']:>6} {r['seconds']:>11.2f} "
              f"{r['seconds_per_candidate']:>12.3f} {r['read_seconds']:>14.2f} {r['generate_seconds']:>11.2f}")
    at_default = {(r["method"], r["n"]): r["seconds"] for r in rows
                  if r["ddim_steps"] == default_steps and r["max_batch"] is None}
    checks = {}
    if ("rank", 16) in at_default:
        checks["rank_16_seconds"] = at_default[("rank", 16)]
    if ("cem", 60) in at_default:
        checks["cem_iteration_60_seconds"] = at_default[("cem", 60)]
    for name, v in checks.items():
        print(f"target {name} <= {TARGETS[name]:.0f} s at {default_steps} DDIM steps: {v:.1f} s, "
              f"{'met' if v <= TARGETS[name] else 'NOT met'}")

    write_results(args.out, {
        "env": env_info,
        "model": str(resolve_model_path(args.model)),
        "reader": cfg.reader,
        "resolution": [cfg.image_height, cfg.image_width],
        "frames_per_chunk": H,
        "default_ddim_steps": default_steps,
        "prefix_steps": args.prefix,
        "cost": "latent",
        "rows": rows,
        "targets": TARGETS,
        "at_default_steps": checks,
        "targets_met": {k: v <= TARGETS[k] for k, v in checks.items()},
        "loadavg_at_end": os.getloadavg(),
    })


if __name__ == "__main__":
    main()
