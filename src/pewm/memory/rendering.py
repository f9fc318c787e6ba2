"""Rendering a voxel map by soft z-buffered splatting of its surface points (NumPy on CPU, torch elsewhere)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pewm.memory._util import as_tensor
from pewm.memory.voxel_config import VoxelMapConfig


@dataclass
class RenderOutput:
    """A rendered view: ``image`` (B, C, H, W) float, ``depth`` (B, H, W) metres (0 where uncovered),
    ``mask`` (B, H, W) bool coverage. Unbatched calls drop the B axis."""

    image: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def _batched_camera(K, cam_to_world, device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    K = as_tensor(K, device=device, dtype=torch.float32)
    T = as_tensor(cam_to_world, device=device, dtype=torch.float32)
    batched = T.ndim == 3
    T = T.reshape(-1, 4, 4)
    K = K.reshape(-1, 3, 3).expand(T.shape[0], 3, 3)
    return K, T, batched


class _BlockIndex:
    """Render-time spatial index: points (V, 3) grouped into ``block`` m cubes, each with a bounding
    sphere, so a render can cull whole blocks against the view cone before projecting points.

    ``pad`` widens every sphere, so the index stays valid while points move by up to ``pad`` (a
    voxel's mean surface point never leaves its voxel: pad = the voxel diagonal); :meth:`extended`
    then reuses it for a grown map (see :func:`~pewm.memory.voxel_backend_numpy.grown_render_index`)."""

    def __init__(self, P: np.ndarray, block: float = 1.0, pad: float = 0.0):
        P = np.asarray(P, dtype=np.float32).reshape(-1, 3)
        self.n = P.shape[0]
        self.block, self.pad = block, pad
        if self.n == 0:
            self.pT = np.zeros((3, 0), np.float32)
            self.rows = self.starts = self.lengths = np.zeros(0, np.int64)
            self.centers, self.radii = np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
            return
        bk = np.floor(P / block).astype(np.int64)
        bk -= bk.min(axis=0)
        ext = bk.max(axis=0) + 1
        lin = (bk[:, 0] * ext[1] + bk[:, 1]) * ext[2] + bk[:, 2]
        order = np.argsort(lin, kind="stable")
        lin = lin[order]
        self.rows = order
        self.pT = np.ascontiguousarray(P[order].T)
        first = np.flatnonzero(np.r_[True, lin[1:] != lin[:-1]])
        self.starts = first
        self.lengths = np.diff(np.r_[first, self.n])
        lo = np.minimum.reduceat(self.pT, first, axis=1)
        hi = np.maximum.reduceat(self.pT, first, axis=1)
        self.centers = np.ascontiguousarray(((lo + hi) * 0.5).T)
        self.radii = (np.linalg.norm(hi - lo, axis=0) * 0.5 + 1e-4 + pad).astype(np.float32)

    def extended(self, P: np.ndarray) -> "_BlockIndex":
        """The index of ``P`` (V, 3), ``V >= self.n``, whose first ``self.n`` rows are the points this
        index was built on (moved by at most ``pad``): their blocks are kept (points refreshed), the
        new rows get blocks of their own. Costs a gather instead of a sort of the whole map."""
        P = np.asarray(P, dtype=np.float32).reshape(-1, 3)
        if P.shape[0] < self.n:
            raise ValueError(f"extended: {P.shape[0]} points, fewer than the {self.n} indexed")
        tail = _BlockIndex(P[self.n:], self.block, self.pad)
        out = object.__new__(_BlockIndex)
        out.n, out.block, out.pad = P.shape[0], self.block, self.pad
        out.rows = np.concatenate([self.rows, tail.rows + self.n])
        out.pT = np.ascontiguousarray(np.take(P, out.rows, axis=0).T)
        out.starts = np.concatenate([self.starts, tail.starts + self.n])
        out.lengths = np.concatenate([self.lengths, tail.lengths])
        out.centers = np.concatenate([self.centers, tail.centers])
        out.radii = np.concatenate([self.radii, tail.radii])
        return out


def render_torch(P, vals, Kb, Tb, batched: bool, height: int, width: int, cfg: VoxelMapConfig, device) -> RenderOutput:
    """Render ``vals`` (V, C) of points ``P`` (V, 3) from cameras ``Kb`` (B, 3, 3), ``Tb`` (B, 4, 4) with
    torch ops (any device); see :meth:`VoxelMap.render`."""
    B, C = Tb.shape[0], vals.shape[1]
    img = torch.zeros((B, C, height * width), device=device)
    dep = torch.zeros((B, height * width), device=device)
    msk = torch.zeros((B, height * width), dtype=torch.bool, device=device)
    for b in range(B):
        sp = splat_torch(P, Kb[b], Tb[b], height, width, cfg, device)
        if sp is None:
            continue
        pix, rows, w, depth, covered = sp
        img[b].index_add_(1, pix, vals[rows].T * w)
        dep[b] = depth
        msk[b] = covered
    img, dep, msk = img.view(B, C, height, width), dep.view(B, height, width), msk.view(B, height, width)
    if not batched:
        img, dep, msk = img[0], dep[0], msk[0]
    return RenderOutput(img, dep, msk)


def render_numpy(index: _BlockIndex, vals, Kb, Tb, batched: bool, height: int, width: int, cfg: VoxelMapConfig) -> RenderOutput:
    """CPU rendering in NumPy (single-threaded: robust on a shared 2-core machine)."""
    B, C = Tb.shape[0], vals.shape[1]
    HW = height * width
    img = np.zeros((B, C, HW), dtype=np.float32)
    dep = np.zeros((B, HW), dtype=np.float32)
    msk = np.zeros((B, HW), dtype=bool)
    vn = vals.numpy()
    for b in range(B):
        sp = splat_numpy(index, Kb[b].numpy(), Tb[b].numpy(), height, width, cfg)
        if sp is None:
            continue
        pix, rows, w, depth, covered = sp
        for c in range(C):
            img[b, c] = np.bincount(pix, weights=vn[rows, c] * w, minlength=HW)
        dep[b] = depth
        msk[b] = covered
    img_t = torch.from_numpy(img).view(B, C, height, width)
    dep_t = torch.from_numpy(dep).view(B, height, width)
    msk_t = torch.from_numpy(msk).view(B, height, width)
    if not batched:
        img_t, dep_t, msk_t = img_t[0], dep_t[0], msk_t[0]
    return RenderOutput(img_t, dep_t, msk_t)


def splat_numpy(index: _BlockIndex, K: np.ndarray, T: np.ndarray, H: int, W: int, cfg: VoxelMapConfig):
    """NumPy twin of :func:`splat_torch` (same splat maths) with two speed-ups: whole 1 m blocks of
    points outside the view cone are culled before any point is projected, and each voxel's
    footprint is expanded to exactly its pixels (ragged, no padding to the largest footprint)."""
    if index.n == 0:
        return None
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    s = max(cfg.voxel_size) * cfg.splat_scale * 0.5
    xlim = (max(cx, W - 1 - cx) + 0.5 + cfg.max_splat_px) / fx
    ylim = (max(cy, H - 1 - cy) + 0.5 + cfg.max_splat_px) / fy
    R = T[:3, :3].astype(np.float32)
    t = T[:3, 3].astype(np.float32)
    # blocks: camera-frame centres; a block is kept if its bounding sphere may reach the cone
    bc = (index.centers - t) @ R
    r = index.radii
    kx, ky = math.sqrt(1 + xlim * xlim), math.sqrt(1 + ylim * ylim)
    bvis = (bc[:, 2] > cfg.near - r) & (np.abs(bc[:, 0]) <= xlim * bc[:, 2] + s + r * kx) & (
        np.abs(bc[:, 1]) <= ylim * bc[:, 2] + s + r * ky
    )
    blocks = np.flatnonzero(bvis)
    if blocks.shape[0] == 0:
        return None
    st, ln = index.starts[blocks], index.lengths[blocks]
    if blocks.shape[0] == index.starts.shape[0]:
        cand = None
        X, Y, Z = index.pT
    else:
        tot = int(ln.sum())
        cand = np.repeat(st - np.cumsum(ln) + ln, ln) + np.arange(tot)
        X, Y, Z = np.take(index.pT, cand, axis=1)
    X = X - t[0]
    Y = Y - t[1]
    Z = Z - t[2]
    px = X * R[0, 0] + Y * R[1, 0] + Z * R[2, 0]
    py = X * R[0, 1] + Y * R[1, 1] + Z * R[2, 1]
    z = X * R[0, 2] + Y * R[1, 2] + Z * R[2, 2]
    vis = (z > cfg.near) & (np.abs(px) <= xlim * z + s) & (np.abs(py) <= ylim * z + s)
    idx = np.flatnonzero(vis)
    if idx.shape[0] == 0:
        return None
    px, py, z = px[idx], py[idx], z[idx]
    rows_all = index.rows[idx] if cand is None else index.rows[cand[idx]]
    iz = 1.0 / z
    u = fx * px * iz + cx
    v = fy * py * iz + cy
    hx = np.clip(fx * s * iz, 0.5, cfg.max_splat_px)
    hy = np.clip(fy * s * iz, 0.5, cfg.max_splat_px)
    u0, v0 = np.ceil(u - hx), np.ceil(v - hy)
    nu = np.maximum(np.floor(u + hx) - u0 + 1, 1).astype(np.int64)
    nv = np.maximum(np.floor(v + hy) - v0 + 1, 1).astype(np.int64)
    # clip each footprint to the image first, so only in-image pixels are expanded
    c0 = np.maximum(u0, 0).astype(np.int64)
    r0 = np.maximum(v0, 0).astype(np.int64)
    c1 = np.minimum(u0.astype(np.int64) + nu, W)
    r1 = np.minimum(v0.astype(np.int64) + nv, H)
    mu, mv = c1 - c0, r1 - r0
    ok = (mu > 0) & (mv > 0)
    if not ok.all():
        sel = np.flatnonzero(ok)
        if sel.shape[0] == 0:
            return None
        u, v, z, c0, r0, mu, mv, hx, hy, rows_all = (a[sel] for a in (u, v, z, c0, r0, mu, mv, hx, hy, rows_all))
    n = mu * mv
    tot = int(n.sum())
    j = np.repeat(np.arange(n.shape[0]), n)
    o = np.arange(tot) - np.repeat(np.cumsum(n) - n, n)
    muj = mu[j]
    oy = o // muj
    col = c0[j] + (o - oy * muj)
    row = r0[j] + oy
    ax = 1.0 / (hx + 0.5)
    ay = 1.0 / (hy + 0.5)
    w = np.maximum(1 - np.abs(col - u[j]) * ax[j], 0.05) * np.maximum(1 - np.abs(row - v[j]) * ay[j], 0.05)
    pix = row * W + col
    zc = z[j]
    zmin = np.full(H * W, np.inf, dtype=np.float32)
    np.minimum.at(zmin, pix, zc)
    zp = zmin[pix]
    keep = np.flatnonzero(zc <= zp + cfg.blend_tol_abs + cfg.blend_tol_rel * zp)
    pix, j, w, zc = pix[keep], j[keep], w[keep], zc[keep]
    wsum = np.bincount(pix, weights=w, minlength=H * W)
    covered = wsum > 0
    w = w / wsum[pix]
    depth = np.bincount(pix, weights=w * zc, minlength=H * W).astype(np.float32)
    return pix, rows_all[j], w, depth, covered


def splat_torch(P: torch.Tensor, K: torch.Tensor, T: torch.Tensor, H: int, W: int, cfg: VoxelMapConfig, device):
    """Soft z-buffer splat of points ``P`` (V, 3).

    Returns ``(pix, rows, w, depth, covered)``: for each kept (pixel, voxel) pair its flat pixel
    index, voxel storage row and normalised blend weight, plus the (H*W,) depth and coverage.
    """
    if P.shape[0] == 0:
        return None
    # same maths as pewm.geometry.project_points (R^T (p - t), then K), as one addmm: the batched
    # einsum there is ~5x slower for a single camera and this is the hot loop of rendering
    R, t = T[:3, :3], T[:3, 3]
    pc = torch.addmm(-(t @ R), P, R)
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    s = max(cfg.voxel_size) * cfg.splat_scale * 0.5
    z = pc[:, 2]
    # cull with a conservative cone test before the per-point divisions
    xlim = (max(cx, W - 1 - cx) + 0.5 + cfg.max_splat_px) / fx
    ylim = (max(cy, H - 1 - cy) + 0.5 + cfg.max_splat_px) / fy
    vis = (z > cfg.near) & (pc[:, 0].abs() <= xlim * z + s) & (pc[:, 1].abs() <= ylim * z + s)
    idx = vis.nonzero().squeeze(1)
    if idx.numel() == 0:
        return None
    pc = pc[idx]
    z = pc[:, 2]
    u = fx * pc[:, 0] / z + cx
    v = fy * pc[:, 1] / z + cy
    hx = (fx * s / z).clamp(0.5, cfg.max_splat_px)
    hy = (fy * s / z).clamp(0.5, cfg.max_splat_px)
    u0, v0 = torch.ceil(u - hx), torch.ceil(v - hy)
    nu = (torch.floor(u + hx) - u0 + 1).clamp_min(1)
    nv = (torch.floor(v + hy) - v0 + 1).clamp_min(1)
    S_u, S_v = int(nu.max()), int(nv.max())
    ox = torch.arange(S_u, device=device, dtype=u.dtype).repeat(S_v)
    oy = torch.arange(S_v, device=device, dtype=u.dtype).repeat_interleave(S_u)
    j, o = ((ox < nu[:, None]) & (oy < nv[:, None])).nonzero(as_tuple=True)
    # one gather of every per-voxel quantity the candidates need (gathers dominate the cost)
    a = torch.stack([u0, v0, u, v, 1.0 / (hx + 0.5), 1.0 / (hy + 0.5), z], dim=1)[j]
    col, row = a[:, 0] + ox[o], a[:, 1] + oy[o]
    ins = ((col >= 0) & (col < W) & (row >= 0) & (row < H)).nonzero().squeeze(1)
    if ins.numel() == 0:
        return None
    a, j, col, row = a[ins], j[ins], col[ins], row[ins]
    w = (1 - (col - a[:, 2]).abs() * a[:, 4]).clamp_min(0.05) * (1 - (row - a[:, 3]).abs() * a[:, 5]).clamp_min(0.05)
    pix = (row * W + col).long()
    zc = a[:, 6]
    zmin = torch.full((H * W,), math.inf, device=device).scatter_reduce_(0, pix, zc, "amin")
    zp = zmin[pix]
    keep = (zc <= zp + cfg.blend_tol_abs + cfg.blend_tol_rel * zp).nonzero().squeeze(1)
    pix, j, w, zc = pix[keep], j[keep], w[keep], zc[keep]
    wsum = torch.zeros(H * W, device=device).index_add_(0, pix, w)
    covered = wsum > 0
    w = w / wsum[pix]
    depth = torch.zeros(H * W, device=device).index_add_(0, pix, w * zc)
    return pix, idx[j], w, depth, covered
