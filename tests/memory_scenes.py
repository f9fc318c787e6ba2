"""Analytic RGB-D test scene for the memory tests: a box room with a box obstacle, ray-cast in torch.

Exact depth and smoothly textured walls (so colour errors come from the map, not from aliasing).
Room: x in [0, 6], y in [0, 5], z in [0, 2.5] metres; obstacle box [3, 4] x [2, 3] x [0, 1].
Poses are camera-to-world (OpenCV camera), built with :func:`pewm.geometry.camera_pose_from_agent`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pewm.geometry import camera_pose_from_agent, camera_rays, intrinsics_from_fov

ROOM = ((0.0, 0.0, 0.0), (6.0, 5.0, 2.5))
BOX = ((3.0, 2.0, 0.0), (4.0, 3.0, 1.0))
CAMERA_HEIGHT = 1.25

# base colours of the 6 room faces (-x, +x, -y, +y, floor, ceiling) and the obstacle
_ROOM_COLORS = torch.tensor(
    [[0.85, 0.35, 0.30], [0.30, 0.70, 0.35], [0.30, 0.40, 0.85], [0.85, 0.80, 0.30], [0.55, 0.45, 0.35], [0.9, 0.9, 0.9]]
)
_BOX_COLOR = torch.tensor([0.75, 0.30, 0.80])


def intrinsics(size: int = 64, fov_deg: float = 90.0):
    return intrinsics_from_fov(size, size, fov_deg)


def pose(x: float, y: float, yaw_deg: float, height: float = CAMERA_HEIGHT, pitch_deg: float = 0.0) -> np.ndarray:
    return camera_pose_from_agent(x, y, math.radians(yaw_deg), height, math.radians(pitch_deg))


def _texture(p: torch.Tensor) -> torch.Tensor:
    """Smooth brightness pattern (period ~1 m) so that colour carries position information."""
    return 0.8 + 0.2 * torch.sin(2 * math.pi * (0.9 * p[..., 0] + 0.7 * p[..., 1] + 1.1 * p[..., 2]))


def render(K, cam_to_world, height: int, width: int, with_box: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the scene: ``(rgb uint8 (H, W, 3), depth float32 (H, W) z-depth in metres)``."""
    K = torch.as_tensor(np.asarray(K), dtype=torch.float64)
    T = torch.as_tensor(np.asarray(cam_to_world), dtype=torch.float64)
    r = camera_rays(K, height, width, dtype=torch.float64)  # (H, W, 3), unit z: t along it = z-depth
    d = r @ T[:3, :3].T
    o = T[:3, 3]
    lo, hi = torch.tensor(ROOM[0], dtype=torch.float64), torch.tensor(ROOM[1], dtype=torch.float64)
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t_lo, t_hi = (lo - o) / safe, (hi - o) / safe
    t_far = torch.maximum(t_lo, t_hi)  # exit distance per axis (camera is inside the room)
    t_room, axis = t_far.min(dim=-1)
    face = axis * 2 + (d.gather(-1, axis[..., None])[..., 0] > 0).long()  # 0/1 x, 2/3 y, 4/5 z
    t = t_room
    col = _ROOM_COLORS.double()[face]
    if with_box:
        blo, bhi = torch.tensor(BOX[0], dtype=torch.float64), torch.tensor(BOX[1], dtype=torch.float64)
        a, b = (blo - o) / safe, (bhi - o) / safe
        t_in = torch.minimum(a, b).max(dim=-1).values
        t_out = torch.maximum(a, b).min(dim=-1).values
        hit = (t_in < t_out) & (t_in > 1e-6) & (t_in < t)
        t = torch.where(hit, t_in, t)
        col = torch.where(hit[..., None], _BOX_COLOR.double(), col)
    p = o + d * t[..., None]
    rgb = (col * _texture(p)[..., None]).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8).numpy(), t.float().numpy()


def frames(poses, K, height: int, width: int, with_box: bool = True):
    """Stack rendered frames: ``(rgb (T, H, W, 3) uint8, depth (T, H, W) float32, poses (T, 4, 4))``."""
    out = [render(K, P, height, width, with_box) for P in poses]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), np.stack([np.asarray(P) for P in poses])


def look_around(x: float = 1.5, y: float = 1.5, n: int = 24, pitch_deg: float = 0.0) -> list[np.ndarray]:
    """``n`` poses turning on the spot (360 degrees)."""
    return [pose(x, y, 360.0 * i / n, pitch_deg=pitch_deg) for i in range(n)]


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) between images in [0, 1] over ``mask`` pixels."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
