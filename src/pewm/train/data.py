"""Clips -> :class:`~pewm.model.ClipBatch` (§4 "Training": clips with the ground-truth history
that builds each clip's memory).

:func:`collate_clips` resizes every clip to the model's resolution (RGB by area averaging, depth by
the nearest source pixel, intrinsics rescaled with the pixel-centre convention), stacks them and
builds each clip's memory from its history with a :class:`~pewm.model.MemoryBuilder`
(the memory is built from the full-resolution history; renders and frames come out at the model's
resolution).
"""

from __future__ import annotations

import numpy as np
import torch

from pewm.data import fit_frames
from pewm.data.clips import Clip
from pewm.model import ClipBatch, MemoryInput, ModelConfig
from pewm.model import MemoryBuilder, stack_memory
from pewm.model.frame_ops import fit_to_model


def clip_tensors(clip: Clip, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rgb`` ``(1 + H, 3, h, w)`` uint8, ``depth`` ``(1 + H, h, w)``, ``poses`` ``(1 + H, 4, 4)``
    float64 and ``K`` ``(3, 3)`` of one clip at the model's resolution (:func:`pewm.model.frame_ops.fit_to_model`)."""
    h, w = cfg.image_height, cfg.image_width
    F_ = cfg.frames + 1
    if clip.rgb.shape[0] != F_:
        raise ValueError(
            f"clip has {clip.rgb.shape[0]} frames but the model needs 1 + H = {F_}; set "
            f"ClipConfig(future_frames={cfg.frames})"
        )
    rgb, depth, K = fit_to_model(clip.rgb, clip.depth, clip.K, h, w)
    return (torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2), torch.from_numpy(depth),
            torch.from_numpy(np.asarray(clip.poses, dtype=np.float64)), torch.as_tensor(K, dtype=torch.float32))


def history_frames(clip: Clip, builder: MemoryBuilder) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(rgb, depth, poses, K)`` of the clip's ground-truth history as its memory is built from them:
    full resolution, centre-cropped to the model's aspect ratio like the targets (one camera)."""
    rgb, depth, K = clip.history_rgb, clip.history_depth, clip.K
    h, w = builder.model_cfg.image_height, builder.model_cfg.image_width
    H, W = np.shape(depth)[-2:]
    if len(depth) and H * w != W * h:  # the same centre crop as the targets (clip_tensors)
        rgb, depth, K = fit_frames(np.asarray(rgb), np.asarray(depth, dtype=np.float32), K, h, w)
    return rgb, depth, clip.history_poses, np.asarray(K)


def clip_memory(clip: Clip, builder: MemoryBuilder | None) -> MemoryInput:
    """The memory of one clip built from its ground-truth history (batch 1); empty without a builder."""
    if builder is None:
        return MemoryInput()
    return builder.from_history(*history_frames(clip, builder), clip.poses[0], clip.poses[1:])


def collate_clips(clips: list[Clip], cfg: ModelConfig, builder: MemoryBuilder | None = None,
                  memories: list[MemoryInput | None] | None = None) -> ClipBatch:
    """Stack ``clips`` into a :class:`ClipBatch` at the model's resolution; ``builder`` None gives
    an empty memory (stage 1, a reader that reads no memory). ``memories``: per clip, a memory built
    elsewhere (e.g. :func:`pewm.train.imagined.imagined_memory`) or None for the ground-truth one."""
    if not clips:
        raise ValueError("collate_clips needs at least one clip")
    if memories is not None and len(memories) != len(clips):
        raise ValueError(f"collate_clips: {len(memories)} memories for {len(clips)} clips")
    parts = [clip_tensors(c, cfg) for c in clips]
    rgb, depth, poses, K = (torch.stack(p) for p in zip(*parts))
    memory = None
    if builder is not None and builder.reads_memory:
        given = memories or [None] * len(clips)
        memory = stack_memory([m if m is not None else clip_memory(c, builder) for c, m in zip(clips, given)])
    return ClipBatch(rgb=rgb, depth=depth, poses=poses, K=K, memory=memory)


__all__ = ["clip_memory", "clip_tensors", "collate_clips", "history_frames"]
