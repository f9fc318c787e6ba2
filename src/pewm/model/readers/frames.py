"""``frames`` (the image-memory baseline of Table 1): the memory blocks attend to patch tokens of the
``max_memory_frames`` past RGB-D frames that overlap the target views most, each pixel with the
Plücker ray of its camera relative to the current camera, patchified like the backbone's input
(plus the fixed 2D patch-grid embedding)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pewm.geometry import plucker_rays
from pewm.memory import FrameMemory, FrameMemoryConfig
from pewm.model.frame_ops import as_poses, poses_in_camera, resize_depth, resize_frames_uint8, resize_rgb, scale_intrinsics
from pewm.model.layers import sincos_2d_grid
from pewm.model.normalization import normalize_depth, normalize_rgb
from pewm.model.readers.base import MemoryInput, MemoryReader, check_tensor, register_reader


class FrameStore:
    """The stored frames of one rollout: a :class:`~pewm.memory.FrameMemory` holding every frame at
    the resolution of the first frames added (later frames of another size are resized and their
    intrinsics scaled), because retrieval stacks stored frames and scores overlap in that size."""

    def __init__(self, cfg: FrameMemoryConfig, device):
        self.memory = FrameMemory(cfg, device=device)
        self.hw: tuple[int, int] | None = None

    def add(self, rgb: np.ndarray, depth: torch.Tensor, K: np.ndarray, poses: torch.Tensor) -> None:
        h, w = rgb.shape[1:3]
        if self.hw is None:
            self.hw = (h, w)
        rgb, depth, K = resize_frames_uint8(rgb, depth, K, *self.hw)
        self.memory.add(rgb, depth, K, poses)

    def __len__(self) -> int:
        return len(self.memory)


def frames_input(memory: FrameMemory, current_pose, target_poses, model_cfg, K=None) -> MemoryInput:
    """``frames`` memory of one clip: the ``max_memory_frames`` stored frames overlapping the target
    views most (``K``: the targets' intrinsics; default the last stored frame's), resized to the
    model's resolution, poses relative to the current camera, padded with ``frame_mask = False``."""
    k, h, w = model_cfg.max_memory_frames, model_cfg.image_height, model_cfg.image_width
    frames = torch.zeros(k, 4, h, w)
    poses = torch.eye(4).repeat(k, 1, 1)
    Ks = torch.eye(3).repeat(k, 1, 1)
    mask = torch.zeros(k, dtype=torch.bool)
    if len(memory):
        got = memory.retrieve(as_poses(target_poses).float(), k, K=K)
        n = got.rgb.shape[0]
        H, W = got.depth.shape[-2:]
        frames[:n, :3] = resize_rgb(got.rgb.float().cpu(), h, w)
        frames[:n, 3] = resize_depth(got.depth.float().cpu(), h, w)
        poses[:n] = poses_in_camera(got.poses.cpu(), current_pose)
        Ks[:n] = torch.stack([scale_intrinsics(Ki, (H, W), (h, w)) for Ki in got.K.cpu()])
        mask[:n] = True
    return MemoryInput(frames=frames[None], frame_poses=poses[None], frame_intrinsics=Ks[None], frame_mask=mask[None])


@register_reader
class FramesReader(MemoryReader):
    """``frames``: patch tokens of retrieved past frames with their rays (image memory)."""

    name = "frames"

    def __init__(self, cfg):
        super().__init__(cfg)
        p = cfg.pixel_patch
        self.patch = nn.Conv2d(cfg.rgbd_channels + cfg.plucker_channels, cfg.width, p, stride=p)
        self.register_buffer("grid_pe", sincos_2d_grid(*cfg.grid, cfg.width), persistent=False)

    def tokenize(self, memory, batch, device, dtype):
        cfg = self.cfg
        h, w = cfg.image_height, cfg.image_width
        if memory.frames is None:
            x = torch.zeros(batch, cfg.rgbd_channels + cfg.plucker_channels, h, w, device=device, dtype=dtype)[:0]
            t = self.patch(x).flatten(2).transpose(1, 2).reshape(batch, 0, cfg.width)
            return t, torch.zeros(batch, 0, dtype=torch.bool, device=device)
        fr = check_tensor(memory.frames, "frames", (batch, None, 4, h, w), self.name).to(device=device,
                                                                                          dtype=torch.float32)
        k = fr.shape[1]
        if k > cfg.max_memory_frames:
            raise ValueError(
                f"MemoryInput.frames has {k} frames, more than ModelConfig.max_memory_frames={cfg.max_memory_frames}"
            )
        poses = check_tensor(memory.frame_poses, "frame_poses", (batch, k, 4, 4), self.name).to(device, torch.float32)
        K = memory.frame_intrinsics
        if K is None:
            raise ValueError(f"memory reader {self.name!r} needs MemoryInput.frame_intrinsics, which is None")
        K = K.to(device=device, dtype=torch.float32)
        if K.shape == (3, 3):
            K = K.expand(batch, k, 3, 3)
        elif K.shape == (batch, 3, 3):
            K = K[:, None].expand(batch, k, 3, 3)
        check_tensor(K, "frame_intrinsics", (batch, k, 3, 3), self.name)
        with torch.autocast(fr.device.type, enabled=False):  # geometry in fp32 even under autocast
            rays = plucker_rays(K, poses, h, w)  # (B, K, 6, h, w)
        pix = torch.cat(
            [normalize_rgb(fr[:, :, :3]), normalize_depth(fr[:, :, 3:], cfg.depth_min, cfg.depth_max), rays], dim=2
        )
        tok = self.patch(pix.flatten(0, 1).to(dtype)).flatten(2).transpose(1, 2)  # (B*K, L, width)
        tok = (tok + self.grid_pe.to(tok.dtype)).reshape(batch, k * cfg.tokens_per_frame, cfg.width)
        fmask = memory.frame_mask
        if fmask is None:
            fmask = torch.ones(batch, k, dtype=torch.bool, device=device)
        else:
            fmask = check_tensor(fmask, "frame_mask", (batch, k), self.name).to(device=device, dtype=torch.bool)
        return tok, fmask.repeat_interleave(cfg.tokens_per_frame, dim=1)

    # -- memory building ---------------------------------------------------------------------------
    @classmethod
    def new_store(cls, builder) -> FrameStore:
        c = builder.cfg
        return FrameStore(FrameMemoryConfig(max_depth=c.max_depth, depth_test=c.frames_depth_test), builder.device)

    @classmethod
    def fuse(cls, store: FrameStore, rgb, depth, K, poses) -> None:
        store.add(rgb, depth, K, poses)

    @classmethod
    def read_store(cls, builder, store: FrameStore, current_pose, target_poses, K_model) -> MemoryInput:
        # targets are scored in the stored frames' camera (the last stored frame's intrinsics)
        return frames_input(store.memory, current_pose, target_poses, builder.model_cfg)


__all__ = ["FrameStore", "FramesReader", "frames_input"]
