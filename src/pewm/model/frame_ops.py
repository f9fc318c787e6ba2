"""Small frame and camera operations shared by the memory readers and the memory builder:
poses into the current camera's frame, intrinsics and images resized to the model's resolution,
map features padded to the model's width. Pure functions of tensors/arrays."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pewm.data import fit_frames
from pewm.geometry import Intrinsics


def as_pose(T) -> torch.Tensor:
    """One camera-to-world pose as a ``(4, 4)`` float64 tensor (numpy or torch input)."""
    t = torch.as_tensor(np.asarray(T.cpu() if isinstance(T, torch.Tensor) else T), dtype=torch.float64)
    if t.shape != (4, 4):
        raise ValueError(f"expected a (4, 4) camera-to-world pose, got shape {tuple(t.shape)}")
    return t


def as_poses(T) -> torch.Tensor:
    """Camera-to-world poses as an ``(N, 4, 4)`` float64 tensor (a single pose gets N = 1)."""
    t = torch.as_tensor(np.asarray(T.cpu() if isinstance(T, torch.Tensor) else T), dtype=torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[1:] != (4, 4):
        raise ValueError(f"expected (N, 4, 4) camera-to-world poses, got shape {tuple(t.shape)}")
    return t


def world_to_camera(points: torch.Tensor, cam_to_world) -> torch.Tensor:
    """World points ``(..., 3)`` expressed in the camera frame of ``cam_to_world`` (OpenCV axes)."""
    T = as_pose(cam_to_world)
    R, t = T[:3, :3], T[:3, 3]
    p = points.double()
    return ((p - t) @ R).to(points.dtype if points.is_floating_point() else torch.float32)


def poses_in_camera(poses, cam_to_world) -> torch.Tensor:
    """Camera-to-world ``poses`` ``(N, 4, 4)`` as camera-to-``cam_to_world``-camera poses (float32)."""
    T0 = as_pose(cam_to_world)
    return (torch.linalg.inv(T0) @ as_poses(poses)).float()


def scale_intrinsics(K, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """``(3, 3)`` intrinsics of an ``src_hw`` image resized to ``dst_hw`` (pixel-centre convention)."""
    K = np.asarray(K.cpu() if isinstance(K, torch.Tensor) else K, dtype=np.float64).reshape(3, 3)
    intr = Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], src_hw[1], src_hw[0]).scaled(dst_hw[1], dst_hw[0])
    return torch.as_tensor(intr.matrix, dtype=torch.float32)


def resize_rgb(rgb: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(N, 3, H, W)`` float images resized to ``h x w`` (area average when shrinking)."""
    if tuple(rgb.shape[-2:]) == (h, w):
        return rgb
    H, W = rgb.shape[-2:]
    mode = "area" if (H >= h and W >= w) else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(rgb, size=(h, w), mode=mode, **kw)


def resize_depth(depth: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(N, H, W)`` depth resized to ``h x w`` by taking the source pixel nearest to each new pixel
    centre (no averaging across depth edges, consistent with :func:`scale_intrinsics`)."""
    H, W = depth.shape[-2:]
    if (H, W) == (h, w):
        return depth
    rows = ((torch.arange(h, dtype=torch.float64) + 0.5) * H / h).floor().long().clamp(max=H - 1)
    cols = ((torch.arange(w, dtype=torch.float64) + 0.5) * W / w).floor().long().clamp(max=W - 1)
    return depth[..., rows, :][..., cols]


def resize_frames_uint8(rgb: np.ndarray, depth: torch.Tensor, K, h: int, w: int):
    """uint8 ``(N, H, W, 3)`` frames with depth ``(N, H, W)`` and their ``(3, 3)`` intrinsics
    resized to ``h x w``: ``(rgb uint8, depth, K float32 numpy)``."""
    H, W = rgb.shape[1:3]
    if (H, W) == (h, w):
        return rgb, depth, np.asarray(K, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
    out = (resize_rgb(x, h, w).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out, resize_depth(depth, h, w), scale_intrinsics(K, (H, W), (h, w)).numpy()


def pad_features(features: torch.Tensor, dim: int) -> torch.Tensor:
    """``(N, C)`` features zero-padded to ``(N, dim)``; ``C > dim`` is an error."""
    C = features.shape[-1]
    if C > dim:
        raise ValueError(
            f"map features have {C} channels, more than the model's memory_dim={dim}; use a model with "
            f"memory_dim >= {C} or a smaller feature extractor"
        )
    return F.pad(features.float(), (0, dim - C)) if C < dim else features.float()


def fit_to_model(rgb, depth, K, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``(N, H, W, 3)`` uint8 / ``(N, H, W)`` and intrinsics ``K`` (an episode's, a clip's) at the
    model's ``height`` x ``width``: unchanged when they have it; frames of the model's aspect ratio
    (square simulator data) resized as before issue #16 (area average, depth nearest pixel centre,
    bit for bit the same numbers); any other aspect ratio (a 640x480 recording) centre-cropped and
    resized by :func:`pewm.data.fit.fit_frames`. Returns ``(rgb, depth float32, K float64)``."""
    rgb, depth = np.asarray(rgb), np.asarray(depth, dtype=np.float32)
    K = np.asarray(K, dtype=np.float64)
    H, W = depth.shape[-2:]
    if (H, W) == (height, width):
        return rgb, depth, K
    if H * width != W * height:
        rgb, depth, K = fit_frames(rgb, depth, K, height, width)
        return rgb, depth, np.asarray(K, dtype=np.float64)
    rgb = (resize_rgb(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255, height, width)
           .permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy())
    depth = resize_depth(torch.from_numpy(depth), height, width).numpy()
    return rgb, depth, np.asarray(scale_intrinsics(K, (H, W), (height, width)), dtype=np.float64)


__all__ = ["as_pose", "as_poses", "fit_to_model", "pad_features", "poses_in_camera", "resize_depth", "resize_frames_uint8",
           "resize_rgb", "scale_intrinsics", "world_to_camera"]
