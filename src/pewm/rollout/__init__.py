"""Persistent rollouts of the world model (Algorithm 1 of arXiv 2505.05495, §3.3).

* :class:`RolloutMemory` -- the persistent memory of one rollout (3D map, frames, or nothing),
  fused frame by frame and read for the next chunk's target poses.
* :func:`rollout` -- Algorithm 1 batched over rollouts: any number of actions, chunks of ``H``.
* :class:`WorldModelEnv` -- a gymnasium env whose observations the world model imagines.
"""

from pewm.rollout.env import WorldModelEnv
from pewm.rollout.loop import FUSE_MODES, ChunkOutput, RolloutResult, fuse_flags, generate_chunk, rollout
from pewm.model.rollout_memory import RolloutMemory  # (lives in pewm.model: training reads imagined memories too)

__all__ = ["FUSE_MODES", "ChunkOutput", "RolloutMemory", "RolloutResult", "WorldModelEnv", "fuse_flags", "generate_chunk",
           "rollout"]
