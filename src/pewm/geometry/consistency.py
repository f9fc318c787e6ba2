"""Multi-view depth consistency: does frame ``a``'s depth, moved by the poses, agree with frame ``b``'s?

Used by the convention tests (which catch pose/frame off-by-one errors) and usable on any dataset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pewm.geometry.projection import _t, project_points, unproject_depth, valid_depth

if TYPE_CHECKING:
    import torch


def reprojection_depth_errors(depth_a, pose_a, depth_b, pose_b, K, max_depth: float | None = None,
                              edge_tolerance: float = 0.05, mask_a=None) -> torch.Tensor:
    """Relative depth errors ``|z_ab - d_b(uv)| / d_b(uv)`` of frame ``a``'s pixels seen in frame ``b``.

    Frame ``a``'s depth is unprojected with ``pose_a`` and projected into camera ``b``, giving the
    expected depth ``z_ab`` at sub-pixel position ``uv``; ``d_b(uv)`` is frame ``b``'s depth there,
    interpolated bilinearly in inverse depth (exact for planes). Only co-visible pixels count: the
    point lands inside ``b`` in front of the camera, and the four depths around ``uv`` agree within
    ``edge_tolerance`` (so depth edges, where interpolation is meaningless, are skipped). Occluded
    points are not removed: for small motions they are few and they only raise the median.
    ``mask_a`` (``H x W`` bool) restricts the test to some of frame ``a``'s pixels. Note that a
    horizontal floor or ceiling looks the same after any yaw or horizontal move of a level camera,
    so pose errors show only on other surfaces: mask floors and ceilings out to catch them.
    Returns a 1-D tensor of errors (empty if nothing is co-visible).
    """
    import torch  # on first use (see pewm.geometry.projection)
    import torch.nn.functional as F

    da = _t(depth_a).float()
    db = _t(depth_b).float()
    H, W = db.shape[-2:]
    pts = unproject_depth(da, K, _t(pose_a).double()).reshape(-1, 3)
    ok_a = valid_depth(da, max_depth)
    if mask_a is not None:
        ok_a = ok_a & _t(mask_a).bool()
    ok_a = ok_a.reshape(-1)
    uv, z = project_points(pts[ok_a], K, _t(pose_b).double())
    u, v = uv[:, 0].float(), uv[:, 1].float()
    inside = (z > 1e-3) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    u, v, z = u[inside], v[inside], z[inside].float()
    if u.numel() == 0:
        return torch.empty(0)
    inv_b = torch.where(valid_depth(db, max_depth), 1.0 / db.clamp_min(1e-6), torch.zeros_like(db))
    grid = torch.stack([u / (W - 1) * 2 - 1, v / (H - 1) * 2 - 1], dim=-1).view(1, 1, -1, 2)
    inv = F.grid_sample(inv_b.view(1, 1, H, W), grid, mode="bilinear", align_corners=True).view(-1)
    # the four neighbours must all be valid and agree (no depth edge inside the interpolation cell)
    u0, v0 = u.floor().long().clamp(0, W - 2), v.floor().long().clamp(0, H - 2)
    quad = torch.stack([inv_b[v0, u0], inv_b[v0, u0 + 1], inv_b[v0 + 1, u0], inv_b[v0 + 1, u0 + 1]], dim=-1)
    smooth = (quad.min(-1).values > 0) & (quad.max(-1).values <= quad.min(-1).values * (1 + edge_tolerance))
    d_b = 1.0 / inv[smooth]
    return (z[smooth] - d_b).abs() / d_b
