"""Input checks at the world model's public entry points (``WorldModel.generate``, ``rollout``,
``WorldModelEnv``): each error names its argument and the expected shape. After these checks the
model works on torch tensors only; nothing is validated twice.

Conventions: ``rgb`` uint8 channel-last ``(B, h, w, 3)`` (or float channel-first ``(B, 3, h, w)`` in
``[0, 1]`` for :func:`check_rgb`), ``depth`` metric z-depth ``(B, h, w)``, poses camera-to-world
``(B, 4, 4)`` float64, ``K`` at the model's resolution, ``actions[t]`` moves frame ``t`` to ``t + 1``,
future ``poses[t]`` is the camera-to-world pose of frame ``t + 1`` (the alternative to actions).

Field of view: the model was trained on one camera (pewm's simulator renders a 90 degree vertical
field of view); :func:`check_K` refuses intrinsics whose vertical field of view at the model's
resolution lies outside :data:`FOV_RANGE_DEG` unless the caller passes ``allow_any_fov=True``.
"""

from __future__ import annotations

import numpy as np
import torch

from pewm.geometry import Action, ActionConfig, check_pose, intrinsics_matrix, poses_from_actions

TRAINING_FOV_DEG = 90.0  # the vertical field of view pewm's simulator renders (pewm data generate --fov)
FOV_RANGE_DEG = (40.0, 135.0)  # vertical fields of view check_K accepts (TUM ~50, ScanNet ~45 pass)


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_rgb(rgb, hw: tuple[int, int], name: str = "current_rgb") -> torch.Tensor:
    """``(B, h, w, 3)`` uint8 or ``(B, 3, h, w)`` float (a single frame gets a batch axis) ->
    ``(B, 3, h, w)`` float32 in ``[0, 1]``."""
    x = torch.as_tensor(rgb)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be (B, h, w, 3) uint8 or (B, 3, h, w) float; got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise ValueError(f"{name}: uint8 images must be channel-last (B, h, w, 3); got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255.0
    elif x.is_floating_point():
        if x.shape[1] != 3:
            raise ValueError(f"{name}: float images must be channel-first (B, 3, h, w); got {tuple(x.shape)}")
        x = x.float()
    else:
        raise ValueError(f"{name} must be uint8 or float, got {x.dtype}")
    if tuple(x.shape[-2:]) != tuple(hw):
        raise ValueError(f"{name} has resolution {x.shape[-2]}x{x.shape[-1]} (h x w), but the model expects "
                         f"{hw[0]}x{hw[1]}")
    return x


def check_depth(depth, B: int, hw: tuple[int, int], name: str = "current_depth") -> torch.Tensor:
    """Metric z-depth as ``(B, h, w)`` float32 (a single frame gets a batch axis)."""
    d = torch.as_tensor(to_numpy(depth) if not isinstance(depth, torch.Tensor) else depth)
    if d.ndim == 2:
        d = d[None]
    if tuple(d.shape) != (B, *hw):
        raise ValueError(f"{name} has shape {tuple(d.shape)}, expected ({B}, {hw[0]}, {hw[1]}) metric z-depth")
    return d.float()


def vertical_fov_deg(K: np.ndarray, height: int) -> np.ndarray:
    """Vertical field of view in degrees of ``K`` ``(..., 3, 3)`` for images ``height`` pixels high."""
    fy = np.asarray(K, dtype=np.float64)[..., 1, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.degrees(2.0 * np.arctan(height / (2.0 * fy)))


def check_fov(K: np.ndarray, hw: tuple[int, int], name: str = "K") -> None:
    """Raise ``ValueError`` (naming ``name``) when a camera of ``K`` ``(3, 3)`` / ``(B, 3, 3)`` at the
    model's resolution ``hw`` has a vertical field of view outside :data:`FOV_RANGE_DEG`."""
    k = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
    fov = vertical_fov_deg(k, hw[0])
    lo, hi = FOV_RANGE_DEG
    bad = ~((fov >= lo) & (fov <= hi))  # NaN (fy <= 0) is bad too
    if bad.any():
        i = int(np.argmax(bad))
        where = name if k.shape[0] == 1 else f"{name}[{i}]"
        raise ValueError(
            f"{where}: vertical field of view {fov[i]:.1f} deg (fy={k[i, 1, 1]:.4g} px at {hw[0]}x{hw[1]}) is outside "
            f"the {lo:.0f}-{hi:.0f} deg the model accepts (pewm's simulator and the shipped model use "
            f"{TRAINING_FOV_DEG:.0f} deg, pewm data generate --fov); check the intrinsics are for the model's resolution, "
            "or pass allow_any_fov=True (--allow-any-fov) to generate anyway"
        )


def check_K(K, B: int, hw: tuple[int, int], allow_any_fov: bool = False) -> np.ndarray:
    """Intrinsics at the model's resolution (:class:`~pewm.geometry.Intrinsics`, ``(3, 3)`` or
    ``(B, 3, 3)``) as ``(B, 3, 3)`` float64; the field of view is checked (:func:`check_fov`)
    unless ``allow_any_fov``."""
    k = intrinsics_matrix(K, *hw)
    if k.shape not in ((3, 3), (B, 3, 3)):
        raise ValueError(f"K has shape {k.shape}, expected (3, 3) or ({B}, 3, 3)")
    if not allow_any_fov:
        check_fov(k, hw)
    return np.array(np.broadcast_to(k, (B, 3, 3)), dtype=np.float64, copy=True)


def check_start(rgb, depth, pose, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Start frames of rollouts as ``rgb`` ``(B, h, w, 3)`` uint8, ``depth`` ``(B, h, w)`` float32 (CPU
    tensors) and ``pose`` ``(B, 4, 4)`` float64; unbatched single frames get a batch axis."""
    h, w = hw
    r = torch.as_tensor(to_numpy(rgb))
    if r.ndim == 3:
        r = r[None]
    if r.ndim != 4 or r.dtype != torch.uint8 or r.shape[-1] != 3:
        raise ValueError(f"rgb must be (B, h, w, 3) uint8, got shape {tuple(r.shape)} dtype {r.dtype}")
    if tuple(r.shape[1:3]) != (h, w):
        raise ValueError(f"rgb has resolution {r.shape[1]}x{r.shape[2]} (h x w), the model expects {h}x{w}")
    B = r.shape[0]
    d = torch.as_tensor(to_numpy(depth), dtype=torch.float32)
    if d.ndim == 2:
        d = d[None]
    if tuple(d.shape) != (B, h, w):
        raise ValueError(f"depth has shape {tuple(d.shape)}, expected ({B}, {h}, {w}) metric z-depth (B from rgb)")
    p = to_numpy(pose).astype(np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.shape != (B, 4, 4):
        raise ValueError(f"pose has shape {p.shape}, expected ({B}, 4, 4) camera-to-world (B from rgb)")
    return r.contiguous(), d.contiguous(), check_pose(p, "pose")


def check_actions(actions, B: int, max_len: int | None = None, name: str = "actions") -> np.ndarray:
    """Action ids as ``(B, T)`` int64 (a ``(T,)`` sequence is used for every rollout)."""
    a = to_numpy(actions)
    given = a.shape
    if a.ndim == 1:
        a = np.broadcast_to(a, (B, a.shape[0]))
    if a.ndim != 2 or a.shape[0] != B or a.shape[1] < 1:
        raise ValueError(
            f"{name} has shape {given}, expected (B={B}, T) with T >= 1 (actions[t] moves frame t to t + 1)"
        )
    if max_len is not None and a.shape[1] > max_len:
        raise ValueError(f"{name} has {a.shape[1]} actions per rollout, at most {max_len} (one chunk of H frames)")
    try:
        return np.ascontiguousarray(Action.check(a))
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def check_poses(poses, B: int, max_len: int | None = None, name: str = "poses") -> np.ndarray:
    """Future camera-to-world poses as ``(B, T, 4, 4)`` float64 (a ``(T, 4, 4)`` sequence is used for
    every rollout); ``poses[:, t]`` is the pose of frame ``t + 1`` (frame 0 = the start frame)."""
    p = to_numpy(poses)
    given = p.shape
    if p.ndim == 3:
        p = np.broadcast_to(p, (B,) + p.shape)
    if p.ndim != 4 or p.shape[0] != B or p.shape[1] < 1 or p.shape[2:] != (4, 4):
        raise ValueError(
            f"{name} has shape {given}, expected (B={B}, T, 4, 4) with T >= 1: camera-to-world poses of the future "
            f"frames ({name}[:, t] is frame t + 1)"
        )
    if max_len is not None and p.shape[1] > max_len:
        raise ValueError(f"{name} has {p.shape[1]} poses per rollout, at most {max_len} (one chunk of H frames)")
    return np.ascontiguousarray(check_pose(p, name))


def clip_poses(current_pose, actions, poses, B: int, H: int, action_config: ActionConfig) -> torch.Tensor:
    """``(B, 1 + H, 4, 4)`` float64 camera-to-world poses of a chunk: the current pose, then the
    ``H`` future poses given as exactly one of ``actions`` ``(H,)`` / ``(B, H)`` or ``poses``
    ``(H, 4, 4)`` / ``(B, H, 4, 4)``."""
    T0 = torch.as_tensor(to_numpy(current_pose))
    given = tuple(T0.shape)
    if T0.ndim == 2 and given == (4, 4):
        T0 = T0[None].expand(B, 4, 4)
    if tuple(T0.shape) != (B, 4, 4):
        raise ValueError(f"current_pose has shape {given}, expected (4, 4) or ({B}, 4, 4)")
    T0 = check_pose(T0.double().numpy(), "current_pose")
    if (actions is None) == (poses is None):
        raise ValueError("generate: give exactly one of actions=... or poses=...")
    if actions is not None:
        a = to_numpy(actions)
        given = a.shape
        if a.ndim == 1:
            a = np.broadcast_to(a, (B, a.shape[0]))
        if a.ndim != 2 or a.shape != (B, H):
            raise ValueError(
                f"actions has shape {given}, expected ({H},) or ({B}, {H}): one action per future frame "
                "(actions[t] moves frame t to frame t + 1)"
            )
        a = Action.check(a)
        fut = np.stack([poses_from_actions(T0[b], a[b], action_config)[1:] for b in range(B)])
    else:
        given = to_numpy(poses).shape
        if len(given) not in (3, 4) or given[-3] != H:
            raise ValueError(
                f"poses has shape {given}, expected ({H}, 4, 4) or ({B}, {H}, 4, 4): camera-to-world poses "
                "of the future frames"
            )
        fut = check_poses(poses, B, name="poses")
    return torch.from_numpy(np.concatenate([T0[:, None], fut], axis=1))


__all__ = ["FOV_RANGE_DEG", "TRAINING_FOV_DEG", "check_K", "check_actions", "check_depth", "check_fov", "check_poses",
           "check_rgb", "check_start", "clip_poses", "to_numpy", "vertical_fov_deg"]
