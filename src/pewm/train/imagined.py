"""Stage-2 memories that hold the model's own imagination (beyond the paper; issue #12).

§4 of arXiv 2505.05495 builds every training clip's map from ground-truth frames, but a rollout
(Algorithm 1) reads a map that also holds the chunks the model generated itself. A reader trained
only on renders of real surfaces takes a render of its own blurry, wrongly placed imagination for
the truth: in pewm's measurements fusing imagined chunks made every later chunk *worse* (design.md,
"Session 8"), an exposure bias. Here a share of the clips get the memory a rollout would have at
that point instead:

* the clip's current frame is ``t0`` with stride ``s``; the rollout is taken to have started
  ``(1 + D)`` chunks earlier, at ``c = t0 - (1 + D) H s`` (``D`` the model's
  ``imagined_fuse_delay_chunks``: the chunk just before ``t0`` is not in a rollout's map yet);
* the map holds the ground-truth history of ``[0, c]`` (the same rule as the clip's own history,
  :meth:`~pewm.data.clips.ClipSampler.clip`) plus the chunk ``c + s, ..., c + H s`` *generated* by
  the model from frame ``c`` with that map, fused as a rollout fuses it
  (:meth:`~pewm.model.RolloutMemory.add`, ``novel_only=True, imagined=True``);
* the clip is then denoised against its ground truth as usual, so the reader learns how far to
  trust what it imagined.

Clips with ``c < 0`` keep their ground-truth memory. The chunk is sampled with the EMA weights (the
model that is evaluated and shipped) and ``steps`` DDIM steps, without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pewm.data.clips import Clip, ClipSampler
from pewm.model import MemoryBuilder, MemoryInput, RolloutMemory, SamplingConfig, WorldModel
from pewm.train.data import clip_tensors, history_frames


@dataclass(frozen=True)
class ImaginedMemoryConfig:
    """``share``: probability that a clip's memory holds an imagined chunk (0: the paper's
    ground-truth memories); ``steps``: DDIM steps of that chunk (fewer than evaluation's for speed)."""

    share: float = 0.0
    steps: int = 4

    def __post_init__(self) -> None:
        if not (isinstance(self.share, (int, float)) and not isinstance(self.share, bool) and 0.0 <= self.share <= 1.0):
            raise ValueError(f"--imagined-memory (TrainConfig.imagined_memory) must be in [0, 1], got {self.share!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"--imagined-memory-steps (TrainConfig.imagined_memory_steps) must be an integer >= 1, "
                             f"got {self.steps!r}")


def rollout_start(clip: Clip, frames: int, delay_chunks: int) -> tuple[int, int] | None:
    """``(c, stride)``: the frame a rollout reaching ``clip`` would have started from, or None when
    the clip is too early in its episode for one."""
    idx = np.asarray(clip.frame_indices)
    if idx.size < 2:
        return None
    t0, s = int(idx[0]), int(idx[1] - idx[0])
    c = t0 - (1 + delay_chunks) * frames * s
    return (c, s) if c >= 0 else None


def start_memory(model: WorldModel, builder: MemoryBuilder, sampler: ClipSampler,
                 clip: Clip) -> tuple[RolloutMemory, Clip] | None:
    """The memory a rollout reaching ``clip`` started from (ground truth of ``[0, c]``) and its first
    chunk as a clip (frame ``c`` and the poses it generates); None when there is no room for one."""
    start = rollout_start(clip, model.config.frames, builder.cfg.imagined_fuse_delay_chunks)
    if start is None:
        return None
    first = sampler.clip(clip.episode, *start, share=0.0)  # the rollout's first chunk and its history
    return RolloutMemory.from_frames(builder, *history_frames(first, builder)), first


def read_for(mem: RolloutMemory, clip: Clip, cfg) -> MemoryInput:
    """``mem`` read for ``clip``'s target views (batch 1, the model's resolution)."""
    _, _, poses, K = clip_tensors(clip, cfg)
    return mem.read(poses[0], poses[1:], K)


def imagine_first_chunk(model: WorldModel, mem: RolloutMemory, first: Clip, steps: int,
                        generator: torch.Generator) -> None:
    """Generate ``first``'s chunk with ``model`` from its frame ``c`` and ``mem``, and fuse it into
    ``mem`` as a rollout would (novel-only, as imagined), at once."""
    rgb, depth, poses, K = clip_tensors(first, model.config)
    gen = model.generate(rgb[0].permute(1, 2, 0)[None], depth[0][None], poses[0][None], K,
                         poses=poses[1:][None], memory=mem.read(poses[0], poses[1:], K),
                         sampling=SamplingConfig(steps=steps), generator=generator)
    mem.add(gen.rgb[0], gen.depth[0], poses[1:], K, novel_only=True, imagined=True)
    mem.flush()  # in a rollout it would be fused by now (the start is 1 + D chunks back)


def imagined_memory(model: WorldModel, builder: MemoryBuilder, sampler: ClipSampler, clip: Clip,
                    steps: int, generator: torch.Generator) -> MemoryInput | None:
    """The batch-1 memory of ``clip`` as a rollout started ``1 + D`` chunks earlier would read it:
    ground-truth history up to the start, then one chunk imagined by ``model`` (module docstring).
    None when the clip has no room for it (the caller keeps the ground-truth memory)."""
    started = start_memory(model, builder, sampler, clip)
    if started is None:
        return None
    mem, first = started
    imagine_first_chunk(model, mem, first, steps, generator)
    return read_for(mem, clip, model.config)


def imagined_memories(model: WorldModel, builder: MemoryBuilder, sampler: ClipSampler, clips: list[Clip],
                      share: float, steps: int, rng: np.random.Generator) -> list[MemoryInput | None]:
    """Per clip, with probability ``share``, :func:`imagined_memory` (else None: the ground-truth
    memory). The picks and the noise seeds come from ``rng`` (the trainer's data generator, so a
    resumed run draws the same)."""
    picks = rng.random(len(clips)) < share
    seeds = rng.integers(0, 2**62, size=len(clips))
    return [imagined_memory(model, builder, sampler, clip, steps, torch.Generator().manual_seed(int(seed)))
            if pick else None for clip, pick, seed in zip(clips, picks, seeds)]


__all__ = ["ImaginedMemoryConfig", "imagine_first_chunk", "imagined_memories", "imagined_memory", "read_for",
           "rollout_start", "start_memory"]
