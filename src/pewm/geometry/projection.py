"""Unprojecting depth to world points and projecting world points into a camera (PyTorch, batched).

Depth is metric z-depth (distance along the optical axis). Pixel ``(row, col)`` has image
coordinates ``(u, v) = (col, row)`` (OpenCV: integer coordinates at pixel centres).

torch is imported inside the functions (the first call loads it), so that ``pewm.geometry`` and
the packages above it that need no tensors (``pewm.data``, ``pewm data info``) start without it
(``tests/test_startup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def _t(x, like: torch.Tensor | None = None, dtype=None) -> torch.Tensor:
    import torch

    if isinstance(x, torch.Tensor):
        t = x
    else:
        t = torch.as_tensor(np.asarray(x))
    if like is not None:
        t = t.to(device=like.device, dtype=dtype or like.dtype)
    elif dtype is not None:
        t = t.to(dtype)
    return t


def pixel_grid(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """Homogeneous pixel coordinates ``(H, W, 3)`` with ``[..., 0] = u = col`` and ``[..., 1] = v = row``
    (``dtype`` default float32)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([u, v, torch.ones_like(u)], dim=-1)


def camera_rays(K, height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """Camera-frame ray directions ``K^-1 [u, v, 1]`` with unit z, shape ``(..., H, W, 3)``
    (``dtype`` default float32).

    Multiplying by z-depth gives the camera-frame point.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    K = _t(K, dtype=dtype).to(device) if device is not None else _t(K, dtype=dtype)
    pix = pixel_grid(height, width, device=K.device, dtype=dtype)
    Kinv = torch.linalg.inv(K)
    return torch.einsum("...ij,hwj->...hwi", Kinv, pix)


def unproject_depth(depth, K, cam_to_world) -> torch.Tensor:
    """World points ``(..., H, W, 3)`` for a z-depth map ``(..., H, W)``.

    ``K`` is ``(..., 3, 3)`` and ``cam_to_world`` ``(..., 4, 4)``; leading dims broadcast.
    Invalid depth (0, NaN, inf) gives points that callers should mask with :func:`valid_depth`.
    """
    import torch

    depth = _t(depth)
    if not depth.is_floating_point():
        depth = depth.float()
    K = _t(K, like=depth)
    T = _t(cam_to_world, like=depth)
    H, W = depth.shape[-2:]
    rays = camera_rays(K, H, W, device=depth.device, dtype=depth.dtype)  # (..., H, W, 3)
    p_cam = rays * depth[..., None]
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    return torch.einsum("...ij,...hwj->...hwi", R, p_cam) + t[..., None, None, :]


def valid_depth(depth, max_depth: float | None = None) -> torch.Tensor:
    """Mask of usable depth: finite, positive and (optionally) at most ``max_depth``."""
    import torch

    depth = _t(depth)
    ok = torch.isfinite(depth) & (depth > 0)
    if max_depth is not None:
        ok &= depth <= max_depth
    return ok


def project_points(points_world, K, cam_to_world) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points ``(..., N, 3)`` into a camera.

    Returns ``(uv, z)``: pixel coordinates ``(..., N, 2)`` (``u = col``, ``v = row``) and camera
    z-depth ``(..., N)``. Points behind the camera have ``z <= 0``; callers mask them.
    """
    import torch

    p = _t(points_world)
    if not p.is_floating_point():
        p = p.float()
    K = _t(K, like=p)
    T = _t(cam_to_world, like=p)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    p_cam = torch.einsum("...ji,...nj->...ni", R, p - t[..., None, :])  # R^T (p - t)
    z = p_cam[..., 2]
    pix = torch.einsum("...ij,...nj->...ni", K, p_cam)
    safe_z = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
    uv = pix[..., :2] / safe_z[..., None]
    return uv, z
