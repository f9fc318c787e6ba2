"""Image-memory baseline: keep past RGB-D frames, retrieve those that see what the target views see.

The baseline the paper's 3D map is compared against (memory as retrieved past frames). Overlap is
measured geometrically, not by pose distance: a subsample of each stored frame's depth points is
reprojected into the target cameras, and a frame scores the fraction of its points that land
inside the target image in front of the camera (optionally also passing a depth test against a
z-buffer of all stored points, so points hidden behind walls do not count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pewm.geometry import project_points, unproject_depth, valid_depth
from pewm.memory._util import as_tensor, rgb_to_bchw_float


@dataclass(frozen=True)
class FrameMemoryConfig:
    """``capacity``: most frames kept (oldest dropped first; None = unbounded); ``sample_stride``:
    pixel stride of the depth subsample used for scoring; ``max_depth``: invalid beyond this;
    ``depth_test``: count only points not occluded in the target view; ``depth_tol``: metres of slack
    (plus 5% of depth) for that test."""

    capacity: int | None = None
    sample_stride: int = 8
    max_depth: float | None = 10.0
    depth_test: bool = False
    depth_tol: float = 0.1


@dataclass
class RetrievedFrames:
    """``indices`` (k,) into the memory, their ``scores`` (k,), and the frames: ``rgb`` (k, 3, H, W)
    float [0, 1], ``depth`` (k, H, W), ``poses`` (k, 4, 4), ``K`` (k, 3, 3), ``steps`` (k,)."""

    indices: torch.Tensor
    scores: torch.Tensor
    rgb: torch.Tensor
    depth: torch.Tensor
    poses: torch.Tensor
    K: torch.Tensor
    steps: torch.Tensor


class FrameMemory:
    """Past frames (rgb, depth, pose, K) with frustum-overlap retrieval."""

    def __init__(self, config: FrameMemoryConfig | None = None, device: torch.device | str = "cpu"):
        self.config = config or FrameMemoryConfig()
        self.device = torch.device(device)
        self.clear()

    def clear(self) -> None:
        self._rgb: list[torch.Tensor] = []
        self._depth: list[torch.Tensor] = []
        self._pose: list[torch.Tensor] = []
        self._K: list[torch.Tensor] = []
        self._pts: list[torch.Tensor] = []
        self._steps: list[int] = []
        self._next_step = 0

    def __len__(self) -> int:
        return len(self._rgb)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in (self._rgb, self._depth, self._pts) for t in ts)

    def add(self, rgb, depth, K, cam_to_world, step=None) -> None:
        """Store a frame or a batch: rgb (B, H, W, 3) uint8 / (B, 3, H, W) float, depth (B, H, W),
        K (3, 3) or (B, 3, 3), cam_to_world (B, 4, 4). Colour is kept as uint8 to save memory."""
        dev = self.device
        depth = as_tensor(depth, device=dev, dtype=torch.float32)
        if depth.ndim == 2:
            depth = depth[None]
        B, H, W = depth.shape
        img = (rgb_to_bchw_float(rgb, device=dev) * 255).round().to(torch.uint8)
        T = as_tensor(cam_to_world, device=dev, dtype=torch.float32).reshape(-1, 4, 4)
        Km = as_tensor(K, device=dev, dtype=torch.float32).reshape(-1, 3, 3).expand(B, 3, 3)
        s = self.config.sample_stride
        steps = range(self._next_step, self._next_step + B) if step is None else np.broadcast_to(np.asarray(step), (B,))
        for b in range(B):
            d = depth[b]
            sub = d[s // 2 :: s, s // 2 :: s]
            # unproject the subsample with the intrinsics of the subsampled grid
            Ks = Km[b].clone()
            Ks[0, 2] = (Ks[0, 2] - s // 2) / s
            Ks[1, 2] = (Ks[1, 2] - s // 2) / s
            Ks[0, 0] /= s
            Ks[1, 1] /= s
            pts = unproject_depth(torch.nan_to_num(sub, nan=0.0, posinf=0.0), Ks, T[b]).reshape(-1, 3)
            pts = pts[valid_depth(sub, self.config.max_depth).reshape(-1)]
            self._rgb.append(img[b])
            self._depth.append(d)
            self._pose.append(T[b])
            self._K.append(Km[b])
            self._pts.append(pts)
            self._steps.append(int(steps[b]))
        self._next_step += B
        cap = self.config.capacity
        if cap is not None and len(self) > cap:
            drop = len(self) - cap
            for lst in (self._rgb, self._depth, self._pose, self._K, self._pts, self._steps):
                del lst[:drop]

    def overlap(self, target_poses, K=None, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """Overlap scores (num_stored, num_targets): fraction of each stored frame's sample points
        visible in each target camera (inside the image, positive depth, depth test if enabled)."""
        if not len(self):
            raise ValueError("FrameMemory is empty")
        T = as_tensor(target_poses, device=self.device, dtype=torch.float32).reshape(-1, 4, 4)
        H = height or self._depth[-1].shape[0]
        W = width or self._depth[-1].shape[1]
        Kt = self._K[-1] if K is None else as_tensor(K, device=self.device, dtype=torch.float32).reshape(3, 3)
        counts = torch.tensor([p.shape[0] for p in self._pts], device=self.device)
        pts = torch.cat(self._pts)  # (P, 3)
        owner = torch.repeat_interleave(torch.arange(len(self), device=self.device), counts)
        scores = torch.zeros(len(self), T.shape[0], device=self.device)
        for t in range(T.shape[0]):
            uv, z = project_points(pts, Kt, T[t])
            col, row = uv[:, 0].round().long(), uv[:, 1].round().long()
            ok = (z > 1e-3) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
            if self.config.depth_test and bool(ok.any()):
                pix = row.clamp(0, H - 1) * W + col.clamp(0, W - 1)
                zbuf = torch.full((H * W,), float("inf"), device=self.device)
                zbuf.scatter_reduce_(0, pix[ok], z[ok], "amin")
                ok &= z <= zbuf[pix] * 1.05 + self.config.depth_tol
            hit = torch.zeros(len(self), device=self.device).index_add_(0, owner, ok.float())
            scores[:, t] = hit / counts.clamp_min(1)
        return scores

    def retrieve(self, target_poses, k: int, K=None, height: int | None = None, width: int | None = None) -> RetrievedFrames:
        """The ``k`` stored frames that overlap the target views most (mean overlap over targets).

        ``target_poses`` (4, 4) or (T, 4, 4); ``K`` the targets' intrinsics (default: the last stored
        frame's) and their image size (default: the stored frames'). Ties go to the newer frame.
        """
        scores = self.overlap(target_poses, K, height, width).mean(dim=1)
        k = min(k, len(self))
        steps = torch.tensor(self._steps, device=self.device, dtype=torch.float32)
        # newest-first tie-break: sort by (score, step) descending
        order = torch.argsort(steps, descending=True, stable=True)
        top = order[torch.argsort(scores[order], descending=True, stable=True)[:k]]
        idx = top.tolist()
        return RetrievedFrames(
            indices=top,
            scores=scores[top],
            rgb=torch.stack([self._rgb[i] for i in idx]).float() / 255.0 if idx else torch.empty(0),
            depth=torch.stack([self._depth[i] for i in idx]) if idx else torch.empty(0),
            poses=torch.stack([self._pose[i] for i in idx]) if idx else torch.empty(0),
            K=torch.stack([self._K[i] for i in idx]) if idx else torch.empty(0),
            steps=torch.tensor([self._steps[i] for i in idx], dtype=torch.int64),
        )
