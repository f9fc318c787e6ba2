"""Rigid transforms and camera poses.

Poses are camera-to-world 4x4 matrices ``T_wc`` mapping camera-frame points to world points:
``p_world = R @ p_cam + t``. The camera frame is OpenCV's (x right, y down, z forward); the world
frame has z up.
"""

from __future__ import annotations

import numpy as np


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build a 4x4 pose from a rotation ``R`` (3x3) and translation ``t`` (3,). Batched over leading dims."""
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (batched)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    return make_pose(Rt, -(Rt @ t[..., None])[..., 0])


def relative_pose(T_a: np.ndarray, T_b: np.ndarray) -> np.ndarray:
    """Pose of camera ``b`` expressed in the frame of camera ``a``: ``inv(T_a) @ T_b``.

    ``T_a @ relative_pose(T_a, T_b) == T_b``.
    """
    return invert_pose(T_a) @ np.asarray(T_b, dtype=np.float64)


def check_pose(T: np.ndarray, what: str = "pose", atol: float = 1e-4) -> np.ndarray:
    """Validate shape ``(..., 4, 4)``, a proper rotation block and a ``[0, 0, 0, 1]`` last row."""
    T = np.asarray(T, dtype=np.float64)
    if T.ndim < 2 or T.shape[-2:] != (4, 4):
        raise ValueError(f"{what} must have shape (..., 4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{what} contains NaN or inf")
    R = T[..., :3, :3]
    err = np.abs(R @ np.swapaxes(R, -1, -2) - np.eye(3)).max() if R.size else 0.0
    if err > atol:
        raise ValueError(f"{what} rotation block is not orthonormal (max error {err:.2e})")
    if R.size and np.any(np.linalg.det(R) < 0):
        raise ValueError(f"{what} rotation block has determinant -1 (a reflection)")
    if np.abs(T[..., 3, :] - np.array([0, 0, 0, 1.0])).max(initial=0.0) > atol:
        raise ValueError(f"{what} last row must be [0, 0, 0, 1]")
    return T


def quaternion_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix from a unit quaternion in ``(qx, qy, qz, qw)`` order (TUM's order). Batched."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-12):
        raise ValueError("quaternion_to_matrix: zero-norm quaternion")
    x, y, z, w = np.moveaxis(q / n, -1, 0)
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return R.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(qx, qy, qz, qw)`` with ``qw >= 0`` from a rotation matrix (single 3x3)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = np.array([0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s])
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = np.array([(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = np.array([(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s])
    q = q / np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def camera_rotation_from_heading(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """OpenCV camera-to-world rotation for a camera looking along heading ``yaw`` (radians, from
    world +x towards +y, i.e. counter-clockwise seen from above) and tilted down by ``pitch`` radians.

    Columns are the camera axes in world coordinates: x (right), y (down), z (forward).
    """
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    forward = np.array([cy * cp, sy * cp, -sp])
    right = np.array([sy, -cy, 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def camera_pose_from_agent(x: float, y: float, yaw: float, height: float, pitch: float = 0.0) -> np.ndarray:
    """Camera-to-world pose of a camera at ``(x, y, height)`` looking along ``yaw`` (see above)."""
    return make_pose(camera_rotation_from_heading(yaw, pitch), np.array([x, y, height], dtype=np.float64))


def heading_of_pose(T: np.ndarray) -> np.ndarray:
    """Yaw (radians) of the camera's forward axis projected on the ground plane. Batched."""
    T = np.asarray(T, dtype=np.float64)
    fwd = T[..., :3, 2]
    return np.arctan2(fwd[..., 1], fwd[..., 0])
