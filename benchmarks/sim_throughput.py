"""Simulator throughput: RGB-D frames per second and dataset-generation episodes per minute.

    python benchmarks/sim_throughput.py [--out benchmarks/results/sim_throughput.json]

Target (issue #2, 2-core CPU): >= 400 RGB-D frames/s at 64x64. Frames/s is measured along a real
trajectory (random walk of valid actions through one house, rendering RGB and depth per frame);
episodes/min runs ``pewm data generate`` logic with 1 and 2 worker processes in temporary folders.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from _results import write_results

import numpy as np


def frames_per_second(resolution: int, frames: int, seed: int = 0) -> float:
    from pewm.sim.env import EmbodiedEnv, SimConfig

    env = EmbodiedEnv(SimConfig(resolution=resolution))
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.choice(3, size=frames, p=[0.6, 0.2, 0.2])
    for a in actions[:10]:  # warm-up (shader compilation, first texture upload)
        env.step(int(a))
    t0 = time.perf_counter()
    for a in actions:
        env.step(int(a))
    dt = time.perf_counter() - t0
    env.close()
    return frames / dt


def episodes_per_minute(workers: int, houses: int, episodes_per_house: int, steps: int) -> dict:
    from pewm.sim.generate import GenerateConfig, generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig(houses=houses, episodes_per_house=episodes_per_house, steps=steps, workers=workers)
        t0 = time.perf_counter()
        res = generate_dataset(Path(tmp) / "ds", cfg)
        dt = time.perf_counter() - t0
    return {"workers": workers, "episodes": res["episodes"], "steps": steps, "seconds": dt,
            "episodes_per_minute": 60.0 * res["episodes"] / dt, "frames_per_second": res["frames_generated"] / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/sim_throughput.json")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--houses", type=int, default=12)
    ap.add_argument("--episodes-per-house", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()

    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "mujoco_gl": os.environ.get("MUJOCO_GL", "egl")}, "render": {}, "generate": []}
    for res in (64, 128):
        fps = frames_per_second(res, args.frames if res == 64 else args.frames // 2)
        results["render"][f"{res}x{res}"] = {"rgbd_frames_per_second": fps}
        print(f"render {res}x{res}: {fps:8.1f} RGB-D frames/s")
    for w in (1, 2):
        r = episodes_per_minute(w, args.houses, args.episodes_per_house, args.steps)
        results["generate"].append(r)
        print(f"generate, {w} worker(s): {r['episodes_per_minute']:6.1f} episodes/min "
              f"({r['episodes']} episodes of {r['steps']} steps in {r['seconds']:.1f} s, {r['frames_per_second']:.0f} frames/s)")
    target = results["render"]["64x64"]["rgbd_frames_per_second"] >= 400
    results["targets"] = {"rgbd_fps_64_ge_400": target}
    print(f"target >= 400 RGB-D frames/s at 64x64: {'met' if target else 'NOT met'}")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
