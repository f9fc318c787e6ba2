"""Plücker ray embedding of a camera (paper §3.2, "action conditioning").

Each pixel gets the 6-vector ``(o x d, d)`` where ``o`` is the camera centre and ``d`` the unit
direction of the pixel's ray, both in the reference frame of ``cam_to_world``. The moment ``o x d``
is the same for every point on the ray, so the embedding describes the ray, not a point on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pewm.geometry.projection import _t, camera_rays

if TYPE_CHECKING:
    import torch


def plucker_rays(K, cam_to_world, height: int, width: int) -> torch.Tensor:
    """Plücker embedding ``(..., 6, H, W)``: channels 0-2 are the moment ``o x d``, 3-5 the direction ``d``."""
    import torch  # on first use (see pewm.geometry.projection)

    T = _t(cam_to_world)
    if not T.is_floating_point():
        T = T.float()
    K = _t(K, like=T)
    rays = camera_rays(K, height, width, device=T.device, dtype=T.dtype)  # (..., H, W, 3), camera frame
    R = T[..., :3, :3]
    o = T[..., :3, 3]
    d = torch.einsum("...ij,...hwj->...hwi", R, rays)
    d = d / d.norm(dim=-1, keepdim=True)
    o = o[..., None, None, :].expand_as(d)
    m = torch.cross(o, d, dim=-1)
    return torch.cat([m, d], dim=-1).movedim(-1, -3)
