"""Persistent rollout speed (pewm.rollout, Algorithm 1): does a chunk cost the same at step 500 as at step 10?

One rollout of ``--steps`` actions (default 500) from a real simulator frame, along a collision-free
walk through a procedural house (mostly forward, with turns where the walk would hit a wall), with
the map fused after every chunk. The map keeps growing, but the model reads at most
``max_memory_tokens`` tokens (those nearest to the camera, §3.3), so the generation cost per chunk
should not grow. Reported: the time of the chunk containing step ~10 and of the chunk containing
the last step (~500), the median over a window of 3 chunks at each end (less sensitive to a busy
CPU), their ratios, split into generation (``WorldModel.generate``) and memory (read + fuse), and the
map's size along the way.

    python benchmarks/rollout_throughput.py [--model DIR | --preset tiny --reader voxel-xattn] [--steps 500]
        [--threads N] [--compare-general-path] [--out benchmarks/results/rollout_throughput.json]

Target: late/early chunk time ratio <= 1.2 (memory tokens are bounded).

Threads: ``--threads``, else ``$PEWM_THREADS``, else 1 (:mod:`pewm.model.threads`). With
``--compare-general-path`` the same rollout (same noise) also runs with the pure-efficiency
shortcuts off (:func:`pewm.model.layers.set_fast_paths`), first, in the same process: both
frames/s, their ratio and whether the frames are identical are reported (#14 target: >= 2x the
general path's frames/s, outputs unchanged).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from _results import write_results

import numpy as np
import torch

from pewm.model import READERS, SamplingConfig, WorldModel, from_preset
from pewm.model.layers import set_fast_paths
from pewm.model.threads import set_threads
from pewm.rollout import rollout


def walk(resolution: int, steps: int, seed: int) -> tuple[dict, np.ndarray, object]:
    """Start frame, ``steps`` actions of a collision-free walk (forward runs, turns at walls and at
    random), and the camera intrinsics, from one simulated house."""
    from pewm.sim import EmbodiedEnv, SimConfig

    env = EmbodiedEnv(SimConfig(resolution=resolution, max_steps=max(steps, 1)))
    try:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        actions: list[int] = []
        turn, turning = 1, 0
        while len(actions) < steps:
            if turning > 0:
                a = turn
                turning -= 1
            elif rng.random() < 0.1:  # look around now and then
                turn, turning = int(rng.choice([1, 2])), int(rng.integers(1, 6))
                continue
            else:
                a = 0
            _, _, _, _, info = env.step(a)
            if info["collided"]:  # blocked: turn away instead (the blocked move is not recorded)
                turn, turning = int(rng.choice([1, 2])), int(rng.integers(3, 8))
                continue
            actions.append(a)
        return obs, np.asarray(actions, dtype=np.int64), env.intrinsics
    finally:
        env.close()


def window_median(values: list[float], lo: int, hi: int) -> float:
    return statistics.median(values[max(lo, 0) : min(hi, len(values))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: a randomly initialised --preset)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--reader", default=None, choices=sorted(READERS),
                    help="memory reader (default voxel-xattn, or the checkpoint's)")
    ap.add_argument("--steps", type=int, default=500, help="actions in the rollout")
    ap.add_argument("--ddim-steps", type=int, default=None, help="sampling steps per chunk (default: the model's)")
    ap.add_argument("--threads", default=None,
                    help="torch threads: a number or 'auto' (default: $PEWM_THREADS, else 1; pewm.model.threads)")
    ap.add_argument("--compare-general-path", action="store_true",
                    help="also run the rollout with the fast paths off (first) and compare speed and frames")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/rollout_throughput.json")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    try:
        set_threads(args.threads)
    except ValueError as e:
        ap.error(f"--threads: {e}")

    if args.model:
        model = WorldModel.from_pretrained(args.model, reader=args.reader)
        source = args.model
    else:
        torch.manual_seed(args.seed)
        model = WorldModel(from_preset(args.preset, reader=args.reader or "voxel-xattn"))
        source = f"random {args.preset}"
    model.eval()
    cfg = model.config
    if cfg.image_height != cfg.image_width:
        raise SystemExit(f"the simulator renders square frames; the model is {cfg.image_height}x{cfg.image_width}")
    H = cfg.frames

    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "loadavg_at_start": os.getloadavg(),
    }
    print(f"torch {env['torch']}, {env['threads']} threads, load {env['loadavg_at_start']}")
    print(f"model: {source}, reader {cfg.reader}, {cfg.image_height}x{cfg.image_width}, H={H}, "
          f"max_memory_tokens={cfg.max_memory_tokens}, DDIM steps {args.ddim_steps or cfg.diffusion.sampling_steps}")

    obs, actions, K = walk(cfg.image_height, args.steps, args.seed)
    counts = np.bincount(actions, minlength=3)
    print(f"walk: {len(actions)} actions (forward {counts[0]}, left {counts[1]}, right {counts[2]})")

    gen = torch.Generator().manual_seed(args.seed)
    sampling = SamplingConfig(steps=args.ddim_steps)
    # warm-up: one chunk (scheduler construction, first-call allocations) outside the measurement
    rollout(model, obs["rgb"], obs["depth"], obs["pose"], K, actions[:H], sampling=sampling, generator=gen)
    general = None
    if args.compare_general_path:
        state = gen.get_state()
        set_fast_paths(model, False)
        t0 = time.perf_counter()
        g = rollout(model, obs["rgb"], obs["depth"], obs["pose"], K, actions, sampling=sampling, generator=gen,
                    progress=True)
        general = (g, time.perf_counter() - t0)
        set_fast_paths(model, True)
        gen.set_state(state)  # the same noise again
    t0 = time.perf_counter()
    r = rollout(model, obs["rgb"], obs["depth"], obs["pose"], K, actions, sampling=sampling, generator=gen,
                progress=True)
    total = time.perf_counter() - t0
    comparison = None
    if general is not None:
        g, g_total = general
        comparison = {
            "general_total_seconds": g_total,
            "general_frames_per_second": len(actions) / g_total,
            "general_generate_seconds": g.generate_seconds,
            "speedup": g_total / total,
            "rgb_identical": bool(torch.equal(g.rgb, r.rgb)),
            "depth_identical": bool(torch.equal(g.depth, r.depth)),
            "rgb_max_abs_diff": int((g.rgb.int() - r.rgb.int()).abs().max()),
            "depth_max_abs_diff": float((g.depth - r.depth).abs().max()),
        }

    T = len(actions)
    c_early = min((10 - 1) // H, r.num_chunks - 1)  # chunk holding frame 10 (made by action 9)
    c_late = (T - 1) // H  # chunk holding the last frame
    sizes = [s[0] for s in r.memory_sizes]
    tokens = [min(s, cfg.max_memory_tokens) for s in sizes]
    parts = {"chunk": r.chunk_seconds, "generate": r.generate_seconds, "memory": r.memory_seconds}
    at = {}
    for name, vals in parts.items():
        e1, l1 = vals[c_early], vals[c_late]
        ew, lw = window_median(vals, c_early, c_early + 3), window_median(vals, c_late - 2, c_late + 1)
        at[name] = {"early_s": e1, "late_s": l1, "ratio": l1 / e1,
                    "early_window_median_s": ew, "late_window_median_s": lw, "window_ratio": lw / ew}

    print(f"\nrollout of {T} actions in {r.num_chunks} chunks: {total:.1f} s ({T / total:.2f} frames/s)")
    if comparison is not None:
        c = comparison
        print(f"general path (fast paths off): {c['general_total_seconds']:.1f} s "
              f"({c['general_frames_per_second']:.2f} frames/s); speed-up {c['speedup']:.2f}x; frames identical: "
              f"rgb {c['rgb_identical']} (max diff {c['rgb_max_abs_diff']}), depth {c['depth_identical']} "
              f"(max diff {c['depth_max_abs_diff']:.3g} m)")
    print(f"{'per chunk':<12}{'step ~' + str(min(10, T)) + ' (s)':>16}{'step ' + str(T) + ' (s)':>16}"
          f"{'ratio':>8}{'window ratio':>14}")
    for name, a in at.items():
        print(f"{name:<12}{a['early_s']:>16.3f}{a['late_s']:>16.3f}{a['ratio']:>8.2f}{a['window_ratio']:>14.2f}")
    print(f"map voxels: after start {r.start_memory_sizes[0]}, chunk {c_early} {sizes[c_early]}, "
          f"chunk {c_late} {sizes[c_late]}; tokens read: {tokens[c_early]} -> {tokens[c_late]} "
          f"(max {cfg.max_memory_tokens})")
    ok = at["chunk"]["window_ratio"] <= 1.2
    print(f"target late/early chunk time <= 1.2 (window medians): {'met' if ok else 'NOT met'}")

    write_results(args.out, {
        "env": env,
        "model": source,
        "reader": cfg.reader,
        "resolution": [cfg.image_height, cfg.image_width],
        "frames_per_chunk": H,
        "max_memory_tokens": cfg.max_memory_tokens,
        "ddim_steps": args.ddim_steps or cfg.diffusion.sampling_steps,
        "actions": int(T),
        "action_counts": {"forward": int(counts[0]), "left": int(counts[1]), "right": int(counts[2])},
        "chunks": r.num_chunks,
        "total_seconds": total,
        "frames_per_second": T / total,
        "general_path": comparison,
        "early_chunk": c_early,
        "late_chunk": c_late,
        "timing": at,
        "chunk_seconds": r.chunk_seconds,
        "generate_seconds": r.generate_seconds,
        "memory_seconds": r.memory_seconds,
        "memory_voxels_start": r.start_memory_sizes[0],
        "memory_voxels": sizes,
        "memory_tokens_read": tokens,
        "target": {"max_ratio": 1.2, "met": ok},
        "loadavg_at_end": os.getloadavg(),
    })


if __name__ == "__main__":
    main()
