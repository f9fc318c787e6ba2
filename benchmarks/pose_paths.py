"""Recorded poses vs action-integrated poses (issue #16): are they the same bits, and does it matter?

1. For the first ``--episodes`` episodes of each split: ``poses_from_actions(poses[0], actions)``
   against the recorded ``poses`` (frames bitwise equal, largest difference).
2. For the Table-1 protocol (``--split test``, horizon 32, the shipped model unless ``--model``):
   the generated frames of every memory mode when the episodes are rolled out with their actions
   and when rolled out along their recorded poses (``EvalEpisode.path_actions = None``), compared
   value by value (``--modes``, ``--seeds``; skipped with ``--modes ''``).

    python benchmarks/pose_paths.py --data houses160 [--episodes 16] [--modes voxel-render,none]
        [--seeds 1] [--threads N] [--out benchmarks/results/pose_paths.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from _results import write_results

import numpy as np
import torch

from pewm.assets import load_model
from pewm.data import open_dataset
from pewm.eval.benchmark import BenchmarkConfig, load_episodes, model_for_mode, rollout_mode
from pewm.geometry import poses_from_actions


def pose_bits(data: str, episodes: int) -> dict:
    ds = open_dataset(data)
    out = {}
    for split in ("train", "val", "test"):
        equal = total = 0
        worst = 0.0
        for p in ds.episode_paths(split)[:episodes]:
            ep = ds.read(p)
            rep = poses_from_actions(ep.poses[0], ep.actions)
            same = np.all(rep == ep.poses, axis=(1, 2))
            equal, total = equal + int(same.sum()), total + len(same)
            worst = max(worst, float(np.abs(rep - ep.poses).max()))
        out[split] = {"frames_bitwise_equal": equal, "frames": total, "max_abs_diff": worst}
        print(f"{split}: {equal}/{total} frames bitwise equal, largest difference {worst:.2e}")
    return out


def rollouts(data: str, model_dir, modes, seeds: int, episodes: int) -> dict:
    cfg = BenchmarkConfig(data=data, split="test", max_episodes=episodes, horizon=32, modes=tuple(modes),
                          model=model_dir)
    main = load_model(model_dir)
    eps = load_episodes(cfg, main.config.image_height)
    along_poses = [dataclasses.replace(e, path_actions=None) for e in eps]
    out = {}
    for mode in modes:
        model = model_for_mode(mode, cfg, main)
        for s in range(seeds):
            t0 = time.perf_counter()
            a, p = rollout_mode(model, mode, eps, cfg, s), rollout_mode(model, mode, along_poses, cfg, s)
            r = {
                "rgb_values_differing": sum(int((x["rgb"] != y["rgb"]).sum()) for x, y in zip(a, p)),
                "rgb_values": sum(x["rgb"].size for x in a),
                "rgb_max_diff": max(int(np.abs(x["rgb"].astype(int) - y["rgb"].astype(int)).max())
                                    for x, y in zip(a, p)),
                "depth_values_differing": sum(int((x["depth"] != y["depth"]).sum()) for x, y in zip(a, p)),
                "depth_max_diff_m": max(float(np.abs(x["depth"] - y["depth"]).max()) for x, y in zip(a, p)),
                "seconds": time.perf_counter() - t0,
            }
            out[f"{mode}/seed{s}"] = r
            print(f"{mode} seed {s}: {r}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--modes", default="voxel-render,none")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/pose_paths.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = {"poses": pose_bits(args.data, args.episodes)}
    modes = [m for m in args.modes.split(",") if m]
    if modes:
        res["rollouts"] = rollouts(args.data, args.model, modes, args.seeds, args.episodes)
    write_results(args.out, res)


if __name__ == "__main__":
    main()
