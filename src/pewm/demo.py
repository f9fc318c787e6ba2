"""``pewm demo``: the persistent memory at work, in one command (paper Fig. 4-5 in miniature).

In a house the model has never seen (a seed stream ``pewm data generate`` never uses), the agent
takes one ground-truth start view (optionally a look-around), then *imagines* a walk: it turns
away and back twice (the paper's Fig. 4), then goes to another place and comes back (Fig. 5). The
same world model rolls the walk out twice (Algorithm 1):

* **with memory**: the start view and every generated chunk are fused into the persistent map,
  which conditions each next chunk;
* **without memory**: the same checkpoint given an empty memory (the paper's no-memory protocol).

On the way back the agent sees the start area again. With the memory, the model re-renders what it
saw (and what it imagined); without it, it invents a new room. ``demo/`` receives ``demo.mp4``
(ground truth | with memory | without memory | top-down view of the growing map),
``summary.json`` and the table printed at the end: PSNR / depth AbsRel against the ground truth on
revisit frames (most of the view observed in the start view) and on novel frames.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

DEMO_SEED_STREAM = 0xDE30  # house seeds of the demo: SeedSequence([DEMO_SEED_STREAM, seed])


@dataclass
class DemoConfig:
    """``steps``: actions of the imagined walk; ``look_around``: extra ground-truth turns (15° each)
    fused with the start view before imagining (24 = a full turn; 0 = the start view alone)."""

    out: str = "demo"
    seed: int = 0
    steps: int = 128
    look_around: int = 0
    sampling_steps: int | None = None
    model: str | None = None
    threads: int | None = None
    revisit_threshold: float = 0.5
    fuse: str = "novel"  # generated frames: "novel" (only where the map has nothing yet) or "all"
    anchor: str | None = None  # voxel-render map-anchored sampling (None: the model's default)
    render_supersample: int | None = None  # voxel-render memory renders (None: the model's memory.json)


def demo_house_seed(seed: int) -> int:
    """House seed of demo ``seed``; the dataset generator derives its seeds as
    ``SeedSequence([seed, house_index])``, so the two streams do not meet."""
    return int(np.random.SeedSequence([DEMO_SEED_STREAM, int(seed)]).generate_state(1)[0])


@dataclass
class DemoEpisode:
    """Ground truth of the demo: the look-around (memory) frames and the walk (start frame first)."""

    house_seed: int
    K: np.ndarray
    memory_rgb: np.ndarray
    memory_depth: np.ndarray
    memory_poses: np.ndarray
    rgb: np.ndarray  # (T + 1, h, w, 3)
    depth: np.ndarray
    poses: np.ndarray
    actions: np.ndarray  # (T,)
    topdown: np.ndarray  # the house from above, for reference


def turn_away_and_back(turns: int = 12) -> list[int]:
    """The paper's Fig. 4 probe: turn away ``turns`` x 15° and back, twice (right, then left)."""
    from pewm.geometry import Action

    R, L = int(Action.TURN_RIGHT), int(Action.TURN_LEFT)
    return [R] * turns + [L] * turns + [L] * turns + [R] * turns


def ground_truth(cfg: DemoConfig, resolution: int, house_seed: int | None = None) -> DemoEpisode:
    """Build the unseen house, the look-around and the walk of ``cfg.steps`` actions: turn away
    twice and back (48 actions, paper Fig. 4), then out to another place and back (Fig. 5)."""
    from pewm.geometry import Action, AgentState
    from pewm.sim import EmbodiedEnv, SimConfig, generate_house
    from pewm.sim.topdown import top_down_image
    from pewm.sim.trajectories import TrajectoryConfig, plan_actions

    hs = demo_house_seed(cfg.seed) if house_seed is None else int(house_seed)
    env = EmbodiedEnv(SimConfig(resolution=resolution))
    try:
        obs, _ = env.reset(seed=cfg.seed, options={"house": generate_house(hs)})
        start = env.state
        turn = math.radians(env.config.actions.turn_deg)
        look = [env.render_state(AgentState(start.x, start.y, start.yaw + turn * (i + 1)))
                for i in range(cfg.look_around)]
        probe = turn_away_and_back()[: cfg.steps]
        rng = np.random.default_rng([DEMO_SEED_STREAM, cfg.seed, 1])
        walk = plan_actions(env.free_space, start, "out_and_back", cfg.steps - len(probe), rng,
                            env.config.actions, TrajectoryConfig(look_around_prob=0.0)) if cfg.steps > len(probe) else []
        actions = list(probe) + list(walk)
        Action.check(np.asarray(actions))
        frames = [obs]
        for a in actions:
            frames.append(env.step(int(a))[0])
        top = top_down_image(env.house, path=[(float(f["pose"][0, 3]), float(f["pose"][1, 3])) for f in frames])
        mem = [obs] + look  # what the agent observed before imagining: the start view (+ look-around)
        return DemoEpisode(
            house_seed=hs, K=env.intrinsics.matrix.astype(np.float64),
            memory_rgb=np.stack([f["rgb"] for f in mem]), memory_depth=np.stack([f["depth"] for f in mem]),
            memory_poses=np.stack([f["pose"] for f in mem]),
            rgb=np.stack([f["rgb"] for f in frames]), depth=np.stack([f["depth"] for f in frames]),
            poses=np.stack([f["pose"] for f in frames]), actions=np.asarray(actions, dtype=np.int64),
            topdown=np.asarray(top),
        )
    finally:
        env.close()


def imagine(model, ep: DemoEpisode, use_memory: bool, cfg: DemoConfig, progress=None, task=None):
    """Roll the walk out chunk by chunk; returns rgb ``(T+1, h, w, 3)``, depth, and (with memory)
    a top-down image of the map after each chunk plus the chunk index of every frame."""
    from pewm.memory.viz import map_top_down_image
    from pewm.model.memory_input import MemoryBuilder
    from pewm.rollout import RolloutMemory, rollout

    H, T = model.config.frames, len(ep.actions)
    builder = MemoryBuilder.for_model(model)
    if cfg.render_supersample is not None:
        from dataclasses import replace

        builder.cfg = replace(builder.cfg, render_supersample=int(cfg.render_supersample))
    if use_memory:  # the observed frames (start view first) are in the map before imagining
        memory = RolloutMemory.from_frames(builder, ep.memory_rgb, ep.memory_depth, ep.memory_poses, ep.K)
    else:
        memory = RolloutMemory(builder)
    g = torch.Generator().manual_seed(cfg.seed)
    rgb = [torch.from_numpy(ep.rgb[:1])]
    depth = [torch.from_numpy(ep.depth[:1]).float()]
    cur_rgb, cur_depth, cur_pose = rgb[0], depth[0], ep.poses[:1]
    maps, chunk_of = [], [0]
    for c, i in enumerate(range(0, T, H)):
        acts = ep.actions[None, i:i + H]
        res = rollout(model, cur_rgb, cur_depth, cur_pose, ep.K, acts, memories=[memory],
                      fuse_start=False, fuse_generated=use_memory, fuse_novel_only=cfg.fuse == "novel",
                      steps=cfg.sampling_steps, generator=g,
                      anchor=cfg.anchor if model.config.reader == "voxel-render" else None)
        rgb.append(res.rgb[0, 1:])
        depth.append(res.depth[0, 1:])
        chunk_of += [c] * acts.shape[1]
        cur_rgb, cur_depth, cur_pose = res.rgb[:, -1], res.depth[:, -1], res.poses[:, -1].numpy()
        if use_memory and memory.pmap is not None:
            maps.append(map_top_down_image(memory.pmap, px_per_m=16, z_max=2.2))
        if progress is not None:
            progress.advance(task, acts.shape[1])
    return torch.cat(rgb).numpy(), torch.cat(depth).numpy(), maps, np.asarray(chunk_of)


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    err = ((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2
    mse = err.reshape(len(a), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


def _absrel(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    out = np.full(len(gt), np.nan)
    for t in range(len(gt)):
        v = np.isfinite(gt[t]) & (gt[t] > 0)
        if v.any():
            out[t] = float(np.mean(np.abs(pred[t][v] - gt[t][v]) / gt[t][v]))
    return out


def _video(path: Path, ep: DemoEpisode, with_mem, without_mem, maps, chunk_of, revisit) -> Path:
    from pewm.eval.video import fit_into, hstack_panels, label, resize_nearest, write_video

    size = 192
    frames = []
    for t in range(len(ep.rgb)):
        tag = "start" if t == 0 else f"t={t}" + (" revisit" if revisit[t] else "")
        top = maps[min(chunk_of[t], len(maps) - 1)] if maps else ep.topdown
        panels = [
            label(resize_nearest(ep.rgb[t], size), f"ground truth {tag}"),
            label(resize_nearest(with_mem[t], size), "with memory"),
            label(resize_nearest(without_mem[t], size), "without memory"),
            label(fit_into(top, size, size), "memory map (top)" if maps else "house (top, ground truth)"),
        ]
        frames.append(hstack_panels(panels))
    return write_video(path, frames, fps=6)


def run_demo(cfg: DemoConfig, console=None) -> dict:
    """Run the demo end to end; writes ``cfg.out`` and returns the summary dictionary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from pewm.assets import load_model, resolve_model_path
    from pewm.eval.revisit import observed_fraction

    console = console or Console(stderr=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {cfg.steps}")
    if cfg.fuse not in ("novel", "all"):
        raise ValueError(f"--fuse must be 'novel' or 'all', got {cfg.fuse!r}")
    from pewm.model.config import ANCHORS

    if cfg.anchor is not None and cfg.anchor not in ANCHORS:
        raise ValueError(f"--anchor must be one of {ANCHORS}, got {cfg.anchor!r}")
    if cfg.look_around < 0:
        raise ValueError(f"--look-around must be >= 0, got {cfg.look_around}")
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_path(cfg.model)
    model = load_model(model_dir)
    res = model.config.image_height
    console.print(f"model: {model_dir} (reader {model.config.reader}, {res}x{res}, H={model.config.frames})")
    with console.status("building an unseen house and its ground truth"):
        ep = ground_truth(cfg, res)
    console.print(f"house seed {ep.house_seed}: look-around of {len(ep.memory_rgb)} frame{'s' if len(ep.memory_rgb) != 1 else ''}, walk of {len(ep.actions)} actions")
    T = len(ep.actions)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        ta = progress.add_task("imagining with memory   ", total=T)
        with_mem, with_depth, maps, chunk_of = imagine(model, ep, True, cfg, progress, ta)
        tb = progress.add_task("imagining without memory", total=T)
        without_mem, without_depth, _, _ = imagine(model, ep, False, cfg, progress, tb)
    frac = observed_fraction(ep.depth, ep.poses, ep.K, ep.memory_depth, ep.memory_poses, ep.K)
    revisit = np.asarray(frac) >= cfg.revisit_threshold
    rows = {}
    sel = {"revisit": revisit.copy(), "novel": ~revisit}
    for k in sel:
        sel[k][0] = False  # the start frame is given, not generated
    for name, rgb, dep in (("with memory", with_mem, with_depth), ("without memory", without_mem, without_depth)):
        p, a = _psnr(rgb, ep.rgb), _absrel(dep, ep.depth)
        rows[name] = {
            k: {"frames": int(m.sum()), "psnr": float(np.mean(p[m])) if m.any() else None,
                "absrel": float(np.nanmean(a[m])) if m.any() and np.isfinite(a[m]).any() else None}
            for k, m in sel.items()
        }
    video = _video(out / "demo.mp4", ep, with_mem, without_mem, maps, chunk_of, revisit)
    summary = {
        "model": str(model_dir), "house_seed": ep.house_seed, "config": asdict(cfg),
        "frames": T + 1, "revisit_frames": int(sel["revisit"].sum()), "novel_frames": int(sel["novel"].sum()),
        "results": rows, "seconds": time.perf_counter() - t_start, "video": str(video),
    }
    from pewm.train.checkpoint import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    table = Table(title="Imagined walk vs. ground truth (PSNR dB higher is better, depth AbsRel lower is better)")
    table.add_column("memory")
    for k in ("revisit", "novel"):
        table.add_column(f"{k} PSNR ({sel[k].sum()} frames)", justify="right")
        table.add_column(f"{k} AbsRel", justify="right")
    for name, r in rows.items():
        cells = []
        for k in ("revisit", "novel"):
            cells += ["-" if r[k]["psnr"] is None else f"{r[k]['psnr']:.1f}",
                      "-" if r[k]["absrel"] is None else f"{r[k]['absrel']:.3f}"]
        table.add_row(name, *cells)
    console.print(table)
    console.print(f"wrote {video} and {out / 'summary.json'} in {summary['seconds']:.0f} s")
    return summary


__all__ = ["DemoConfig", "DemoEpisode", "demo_house_seed", "ground_truth", "imagine", "run_demo", "turn_away_and_back"]
