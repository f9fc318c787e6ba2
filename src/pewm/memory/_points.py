"""The valid points of a batch of RGB-D frames, unprojected once and shared by the maps that fuse them."""

from __future__ import annotations

import numpy as np
import torch

from pewm.geometry import camera_rays, unproject_depth, valid_depth
from pewm.memory._util import as_tensor, rgb_to_bchw_float

_RAYS: dict[tuple, np.ndarray] = {}


def _rays_t(K: torch.Tensor, H: int, W: int) -> np.ndarray:
    """(3, H*W) float32 camera rays of ``pewm.geometry.camera_rays`` (cached per intrinsics)."""
    key = (K.numpy().tobytes(), H, W)
    r = _RAYS.get(key)
    if r is None:
        if len(_RAYS) > 64:
            _RAYS.clear()
        r = _RAYS[key] = np.ascontiguousarray(camera_rays(K, H, W).reshape(-1, 3).numpy().T)
    return r


class _PointBatch:
    """The valid points of a batch of RGB-D frames, unprojected once and shared by several maps.

    ``sel`` (N,) flat (b, h, w) indices of valid pixels (frame-major, ascending), world points
    (``pts`` (N, 3) torch / ``points_t()`` (3, N) NumPy on CPU), ``steps`` (B,) int64 or None (each
    map then uses its own frame counter); colours are computed on first use and cached.

    On CPU the unprojection is NumPy, written to round exactly like
    :func:`pewm.geometry.unproject_depth` (``rays * z`` then ``(x R0 + y R1) + z R2 + t`` without
    fused multiply-adds), so both give the same voxels.
    """

    def __init__(self, B, H, W, steps, rgb, device):
        self.B, self.H, self.W = B, H, W
        self.steps, self.rgb, self.device = steps, rgb, device
        self._sel: torch.Tensor | None = None
        self._sel_np: np.ndarray | None = None
        self._pts: torch.Tensor | None = None
        self._pT: np.ndarray | None = None
        self._color: torch.Tensor | None = None
        self._colorT: np.ndarray | None = None
        self._frame: np.ndarray | None = None
        self.all_valid = False

    @classmethod
    def make(cls, rgb, depth, K, cam_to_world, step, max_depth, device) -> "_PointBatch":
        dev = torch.device(device)
        depth = as_tensor(depth, device=dev, dtype=torch.float32)
        if depth.ndim == 2:
            depth = depth[None]
        B, H, W = depth.shape
        T = as_tensor(cam_to_world, device=dev, dtype=torch.float32).reshape(-1, 4, 4)
        Km = as_tensor(K, device=dev, dtype=torch.float32).reshape(-1, 3, 3)
        if T.shape[0] != B or Km.shape[0] not in (1, B):
            raise ValueError(f"integrate: {B} depth maps but {T.shape[0]} poses and {Km.shape[0]} intrinsics")
        steps = None if step is None else as_tensor(step, device=dev, dtype=torch.int64).reshape(-1).expand(B)
        pb = cls(B, H, W, steps, rgb, dev)
        if dev.type == "cpu":
            d = depth.numpy().reshape(-1)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(d) & (d > 0)
                if max_depth is not None:
                    ok &= d <= max_depth
            sel = np.flatnonzero(ok)
            HW = H * W
            bounds = np.searchsorted(sel, np.arange(B + 1) * HW)
            pT = np.empty((3, sel.shape[0]), dtype=np.float32)
            Tn = T.numpy()
            for b in range(B):
                s0, s1 = int(bounds[b]), int(bounds[b + 1])
                if s1 == s0:
                    continue
                idx = sel[s0:s1]
                z = d[idx]
                rays = _rays_t(Km[b if Km.shape[0] == B else 0], H, W)
                pc = rays * z if s1 - s0 == HW else rays[:, idx - b * HW] * z
                R, t = Tn[b, :3, :3], Tn[b, :3, 3]
                for i in range(3):
                    o = pT[i, s0:s1]
                    np.multiply(pc[0], R[i, 0], out=o)
                    o += pc[1] * R[i, 1]
                    o += pc[2] * R[i, 2]
                    o += t[i]
            pb._sel_np, pb._pT = sel, pT
            pb.all_valid = sel.shape[0] == B * HW
            pb._frame = np.repeat(np.arange(B), np.diff(bounds))
            return pb
        valid = valid_depth(depth, max_depth)
        sel = valid.reshape(-1).nonzero().squeeze(1)  # flat (b, h, w) indices of valid pixels
        pts = unproject_depth(torch.nan_to_num(depth, nan=0.0, posinf=0.0), Km if Km.shape[0] == B else Km[0], T)
        pb._sel, pb._pts = sel, pts.reshape(-1, 3)[sel]
        return pb

    @property
    def sel(self) -> torch.Tensor:
        if self._sel is None:
            self._sel = torch.from_numpy(self._sel_np)
        return self._sel

    @property
    def pts(self) -> torch.Tensor:
        if self._pts is None:
            self._pts = torch.from_numpy(self._pT.T)
        return self._pts

    def points_t(self) -> np.ndarray:
        """(3, N) float32 points (CPU)."""
        if self._pT is None:
            self._pT = np.ascontiguousarray(self._pts.numpy().T)
        return self._pT

    def frame(self) -> np.ndarray:
        """(N,) frame index of every point (CPU)."""
        if self._frame is None:
            self._frame = self.sel.numpy() // (self.H * self.W)
        return self._frame

    def _uint8_hwc(self) -> np.ndarray | None:
        rgb = self.rgb
        if isinstance(rgb, torch.Tensor) and rgb.device.type == "cpu" and rgb.dtype == torch.uint8:
            rgb = rgb.numpy()
        if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim in (3, 4) and rgb.shape[-1] == 3 and (
            rgb.shape[-3] != 3
        ):
            if rgb.reshape(-1, 3).shape[0] != self.B * self.H * self.W or rgb.shape[-3:-1] != (self.H, self.W):
                raise ValueError(f"integrate: rgb shape {rgb.shape} does not match depth {(self.B, self.H, self.W)}")
            return rgb.reshape(-1, 3)
        return None

    def color_t(self) -> np.ndarray | None:
        """(3, N) float32 colour in [0, 1] (CPU); same values as :func:`rgb_to_bchw_float`."""
        if self._colorT is None and self.rgb is not None:
            flat = self._uint8_hwc()
            if flat is not None:
                g = flat if self.all_valid else np.take(flat, self.sel.numpy(), axis=0)
                c = np.empty((3, g.shape[0]), dtype=np.float32)
                np.divide(g.T, np.float32(255.0), out=c, dtype=np.float32)
                self._colorT = c
            else:
                self._colorT = np.ascontiguousarray(self.color().numpy().T)
        return self._colorT

    def color(self) -> torch.Tensor | None:
        """(N, 3) float32 colour in [0, 1] of every valid point (None without an image)."""
        if self._color is None and self.rgb is not None:
            if self._colorT is not None:
                self._color = torch.from_numpy(self._colorT.T)
                return self._color
            img = rgb_to_bchw_float(self.rgb, device=self.device)
            if img.shape[0] != self.B or img.shape[-2:] != (self.H, self.W):
                raise ValueError(f"integrate: rgb shape {tuple(img.shape)} does not match depth {(self.B, self.H, self.W)}")
            self._color = img.permute(0, 2, 3, 1).reshape(-1, 3)[self.sel]
        return self._color
