"""The persistent memory of one rollout, updated frame by frame (Algorithm 1 of arXiv 2505.05495).

Algorithm 1 keeps one 3D map per imagined trajectory: after every generated chunk, "unproject the
generated RGB-D at its poses and fuse into the map" (§3.2-3.3), and the next chunk reads the
updated map. :class:`RolloutMemory` is that state for whichever reader the model uses; *what* it
keeps (a feature-voxel map, a map with its surface map for rendering, stored frames, or nothing)
and how it is read is the reader's own (:meth:`~pewm.model.readers.MemoryReader.new_store`,
``fuse``, ``read_store``), reached through the :class:`~pewm.model.MemoryBuilder`.

Reading goes through the same functions as :meth:`MemoryBuilder.from_history
<pewm.model.memory_build.MemoryBuilder.from_history>`, so a memory built frame by frame gives what
``from_history`` gives for the same frames (tested).
"""

from __future__ import annotations

import copy as _copy

import numpy as np
import torch

from pewm.geometry import Intrinsics, intrinsics_matrix, unproject_depth
from pewm.geometry.layout import box_depth, planes_from_heights
from pewm.memory import PersistentMap
from pewm.model.frame_ops import scale_intrinsics
from pewm.model.memory_build import MemoryBuilder
from pewm.model.readers import MemoryInput


def close_holes(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Morphological closing of a ``(N, h, w)`` bool mask with a ``(2 px + 1)`` square: gaps up to
    ``2 px`` pixels wide inside the mask are filled, and so are strips up to ``px`` pixels wide
    between the mask and the image edge (outside the image counts as covered); the mask's border
    towards larger uncovered regions does not move."""
    if px <= 0:
        return mask
    k = 2 * px + 1
    m = mask.float()[:, None]
    grown = torch.nn.functional.max_pool2d(m, k, stride=1, padding=px)
    closed = -torch.nn.functional.max_pool2d(-grown, k, stride=1, padding=px)
    return (closed[:, 0] > 0.5) | mask


def depth_edges(depth: torch.Tensor, tol: float) -> torch.Tensor:
    """``(N, h, w)`` bool: pixels whose depth differs from one of their 8 neighbours by more than
    ``tol`` times the smaller of the two (a depth discontinuity; invalid depth 0 next to valid depth
    counts). Blurred edges of a generated depth map put points between a foreground and its
    background ("flying pixels"); these are the pixels to leave unfused."""
    d = depth.float()[:, None]
    pad = torch.nn.functional.pad(d, (1, 1, 1, 1), mode="replicate")
    h, w = d.shape[-2:]
    edge = torch.zeros_like(d, dtype=torch.bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            n = pad[..., dy:dy + h, dx:dx + w]
            edge |= (d - n).abs() > tol * torch.minimum(d, n)
    return edge[:, 0]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_frames(rgb, depth, poses, K) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, np.ndarray]:
    """Validate a batch of frames: rgb ``(N, h, w, 3)`` uint8, depth ``(N, h, w)``, poses
    ``(N, 4, 4)``, K ``Intrinsics`` / ``(3, 3)`` of those frames (single frames are accepted)."""
    rgb = _np(rgb)
    depth_t = torch.as_tensor(_np(depth), dtype=torch.float32)
    poses_t = torch.as_tensor(_np(poses), dtype=torch.float32)
    if rgb.ndim == 3:
        rgb = rgb[None]
    if depth_t.ndim == 2:
        depth_t = depth_t[None]
    if poses_t.ndim == 2:
        poses_t = poses_t[None]
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (N, h, w, 3) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    N, h, w = rgb.shape[:3]
    if tuple(depth_t.shape) != (N, h, w):
        raise ValueError(f"depth has shape {tuple(depth_t.shape)}, expected {(N, h, w)} to match rgb {rgb.shape}")
    if tuple(poses_t.shape) != (N, 4, 4):
        raise ValueError(f"poses has shape {tuple(poses_t.shape)}, expected ({N}, 4, 4) camera-to-world")
    if isinstance(K, Intrinsics):
        if (K.height, K.width) != (h, w):
            raise ValueError(f"K: intrinsics are for {K.height}x{K.width} images, the frames are {h}x{w}")
        K = K.matrix
    K64 = _np(K).astype(np.float64)
    if K64.shape != (3, 3):
        raise ValueError(f"K has shape {K64.shape}, expected (3, 3) (one camera for the frames added together)")
    return rgb, depth_t, poses_t, K64


class RolloutMemory:
    """Persistent memory of ONE rollout for ``builder``'s reader (Algorithm 1, §3.3).

    ``add(rgb, depth, poses, K)`` fuses frames of any resolution (with their intrinsics);
    ``read(current_pose, target_poses)`` gives the batch-1 :class:`MemoryInput` at the model's
    resolution; ``len()`` counts what the store holds (feature voxels of a map, stored frames, or
    0); ``frames_added`` counts every frame fused, whatever the reader. ``copy()`` seeds several
    rollouts from one start memory (the store is copied; builder and extractor are shared).
    """

    def __init__(self, builder: MemoryBuilder):
        if not isinstance(builder, MemoryBuilder):
            raise TypeError(f"RolloutMemory needs a MemoryBuilder, got {type(builder).__name__}")
        self.builder = builder
        self.reader = builder.reader
        self.store = builder.new_store()
        self._K_model: torch.Tensor | None = None  # intrinsics of the last added frames at the model's size
        self.frames_added = 0
        # generated chunks waiting to be fused (MemoryBuildConfig.imagined_fuse_delay_chunks), oldest first
        self._pending: list[tuple] = []
        # heights of observed surface points (MemoryBuildConfig.imagined_depth == "box"): the room's planes
        self._heights = np.zeros(0, np.float32)
        self._planes: tuple[float, float] | None = None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_frames(cls, builder: MemoryBuilder, rgb, depth, poses, K) -> "RolloutMemory":
        """A memory holding a (ground-truth) history: the state ``from_history`` builds for it."""
        mem = cls(builder)
        if len(_np(depth)):
            mem.add(rgb, depth, poses, K)
        return mem

    def copy(self) -> "RolloutMemory":
        """A deep copy of the stored map/frames; the builder and feature extractor are shared."""
        memo: dict[int, object] = {id(self.builder): self.builder}
        ext = getattr(self.store, "extractor", None)
        if ext is not None:
            memo[id(ext)] = ext
        return _copy.deepcopy(self, memo)

    # -- state -----------------------------------------------------------------------------------
    @property
    def pmap(self) -> PersistentMap | None:
        """The persistent 3D map (readers that keep one), else None."""
        return self.store if isinstance(self.store, PersistentMap) else None

    def __len__(self) -> int:
        return 0 if self.store is None else len(self.store)

    @property
    def pending(self) -> int:
        """Generated frames added but not fused yet (``MemoryBuildConfig.imagined_fuse_delay_chunks``)."""
        return sum(c[0].shape[0] for c in self._pending)

    def __repr__(self) -> str:
        return f"RolloutMemory(reader={self.reader!r}, size={len(self)}, frames_added={self.frames_added})"

    # -- Algorithm 1: fuse -----------------------------------------------------------------------
    # novel-only fusion: gaps of up to this many pixels inside the render's coverage (far surfaces
    # sampled sparsely) are not novel; imagined points fused there sat in front of mapped walls
    NOVEL_HOLE_PX = 2

    def add(self, rgb, depth, poses, K, novel_only: bool = False, imagined: bool = False) -> None:
        """Fuse frames (Algorithm 1: unproject the RGB-D at its poses and fuse into the map).

        ``rgb`` ``(N, h, w, 3)`` uint8, ``depth`` ``(N, h, w)`` metric z-depth, ``poses``
        ``(N, 4, 4)`` camera-to-world, ``K`` :class:`Intrinsics` or ``(3, 3)`` for these frames.

        ``novel_only`` ("imagined once, then remembered"; used for generated frames): frames are
        fused one by one, each only where the map's surface render at its pose has no coverage (gaps
        of up to ``2 * NOVEL_HOLE_PX`` pixels inside the coverage count as covered), so an imagined
        view never overwrites or occludes what the map already holds (observed or imagined earlier).
        Needs a map with a surface map; otherwise everything is fused.

        ``imagined`` (generated frames): with ``MemoryBuildConfig.imagined_edge_tol`` set, pixels on a
        depth discontinuity (:func:`depth_edges`) are not fused; with ``imagined_fuse_delay_chunks`` D > 0
        they wait: the frames of one call (a generated chunk) are fused, as asked and in order, once D
        later chunks were added, so the next chunk is not conditioned on the renders of the chunk just
        imagined (it continues from that chunk's last frame), while places imagined earlier are remembered;
        with ``imagined_depth="box"`` their depth is fused as the observed room's box (:meth:`_boxed`),
        whose floor and ceiling come from the observed frames only.
        """
        if not imagined and self.builder.cfg.imagined_depth == "box":
            self._observe_heights(*_as_frames(rgb, depth, poses, K)[1:])
        delay = self.builder.cfg.imagined_fuse_delay_chunks
        if imagined and delay:
            self._pending.append((*_as_frames(rgb, depth, poses, K), novel_only))
            while len(self._pending) > delay:
                r, d, p, k, nov = self._pending.pop(0)
                self._fuse(r, d, p, k, nov, imagined=True)
            return
        self._fuse(rgb, depth, poses, K, novel_only, imagined)

    def flush(self) -> None:
        """Fuse every generated chunk still waiting (``imagined_fuse_delay_chunks``) now, oldest first."""
        while self._pending:
            r, d, p, k, nov = self._pending.pop(0)
            self._fuse(r, d, p, k, nov, imagined=True)

    # observed heights kept per frame, and at most in all: even subsamples (the planes are percentiles)
    HEIGHTS_PER_FRAME = 256
    MAX_HEIGHTS = 65536
    # box depth (imagined_depth="box") assumes a level camera: a column of a wall has one z-depth
    BOX_MAX_TILT_DEG = 10.0

    def _observe_heights(self, depth: torch.Tensor, poses: torch.Tensor, K64: np.ndarray) -> None:
        """Keep a subsample of the heights of the observed frames' points and re-estimate the room's
        floor and ceiling (:func:`pewm.geometry.layout.planes_from_heights`)."""
        if depth.shape[0] == 0:
            return
        ok = (torch.isfinite(depth) & (depth > 0) & (depth <= self.builder.cfg.max_depth)).reshape(len(depth), -1)
        pts = unproject_depth(torch.nan_to_num(depth, nan=0.0, posinf=0.0), torch.from_numpy(K64.astype(np.float32)),
                              poses)[..., 2].reshape(len(depth), -1)
        kept = [self._heights]
        for z, m in zip(pts.numpy(), ok.numpy()):
            z = z[m]
            kept.append(z[:: max(1, z.size // self.HEIGHTS_PER_FRAME)])
        self._heights = np.concatenate(kept)
        if self._heights.size > self.MAX_HEIGHTS:
            self._heights = self._heights[::2]
        if self._heights.size:
            self._planes = planes_from_heights(self._heights)

    @property
    def planes(self) -> tuple[float, float] | None:
        """``(floor_z, ceiling_z)`` of the observed frames (``imagined_depth="box"``), or None."""
        return self._planes

    def _boxed(self, depth: torch.Tensor, poses: torch.Tensor, K64: np.ndarray) -> torch.Tensor:
        """``imagined_depth="box"``: generated depth as the observed room's floor and ceiling and one
        wall per column (:func:`pewm.geometry.layout.box_depth`; no wall where a column shows none, so
        nothing is invented there), for level cameras (tilt and roll under ``BOX_MAX_TILT_DEG``);
        other frames, and any frame without known planes, keep the generated depth."""
        if self._planes is None:
            return depth
        P = poses.numpy().astype(np.float64)
        level = (np.abs(P[:, 2, 2]) < np.sin(np.radians(self.BOX_MAX_TILT_DEG))) & (
            np.abs(P[:, 2, 0]) < np.sin(np.radians(self.BOX_MAX_TILT_DEG)))
        if not level.any():
            return depth
        out = depth.clone()
        boxed = box_depth(depth[level].numpy(), P[level], K64, self._planes, fallback=1e3)
        out[torch.from_numpy(level)] = torch.from_numpy(boxed)
        return out

    def _fuse(self, rgb, depth, poses, K, novel_only: bool, imagined: bool) -> None:
        cfg = self.builder.cfg
        tol = cfg.imagined_edge_tol if self.pmap is not None else None
        if imagined and (tol is not None or cfg.imagined_depth == "box"):
            rgb, depth_t, poses, K = _as_frames(rgb, depth, poses, K)
            # edges of the depth as generated (its flying pixels), not of the box made from it
            edges = depth_edges(depth_t, float(tol)) if tol is not None else None
            if cfg.imagined_depth == "box":
                depth_t = self._boxed(depth_t, poses, K)
            depth = depth_t if edges is None else torch.where(edges, torch.zeros_like(depth_t), depth_t)
        pmap = self.pmap
        if novel_only and pmap is not None and pmap.surface is not None:
            rgb_a, depth_a, poses_a, K64 = _as_frames(rgb, depth, poses, K)
            h, w = rgb_a.shape[1:3]
            Kt = torch.from_numpy(K64.astype(np.float32))
            for i in range(rgb_a.shape[0]):
                d = depth_a[i:i + 1].clone()
                if len(pmap.surface):
                    covered = pmap.render(Kt, poses_a[i:i + 1].float(), h, w).mask.cpu()
                    covered = close_holes(covered.reshape(d.shape), self.NOVEL_HOLE_PX)
                    d[covered] = 0.0  # invalid depth is not fused
                self._fuse(rgb_a[i:i + 1], d, poses_a[i:i + 1], K64, False, False)
            return
        rgb, depth_t, poses_t, K64 = _as_frames(rgb, depth, poses, K)
        N, h, w = rgb.shape[:3]
        if N == 0:
            return
        mc = self.builder.model_cfg
        # the same float64 -> float32 steps as MemoryBuilder.from_history, so the results match exactly
        self._K_model = scale_intrinsics(K64, (h, w), (mc.image_height, mc.image_width))
        self.frames_added += N
        self.builder.fuse(self.store, rgb, depth_t, K64.astype(np.float32), poses_t)

    # -- read ------------------------------------------------------------------------------------
    def read(self, current_pose, target_poses, K=None) -> MemoryInput:
        """The batch-1 memory for generating ``target_poses`` ``(H, 4, 4)`` from ``current_pose``
        ``(4, 4)``: what :meth:`MemoryBuilder.from_history` would give for the frames added so far.

        ``K``: the target views' intrinsics at the model's resolution (:class:`Intrinsics` or
        ``(3, 3)``; used by readers that render into the targets); default: the last added frames'
        scaled to it.
        """
        mc = self.builder.model_cfg
        if K is None:
            K_model = self._K_model
            if K_model is None:  # empty memory: any camera of the model's size renders nothing
                K_model = torch.eye(3)
        else:
            K_model = torch.tensor(intrinsics_matrix(K, mc.image_height, mc.image_width), dtype=torch.float32)
            if K_model.shape != (3, 3):
                raise ValueError(f"K has shape {tuple(K_model.shape)}, expected (3, 3)")
        return self.builder.read(self.store, current_pose, target_poses, K_model)


__all__ = ["RolloutMemory", "close_holes", "depth_edges"]
