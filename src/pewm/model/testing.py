"""Synthetic inputs for tests and benchmarks of the world model (no data set needed).

``synthetic_batch(cfg, B)`` builds a :class:`~pewm.model.world_model.ClipBatch` of smooth random
RGB-D clips along a plausible camera path (forward moves and turns), with the memory fields every
reader needs, so one batch serves the shared reader contract tests.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from pewm.geometry import camera_pose_from_agent, intrinsics_from_fov
from pewm.model.config import ModelConfig, from_preset
from pewm.model.readers import MemoryInput
from pewm.model.world_model import ClipBatch, WorldModel


def synthetic_intrinsics(cfg: ModelConfig) -> torch.Tensor:
    """``(3, 3)`` intrinsics with a 90 degree vertical field of view at the model's resolution."""
    return torch.tensor(intrinsics_from_fov(cfg.image_width, cfg.image_height, 90.0).matrix, dtype=torch.float32)


def synthetic_memory(cfg: ModelConfig, B: int, n_tokens: int | None = None, n_frames: int | None = None,
                     generator: torch.Generator | None = None) -> MemoryInput:
    """A memory with every field filled: map tokens (some masked), past frames and renders."""
    g = generator
    n = min(cfg.max_memory_tokens, 32) if n_tokens is None else n_tokens
    k = min(cfg.max_memory_frames, 2) if n_frames is None else n_frames
    h, w, H = cfg.image_height, cfg.image_width, cfg.frames
    mask = torch.rand(B, n, generator=g) > 0.2
    mask[:, 0] = True
    poses = np.stack([camera_pose_from_agent(-0.3 * (i + 1), 0.1 * i, 0.2 * i, 0.0) for i in range(k)])
    rendered = torch.rand(B, H, 5, h, w, generator=g)
    rendered[:, :, 3] = 0.5 + 4.0 * rendered[:, :, 3]
    rendered[:, :, 4] = (rendered[:, :, 4] > 0.3).float()
    frames = torch.rand(B, k, 4, h, w, generator=g)
    frames[:, :, 3] = 0.5 + 4.0 * frames[:, :, 3]
    cell_index = cell_geometry = None
    per_cell = int((cfg.reader_options or {}).get("cell_tokens", 0) or 0)  # voxel-xattn's cell lists
    if per_cell:
        shape = (B, H + 1, cfg.frame_height * cfg.frame_width, per_cell)
        cell_index = torch.randint(0, n, shape, generator=g)
        cell_index[torch.rand(shape, generator=g) < 0.3] = -1
        cell_geometry = torch.randn(*shape, 3, generator=g)
    return MemoryInput(
        cell_index=cell_index,
        cell_geometry=cell_geometry,
        tokens=torch.randn(B, n, cfg.memory_dim, generator=g),
        positions=torch.randn(B, n, 3, generator=g) * 2.0 + torch.tensor([0.0, 0.0, 2.0]),
        mask=mask,
        frames=frames,
        frame_poses=torch.from_numpy(poses).float().expand(B, k, 4, 4).clone(),
        frame_intrinsics=synthetic_intrinsics(cfg),
        rendered=rendered,
    )


def synthetic_poses(cfg: ModelConfig, B: int) -> torch.Tensor:
    """``(B, 1 + H, 4, 4)`` camera-to-world poses: each clip walks forward and turns."""
    out = []
    for b in range(B):
        x = y = 0.0
        yaw = 0.3 * b
        seq = []
        for i in range(cfg.frames + 1):
            seq.append(camera_pose_from_agent(x, y, yaw, 1.2))
            if (i + b) % 3 == 2:
                yaw += math.radians(15.0) * (1 if b % 2 else -1)
            else:
                x, y = x + 0.25 * math.cos(yaw), y + 0.25 * math.sin(yaw)
        out.append(np.stack(seq))
    return torch.from_numpy(np.stack(out))


def synthetic_batch(cfg: ModelConfig, B: int, generator: torch.Generator | None = None,
                    memory: bool = True) -> ClipBatch:
    """Smooth random RGB-D clips (low-frequency patterns, depth 0.5-5.5 m) with their poses."""
    g = generator
    F, h, w = cfg.frames + 1, cfg.image_height, cfg.image_width
    low = torch.rand(B, F, 4, max(h // 4, 1), max(w // 4, 1), generator=g)
    up = torch.nn.functional.interpolate(low.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False)
    up = up.view(B, F, 4, h, w)
    rgb = up[:, :, :3].clamp(0, 1)
    depth = 0.5 + 5.0 * up[:, :, 3]
    mem = synthetic_memory(cfg, B, generator=g) if memory else None
    return ClipBatch(rgb=rgb, depth=depth, poses=synthetic_poses(cfg, B), K=synthetic_intrinsics(cfg), memory=mem)




@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads, then restore. Micro models in tests run faster on one
    thread, and two OpenMP threads on a 2-core machine shared with another busy process can be
    50x slower (every parallel region waits for a descheduled thread)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)




def perturbed_micro_model(reader: str, seed: int = 0, scale: float = 0.1, options: dict | None = None) -> WorldModel:
    """A ``micro`` model of ``reader`` (with reader ``options``; in eval mode) with every weight
    perturbed by ``scale`` x N(0, 1) (the zero-initialised gates and projections too), a stand-in
    for a trained model whose memory really contributes; the same weights for the same ``seed``."""
    torch.manual_seed(seed)
    m = WorldModel(from_preset("micro", reader=reader, reader_options=options or {})).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


__all__ = ["perturbed_micro_model", "synthetic_batch", "synthetic_intrinsics", "synthetic_memory", "synthetic_poses",
           "torch_threads"]
