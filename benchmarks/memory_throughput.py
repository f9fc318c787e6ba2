"""Throughput and size of the persistent 3D memory (pewm.memory) on one long simulator trajectory.

Measures: points integrated per second (feature grid, fine surface grid, both), render time per
64x64 and 128x128 frame, memory-token time, and map bytes after 24 (the look-around), 50, 200 and
500 steps of one trajectory in one house (look around first: 24 turns of 15 degrees; then a scripted
walk that stays within 2 m of the start; the benchmark checks and records that every pose stays in the
start room, the only room the look-around sees), plus the same ratio for room-restricted planned
trajectories (``pewm.sim.trajectories.plan_actions`` on the start room's free space) in 3 houses,
where the new surface voxels lie (start room vs rooms only glimpsed through doors), and the ratio
for a first full look-around of the whole house (``plan_house_tour``: a 360-degree turn in every
room) followed by 500 steps of shortest paths between random goals, which can only pass through
rooms the tour has seen.
Integration is timed ``--reps`` times (median reported, every run kept in the JSON).

    python benchmarks/memory_throughput.py [--steps 500] [--out benchmarks/results/memory_throughput.json]

Targets (2-core CPU): >= 5 M points/s integrated, <= 5 ms per 64x64 render, map bytes after 500
steps <= 2x the bytes after the look-around.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from _results import write_results

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


def collect_in_room(steps: int, seed: int, kind: str = "loop", resolution: int = 64):
    """Look around (24 views), then ``plan_actions(kind)`` on the free space of the start room only."""
    from pewm.sim import EmbodiedEnv, SimConfig
    from pewm.sim.freespace import FreeSpaceGrid
    from pewm.sim.trajectories import TrajectoryConfig, plan_actions

    env = EmbodiedEnv(SimConfig(resolution=resolution, max_steps=steps + 10))
    obs, _ = env.reset(seed=seed)
    fs, house = env.free_space, env.house
    room = house.room_at(env.state.x, env.state.y)
    ii, jj = np.indices(fs.free.shape)
    x, y = fs.cell_to_world(ii, jj)
    in_room = np.vectorize(lambda a, b: house.room_at(a, b) == room)(x, y)
    room_fs = FreeSpaceGrid(fs.free & in_room, fs.origin, fs.resolution)
    cfg = TrajectoryConfig(look_around_prob=0.0, min_goal_distance_m=1.0)
    actions = [1] * 23 + plan_actions(room_fs, env.state, kind, steps - 24, np.random.default_rng(seed), cfg=cfg)
    rgb, depth, poses, rooms = [obs["rgb"]], [obs["depth"]], [obs["pose"]], {room}
    for a in actions:
        obs, _, _, _, info = env.step(a)
        rgb.append(obs["rgb"])
        depth.append(obs["depth"])
        poses.append(obs["pose"])
        rooms.add(info["room"])
    K = env.intrinsics.matrix
    env.close()
    return np.stack(rgb), np.stack(depth), np.stack(poses), K, room, sorted(r for r in rooms if r is not None)


def collect_house_tour(steps: int, seed: int, resolution: int = 64):
    """``plan_house_tour`` (a look-around in every reachable room), then ``steps`` actions of
    ``plan_actions("shortest")`` over the whole house. Returns frames, the tour length (frames) and
    the rooms toured / visited by the walk."""
    from pewm.sim import EmbodiedEnv, SimConfig
    from pewm.sim.trajectories import TrajectoryConfig, plan_actions, plan_house_tour

    env = EmbodiedEnv(SimConfig(resolution=resolution, max_steps=10_000))
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    tour, toured = plan_house_tour(env.free_space, env.house, env.state, rng)
    rgb, depth, poses = [obs["rgb"]], [obs["depth"]], [obs["pose"]]
    walk_rooms: set = set()

    def run(actions, rooms=None):
        for a in actions:
            o, _, _, _, info = env.step(a)
            rgb.append(o["rgb"])
            depth.append(o["depth"])
            poses.append(o["pose"])
            if rooms is not None and info["room"] is not None:
                rooms.add(info["room"])

    run(tour)
    cfg = TrajectoryConfig(look_around_prob=0.0)
    run(plan_actions(env.free_space, env.state, "shortest", steps, rng, cfg=cfg), walk_rooms)
    K = env.intrinsics.matrix
    n_rooms = len(env.house.rooms)
    env.close()
    return (np.stack(rgb), np.stack(depth), np.stack(poses), K, len(tour) + 1,
            {"rooms": n_rooms, "toured": sorted(toured), "walk_visited": sorted(walk_rooms)})


def size_ratio(rgb, depth, poses, K, batch: int, look: int = 24) -> tuple[float, PersistentMap, int]:
    pm = PersistentMap(extractor=make_extractor("rgb"))
    pm.integrate(rgb[:look], depth[:look], K, poses[:look])
    b0, n0 = pm.nbytes, len(pm.surface)
    for i in range(look, len(poses), batch):
        pm.integrate(rgb[i : i + batch], depth[i : i + batch], K, poses[i : i + batch])
    return pm.nbytes / b0, pm, n0


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
    ap.add_argument("--reps", type=int, default=3, help="timed integration runs (median reported)")
    ap.add_argument("--size-seeds", type=int, nargs="*", default=[0, 1, 2], help="houses for the room-restricted size runs")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_throughput.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    rgb, depth, poses, K = collect(args.steps, args.seed)
    T = len(poses)
    print(f"simulated {T} frames in {time.perf_counter() - t0:.1f} s")
    npts = int(((depth > 0) & np.isfinite(depth) & (depth <= 10.0)).sum())

    # ---- integration throughput (whole trajectory, batches of args.batch frames, median of --reps runs)
    def run(make, feats=None):
        m = make()
        t = time.perf_counter()
        for i in range(0, T, args.batch):
            f = None if feats is None else feats[i : i + args.batch]
            m.integrate(rgb[i : i + args.batch], depth[i : i + args.batch], K, poses[i : i + args.batch], features=f)
        return m, time.perf_counter() - t

    def timed(make, feats=None):
        run(make, feats)  # warm-up
        ts = [run(make, feats)[1] for _ in range(args.reps)]
        return float(np.median(ts)), ts

    fm = lambda: VoxelMap(VoxelMapConfig.paper(3))  # noqa: E731
    rgbf = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    t_feat3, _ = timed(fm, rgbf)
    t_surf, _ = timed(lambda: VoxelMap(VoxelMapConfig.surface(0.05)))
    t_both, t_both_runs = timed(lambda: PersistentMap(extractor=make_extractor("rgb")))
    pm, _ = run(lambda: PersistentMap(extractor=make_extractor("rgb")))
    n384 = min(T, 64)
    feats384 = torch.randn(n384, 384, depth.shape[1], depth.shape[2])
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
    r64 = float(np.median([timeit(lambda: [pm.render(K, p, 64, 64) for p in test_poses], 3) for _ in range(3)])) / len(test_poses)
    r128 = float(np.median([timeit(lambda: [pm.render(K128, p, 128, 128) for p in test_poses], 3) for _ in range(3)])) / len(test_poses)
    tok = timeit(lambda: [pm.tokens(max_tokens=1024, around=p) for p in test_poses], 3) / len(test_poses)
    tok384 = timeit(lambda: [m384.tokens(max_tokens=1024, around=p) for p in test_poses], 3) / len(test_poses)

    look = sizes.get(24, {}).get("bytes")
    last = sizes[marks[-1]]["bytes"]
    ratio = (last / look) if look else None

    # ---- does the benchmark trajectory stay in already-seen rooms, and where do new voxels lie?
    from pewm.sim import EmbodiedEnv, SimConfig

    env = EmbodiedEnv(SimConfig(resolution=64))
    env.reset(seed=args.seed)
    house = env.house
    env.close()
    rooms_visited = sorted({house.room_at(float(p[0, 3]), float(p[1, 3])) for p in poses} - {None})
    look_map = VoxelMap(VoxelMapConfig.surface(0.05))
    look_map.integrate(rgb[:24], depth[:24], K, poses[:24])
    pts_new = pm2.surface.get("point")[len(look_map):].numpy()  # rows are append-only: new voxels come last
    in_rooms = np.array([house.room_at(float(x), float(y)) in rooms_visited for x, y in pts_new[:, :2]], dtype=bool)
    new_voxels = {
        "total": int(len(pts_new)),
        "in_visited_rooms": int(in_rooms.sum()),
        "in_rooms_only_seen_through_doors": int((~in_rooms).sum()),
        "floor_or_ceiling": int(((pts_new[:, 2] < 0.05) | (pts_new[:, 2] > 2.4)).sum()),
    }

    # ---- room-restricted planned trajectories (plan_actions on the start room's free space)
    room_runs = []
    for seed in args.size_seeds:
        r_rgb, r_depth, r_poses, r_K, room, visited = collect_in_room(min(args.steps, 500), seed)
        rr, rpm, _ = size_ratio(r_rgb, r_depth, r_poses, r_K, args.batch)
        room_runs.append({"seed": seed, "start_room": room, "rooms_visited": visited, "ratio": rr, "bytes": rpm.nbytes})

    # ---- first full look-around of the house (every room), then a walk through seen rooms
    tour_runs = []
    for seed in args.size_seeds:
        t_rgb, t_depth, t_poses, t_K, n_tour, rooms = collect_house_tour(min(args.steps, 500), seed)
        tr, tpm, _ = size_ratio(t_rgb, t_depth, t_poses, t_K, args.batch, look=n_tour)
        tour_runs.append({"seed": seed, "tour_frames": n_tour, "walk_steps": len(t_poses) - n_tour, **rooms,
                          "walk_stays_in_toured_rooms": set(rooms["walk_visited"]) <= set(rooms["toured"]),
                          "ratio": tr, "bytes": tpm.nbytes})

    pps = npts / t_both
    res = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "numpy": np.__version__, "loadavg_1m": os.getloadavg()[0]},
        "frames": T,
        "resolution": int(depth.shape[1]),
        "batch": args.batch,
        "points_per_s": {
            "feature_grid_rgb3": npts / t_feat3,
            "surface_grid_5cm": npts / t_surf,
            "persistent_map_both": pps,
            "feature_grid_384d": npts384 / t_384,
        },
        "persistent_map_both_runs_s": t_both_runs,
        "render_ms": {"64x64": r64 * 1e3, "128x128": r128 * 1e3},
        "tokens_ms": {"1024_of_rgb3_map": tok * 1e3, "1024_of_384d_map": tok384 * 1e3},
        "sizes": sizes,
        "size_ratio_final_over_lookaround": ratio,
        "benchmark_trajectory": {"rooms_visited": rooms_visited, "new_surface_voxels_after_lookaround": new_voxels},
        "room_restricted_plan_actions_loop": room_runs,
        "house_tour_then_shortest_walk": tour_runs,
        "targets": {
            "points_per_s>=5M (persistent_map_both)": {"target": 5e6, "measured": pps, "met": pps >= 5e6},
            "render_64<=5ms": {"target": 5.0, "measured": r64 * 1e3, "met": r64 * 1e3 <= 5.0},
            "size_ratio<=2 (benchmark trajectory)": {"target": 2.0, "measured": ratio, "met": ratio is not None and ratio <= 2.0},
            "size_ratio<=2 (room-restricted plan_actions, every house)": {
                "target": 2.0, "measured": [r["ratio"] for r in room_runs], "met": all(r["ratio"] <= 2.0 for r in room_runs),
            },
            "size_ratio<=2 (house tour, then 500 steps through toured rooms, every house)": {
                "target": 2.0, "measured": [r["ratio"] for r in tour_runs],
                "met": all(r["ratio"] <= 2.0 and r["walk_stays_in_toured_rooms"] for r in tour_runs),
            },
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
    print(f"{'size ratio final / look-around':44s} {ratio:8.2f}  (rooms visited: {rooms_visited})")
    print(f"{'new surface voxels after look-around':44s} {new_voxels}")
    for r in room_runs:
        print(f"{'size ratio, in-room plan_actions seed ' + str(r['seed']):44s} {r['ratio']:8.2f}  (rooms visited: {r['rooms_visited']})")
    for r in tour_runs:
        print(f"{'size ratio, house tour + walk seed ' + str(r['seed']):44s} {r['ratio']:8.2f}  "
              f"(tour {r['tour_frames']} frames over rooms {r['toured']} of {r['rooms']}; walk visited {r['walk_visited']})")
    print(f"\n{'target':58s} {'target':>9s} {'measured':>16s}  status")
    for k, v in res["targets"].items():
        meas = v["measured"]
        ms = ", ".join(f"{x:.2f}" for x in meas) if isinstance(meas, list) else (f"{meas / 1e6:.2f} M" if v["target"] >= 1e6 else f"{meas:.2f}")
        tg = f"{v['target'] / 1e6:.0f} M" if v["target"] >= 1e6 else f"{v['target']:g}"
        print(f"{k:58s} {tg:>9s} {ms:>16s}  {'met' if v['met'] else 'NOT met'}")
    write_results(args.out, res)


if __name__ == "__main__":
    main()
