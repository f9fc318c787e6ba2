"""Throughput and size of the persistent 3D memory (pewm.memory) on one long simulator trajectory.

Measures: points integrated per second (feature grid, fine surface grid, both), render time per
64x64 and 128x128 frame, memory-token time, and map bytes after 24 (the look-around), 50, 200 and
500 steps of one trajectory in one house (look around first: 24 turns of 15 degrees; then a scripted
walk that stays within 2 m of the start, i.e. in already-seen space).

    python benchmarks/memory_throughput.py [--steps 500] [--out benchmarks/results/memory_throughput.json]

Targets (2-core CPU): >= 5 M points/s integrated, <= 5 ms per 64x64 render, map bytes after 500
steps <= 2x the bytes after the look-around.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pewm.memory import PersistentMap, VoxelMap, VoxelMapConfig, make_extractor


def collect(steps: int, seed: int = 0, resolution: int = 64):
    from pewm.sim import EmbodiedEnv, SimConfig

    env = EmbodiedEnv(SimConfig(resolution=resolution, max_steps=steps + 10))
    obs, _ = env.reset(seed=seed)
    start = np.asarray(obs["pose"])[:2, 3].copy()
    rng = np.random.default_rng(seed)
    rgb, depth, poses = [obs["rgb"]], [obs["depth"]], [obs["pose"]]
    pending: list[int] = [1] * 24  # look around
    collided = False
    for _ in range(steps - 1):
        if not pending:
            pos = np.asarray(poses[-1])[:3, 3]
            fwd = np.asarray(poses[-1])[:2, 2]
            nxt = pos[:2] + 0.25 * fwd / max(np.linalg.norm(fwd), 1e-9)
            if collided or np.linalg.norm(nxt - start) > 2.0:
                pending = [int(rng.integers(1, 3))] * int(rng.integers(3, 10))
            else:
                pending = [0]
        obs, _, term, trunc, info = env.step(pending.pop(0))
        collided = bool(info.get("collided", False))
        rgb.append(obs["rgb"])
        depth.append(obs["depth"])
        poses.append(obs["pose"])
        if term or trunc:
            break
    K = env.intrinsics.matrix
    env.close()
    return np.stack(rgb), np.stack(depth), np.stack(poses), K


def timeit(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=8, help="frames per integrate() call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_throughput.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    rgb, depth, poses, K = collect(args.steps, args.seed)
    T = len(poses)
    print(f"simulated {T} frames in {time.perf_counter() - t0:.1f} s")
    npts = int(((depth > 0) & np.isfinite(depth) & (depth <= 10.0)).sum())

    # ---- integration throughput (whole trajectory, batches of args.batch frames)
    def run(make, feats=None):
        m = make()
        t = time.perf_counter()
        for i in range(0, T, args.batch):
            f = None if feats is None else feats[i : i + args.batch]
            m.integrate(rgb[i : i + args.batch], depth[i : i + args.batch], K, poses[i : i + args.batch], features=f)
        return m, time.perf_counter() - t

    _, t_feat3 = run(lambda: PersistentMap(extractor=make_extractor("rgb")).features)  # warm-up path
    fm = lambda: VoxelMap(VoxelMapConfig.paper(3))  # noqa: E731
    rgbf = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    _, t_feat3 = run(fm, rgbf)
    _, t_surf = run(lambda: VoxelMap(VoxelMapConfig.surface(0.05)))
    pm_holder = {}

    def both():
        pm_holder["pm"] = PersistentMap(extractor=make_extractor("rgb"))
        return pm_holder["pm"]

    pm, t_both = run(both)
    feats384 = torch.randn(min(T, 64), 384, depth.shape[1], depth.shape[2])
    n384 = min(T, 64)
    m384 = VoxelMap(VoxelMapConfig.paper(384))
    t = time.perf_counter()
    for i in range(0, n384, args.batch):
        m384.integrate(rgb[i : i + args.batch], depth[i : i + args.batch], K, poses[i : i + args.batch], features=feats384[i : i + args.batch])
    t_384 = time.perf_counter() - t
    npts384 = int(((depth[:n384] > 0) & (depth[:n384] <= 10.0)).sum())

    # ---- sizes along the trajectory
    sizes = {}
    pm2 = PersistentMap(extractor=make_extractor("rgb"))
    marks = [m for m in (24, 50, 200, 500) if m <= T]
    done = 0
    for mark in marks:
        for i in range(done, mark, args.batch):
            j = min(i + args.batch, mark)
            pm2.integrate(rgb[i:j], depth[i:j], K, poses[i:j])
        done = mark
        sizes[mark] = {
            "bytes": pm2.nbytes,
            "feature_voxels": len(pm2.features),
            "surface_voxels": len(pm2.surface),
            "feature_bytes": pm2.features.nbytes,
            "surface_bytes": pm2.surface.nbytes,
        }

    # ---- render and tokens on the full map
    K128 = K.copy()
    K128[:2] *= 2
    K128[0, 2] = K128[1, 2] = 63.5
    test_poses = poses[:: max(1, T // 20)]
    r64 = timeit(lambda: [pm.render(K, p, 64, 64) for p in test_poses], 3) / len(test_poses)
    r128 = timeit(lambda: [pm.render(K128, p, 128, 128) for p in test_poses], 3) / len(test_poses)
    tok = timeit(lambda: [pm.tokens(max_tokens=1024, around=p) for p in test_poses], 3) / len(test_poses)
    tok384 = timeit(lambda: [m384.tokens(max_tokens=1024, around=p) for p in test_poses], 3) / len(test_poses)

    look = sizes.get(24, {}).get("bytes")
    last = sizes[marks[-1]]["bytes"]
    res = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "frames": T,
        "resolution": int(depth.shape[1]),
        "batch": args.batch,
        "points_per_s": {
            "feature_grid_rgb3": npts / t_feat3,
            "surface_grid_5cm": npts / t_surf,
            "persistent_map_both": npts / t_both,
            "feature_grid_384d": npts384 / t_384,
        },
        "render_ms": {"64x64": r64 * 1e3, "128x128": r128 * 1e3},
        "tokens_ms": {"1024_of_rgb3_map": tok * 1e3, "1024_of_384d_map": tok384 * 1e3},
        "sizes": sizes,
        "size_ratio_final_over_lookaround": (last / look) if look else None,
        "targets": {
            "points_per_s>=5M (persistent_map_both)": npts / t_both >= 5e6,
            "render_64<=5ms": r64 * 1e3 <= 5.0,
            "size_ratio<=2": (last / look) <= 2.0 if look else None,
        },
    }
    print(f"\n{'metric':44s} value")
    for k, v in res["points_per_s"].items():
        print(f"{'points/s ' + k:44s} {v / 1e6:8.2f} M")
    for k, v in res["render_ms"].items():
        print(f"{'render ' + k:44s} {v:8.2f} ms")
    for k, v in res["tokens_ms"].items():
        print(f"{'tokens ' + k:44s} {v:8.2f} ms")
    for k, v in sizes.items():
        print(f"{f'map bytes after {k} steps':44s} {v['bytes'] / 1e6:8.2f} MB  "
              f"({v['feature_voxels']} feature / {v['surface_voxels']} surface voxels)")
    print(f"{'size ratio final / look-around':44s} {res['size_ratio_final_over_lookaround']:8.2f}")
    for k, v in res["targets"].items():
        print(f"target {k}: {'met' if v else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
