"""Which map tokens each latent cell of a view may attend to: the ``cell_tokens`` option of the
``voxel-xattn`` reader (a locality toward each query's ray, beyond the paper's §3.3, which lets the
attention learn where to look at a scale this CPU does not have).

Every map token (a voxel centre) is projected into every view of the clip (the current frame and the
H targets) and splatted over the latent cells its voxel's footprint overlaps. Per cell, the ``k``
nearest tokens are kept, and only those within ``margin`` (relative) plus one voxel of the cell's
nearest: a z-buffer with a few layers, so a query reads the surface its cell shows and not what the
surface hides. Each kept (cell, token) pair also gets its geometry in that view, ``log z``, and the
offset of the token's projection from the cell centre (in cells): the relative position the
attention adds to the pair's key and value (relative position representations, Shaw et al. 2018).

Pure functions of the token centres, poses and intrinsics; no weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_SPLAT_CELLS = 2
"""A voxel's footprint is splatted at most this many cells away from its projection."""
NEAR_M = 0.05
"""Tokens nearer than this (z, metres) to a view's camera are not in it."""
PAIR_FEATURES = 3
"""Geometry channels per (cell, token) pair: log z, du, dv."""


@dataclass
class CellLists:
    """``index`` ``(V, cells, k)`` long: rows of :attr:`tokens` each cell of each view may attend to,
    nearest first, -1 where none; ``geometry`` ``(V, cells, k, 3)``: log z-depth (metres) of the
    token in that view and the offset (du, dv) of its projection from the cell centre, in cells (0
    where ``index`` is -1); ``tokens`` ``(M,)`` long: the input rows referenced, in the order
    ``index`` numbers them (rows nearer the front of some cell first)."""

    index: torch.Tensor
    geometry: torch.Tensor
    tokens: torch.Tensor


def cell_token_lists(
    centers: torch.Tensor,
    poses: torch.Tensor,
    K: torch.Tensor,
    image_hw: tuple[int, int],
    grid_hw: tuple[int, int],
    voxel: float,
    k: int,
    margin: float = 0.1,
    max_tokens: int | None = None,
) -> CellLists:
    """Cell lists of the tokens at world ``centers`` ``(N, 3)`` for the views ``poses`` ``(V, 4, 4)``
    (camera-to-world, OpenCV axes) with intrinsics ``K`` ``(3, 3)`` at ``image_hw`` pixels, divided
    into ``grid_hw`` latent cells; ``voxel`` (m) is the token's voxel edge (its footprint). At most
    ``max_tokens`` distinct tokens are referenced: when more would be, the tokens whose best rank in
    any cell is lowest are kept (a token in front of some cell before one that is only a second
    layer), ties by first view, then by row."""
    if k < 1:
        raise ValueError(f"cell_token_lists: k must be >= 1, got {k}")
    centers = torch.as_tensor(centers, dtype=torch.float64).reshape(-1, 3)
    poses = torch.as_tensor(poses, dtype=torch.float64).reshape(-1, 4, 4)
    K = torch.as_tensor(K, dtype=torch.float64).reshape(3, 3)
    V, N = poses.shape[0], centers.shape[0]
    gh, gw = grid_hw
    cells = gh * gw
    sy, sx = image_hw[0] / gh, image_hw[1] / gw
    index = torch.full((V, cells, k), -1, dtype=torch.long)
    geometry = torch.zeros(V, cells, k, PAIR_FEATURES, dtype=torch.float32)
    if N == 0:
        return CellLists(index, geometry, torch.zeros(0, dtype=torch.long))

    R, t = poses[:, :3, :3], poses[:, :3, 3]
    p = torch.einsum("vji,vnj->vni", R, centers[None] - t[:, None])  # R^T (c - t): (V, N, 3)
    z = p[..., 2]
    zs = z.clamp_min(NEAR_M)
    u = (K[0, 0] * p[..., 0] / zs + K[0, 2]) / sx  # in cells
    v = (K[1, 1] * p[..., 1] / zs + K[1, 2]) / sy
    m = MAX_SPLAT_CELLS
    near = (z > NEAR_M) & (u > -m - 1) & (u < gw + m + 1) & (v > -m - 1) & (v < gh + m + 1)
    vi, ni = near.nonzero(as_tuple=True)
    z, u, v = z[vi, ni], u[vi, ni], v[vi, ni]
    r = (0.5 * voxel * max(K[0, 0].item() / sx, K[1, 1].item() / sy) / z).clamp(max=m)  # half footprint, cells
    off = torch.arange(-m, m + 1, dtype=torch.float64)
    cx = (u.floor()[:, None, None] + off[None, None, :]).expand(-1, off.numel(), -1)  # (E, O, O)
    cy = (v.floor()[:, None, None] + off[None, :, None]).expand(-1, -1, off.numel())
    du = u[:, None, None] - (cx + 0.5)
    dv = v[:, None, None] - (cy + 0.5)
    reach = (r + 0.5)[:, None, None]
    keep = (du.abs() <= reach) & (dv.abs() <= reach) & (cx >= 0) & (cx < gw) & (cy >= 0) & (cy < gh)
    e, oy, ox = keep.nonzero(as_tuple=True)
    ev, en, ez = vi[e], ni[e], z[e]
    cell = (cy[e, oy, ox] * gw + cx[e, oy, ox]).long()
    edu, edv = du[e, oy, ox], dv[e, oy, ox]
    if e.numel() == 0:
        return CellLists(index, geometry, torch.zeros(0, dtype=torch.long))

    # group by (view, cell), nearest first (stable: ties by token row)
    group = ev * cells + cell
    order = torch.sort(ez, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    group, ez = group[order], ez[order]
    _, counts = torch.unique_consecutive(group, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    first = starts.repeat_interleave(counts)
    rank = torch.arange(group.numel()) - first
    front = ez[first]
    sel = (rank < k) & (ez <= front * (1.0 + margin) + voxel)
    order, group, rank, ez = order[sel], group[sel], rank[sel], ez[sel]
    en = en[order]

    # which tokens are referenced, best (lowest) rank first
    best = torch.full((N,), k, dtype=torch.long).scatter_reduce(0, en, rank, reduce="amin")
    first_view = torch.full((N,), V, dtype=torch.long).scatter_reduce(0, en, ev[order], reduce="amin")
    used = (best < k).nonzero(as_tuple=True)[0]
    key = (best[used] * (V + 1) + first_view[used]) * (N + 1) + used
    used = used[torch.sort(key).indices]
    if max_tokens is not None and used.numel() > max_tokens:
        used = used[:max_tokens]
    new_id = torch.full((N,), -1, dtype=torch.long)
    new_id[used] = torch.arange(used.numel())
    tid = new_id[en]
    ok = tid >= 0
    gv, gc = (group // cells)[ok], (group % cells)[ok]
    slot = rank[ok]
    index[gv, gc, slot] = tid[ok]
    geo = torch.stack([ez[ok].log(), edu[order][ok], edv[order][ok]], dim=-1)
    geometry[gv, gc, slot] = geo.float()
    return CellLists(index, geometry, used)


def head_cells(grid: tuple[int, int], patch: int, heads: int) -> torch.Tensor:
    """``(heads, tokens_per_frame)`` long: the latent cell (row-major in the frame's
    ``grid[0] * patch`` x ``grid[1] * patch`` cells) that head ``h`` of each query token reads:
    cell ``h mod patch^2`` of the token's ``patch x patch`` block, row-major (the denoiser's
    patchify order); with fewer heads than cells, cell ``h * patch^2 // heads`` (spread over the
    block, some cells unread)."""
    r, c = grid
    gw = c * patch
    ri = torch.arange(r)[:, None].expand(r, c).reshape(-1)
    cj = torch.arange(c)[None, :].expand(r, c).reshape(-1)
    out = torch.empty(heads, r * c, dtype=torch.long)
    cells = patch * patch
    for h in range(heads):
        dy, dx = divmod(h % cells if heads >= cells else h * cells // heads, patch)
        out[h] = (ri * patch + dy) * gw + cj * patch + dx
    return out


__all__ = ["CellLists", "MAX_SPLAT_CELLS", "NEAR_M", "PAIR_FEATURES", "cell_token_lists", "head_cells"]
