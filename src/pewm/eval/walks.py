"""Imagined walks in unseen houses with their ground truth (the paper's Fig. 4-5 probes).

:func:`ground_truth` builds a house from a seed stream ``pewm data generate`` never uses, a start
view (optionally a look-around) and a walk: turn away and back twice (Fig. 4), then out to another
place and back (Fig. 5), rendered by the simulator. :func:`imagine` rolls the same walk out with
the world model (Algorithm 1), with the persistent memory or with an empty one. Used by
``pewm demo`` and by the long-horizon probe of ``pewm eval`` (:mod:`pewm.eval.long_horizon`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pewm.geometry import Action, AgentState
from pewm.memory.viz import map_top_down_image
from pewm.model import MemoryBuilder, SamplingConfig
from pewm.rollout import RolloutMemory, rollout
from pewm.sim import EmbodiedEnv, SimConfig, generate_house
from pewm.sim.topdown import top_down_image
from pewm.sim.trajectories import TrajectoryConfig, plan_actions

DEMO_SEED_STREAM = 0xDE30  # house seeds of the demo: SeedSequence([DEMO_SEED_STREAM, seed])


@dataclass
class WalkConfig:
    """``seed``: which house, start, walk and noise; ``steps``: actions of the walk; ``look_around``:
    extra ground-truth 15° turns fused with the start view before imagining (24 = a full turn)."""

    seed: int = 0
    steps: int = 128
    look_around: int = 0


def demo_house_seed(seed: int) -> int:
    """House seed of demo ``seed``; the dataset generator derives its seeds as
    ``SeedSequence([seed, house_index])``, so the two streams do not meet."""
    return int(np.random.SeedSequence([DEMO_SEED_STREAM, int(seed)]).generate_state(1)[0])


@dataclass
class WalkEpisode:
    """Ground truth of a walk: the look-around (memory) frames and the walk (start frame first)."""

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
    R, L = int(Action.TURN_RIGHT), int(Action.TURN_LEFT)
    return [R] * turns + [L] * turns + [L] * turns + [R] * turns


def ground_truth(cfg: WalkConfig, resolution: int, house_seed: int | None = None) -> WalkEpisode:
    """Build the unseen house, the look-around and the walk of ``cfg.steps`` actions: turn away
    twice and back (48 actions, paper Fig. 4), then out to another place and back (Fig. 5).
    ``cfg``: a :class:`WalkConfig` (or anything with its fields, e.g. the demo's config)."""
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
        return WalkEpisode(
            house_seed=hs, K=env.intrinsics.matrix.astype(np.float64),
            memory_rgb=np.stack([f["rgb"] for f in mem]), memory_depth=np.stack([f["depth"] for f in mem]),
            memory_poses=np.stack([f["pose"] for f in mem]),
            rgb=np.stack([f["rgb"] for f in frames]), depth=np.stack([f["depth"] for f in frames]),
            poses=np.stack([f["pose"] for f in frames]), actions=np.asarray(actions, dtype=np.int64),
            topdown=np.asarray(top),
        )
    finally:
        env.close()


def imagine(model, ep: WalkEpisode, use_memory: bool, sampling: SamplingConfig | None = None, seed: int = 0,
            fuse_novel_only: bool = True, progress=None, task=None):
    """Roll the walk out chunk by chunk (noise seeded with ``seed``; ``sampling``'s anchoring only
    for readers that can anchor); returns rgb ``(T+1, h, w, 3)``, depth, and (with memory) a
    top-down image of the map after each chunk plus the chunk index of every frame."""
    H, T = model.config.frames, len(ep.actions)
    sampling = sampling or SamplingConfig()
    if not model.reader.can_anchor:
        sampling = sampling.replace(anchor=None)
    builder = MemoryBuilder.for_model(model, render_supersample=sampling.render_supersample)
    if use_memory:  # the observed frames (start view first) are in the map before imagining
        memory = RolloutMemory.from_frames(builder, ep.memory_rgb, ep.memory_depth, ep.memory_poses, ep.K)
    else:
        memory = RolloutMemory(builder)
    g = torch.Generator().manual_seed(int(seed))
    rgb = [torch.from_numpy(ep.rgb[:1])]
    depth = [torch.from_numpy(ep.depth[:1]).float()]
    cur_rgb, cur_depth, cur_pose = rgb[0], depth[0], ep.poses[:1]
    maps, chunk_of = [], [0]
    for c, i in enumerate(range(0, T, H)):
        acts = ep.actions[None, i:i + H]
        res = rollout(model, cur_rgb, cur_depth, cur_pose, ep.K, acts, memories=[memory],
                      fuse_start=False, fuse_generated=use_memory, fuse_novel_only=fuse_novel_only,
                      sampling=sampling, generator=g)
        rgb.append(res.rgb[0, 1:])
        depth.append(res.depth[0, 1:])
        chunk_of += [c] * acts.shape[1]
        cur_rgb, cur_depth, cur_pose = res.rgb[:, -1], res.depth[:, -1], res.poses[:, -1].numpy()
        if use_memory and memory.pmap is not None:
            maps.append(map_top_down_image(memory.pmap, px_per_m=16, z_max=2.2))
        if progress is not None:
            progress.advance(task, acts.shape[1])
    return torch.cat(rgb).numpy(), torch.cat(depth).numpy(), maps, np.asarray(chunk_of)


__all__ = ["DEMO_SEED_STREAM", "WalkConfig", "WalkEpisode", "demo_house_seed", "ground_truth", "imagine",
           "turn_away_and_back"]
