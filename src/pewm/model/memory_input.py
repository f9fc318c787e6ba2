"""From ground-truth (or generated) RGB-D frames to the :class:`MemoryInput` each reader needs.

§4 of arXiv 2505.05495 ("Training"): during training and evaluation the 3D map of a clip is built
from the ground-truth observations that come before it. §3.2-3.3: the map's non-empty voxels are
the memory tokens (feature ‖ 3D position), read by cross-attention. This module is the glue
between :mod:`pewm.memory` (maps, frame memory) and the model's readers; it uses only their public
APIs and never imports :mod:`pewm.sim`.

What each reader gets (all for one clip; :func:`stack_memory` batches them):

=================  ==========================================================================
``voxel-xattn``    :func:`map_tokens_input`: the ``max_memory_tokens`` voxels of the map nearest
                   to the current camera; features zero-padded to ``memory_dim``; positions =
                   voxel centres expressed in the **current camera's frame** (OpenCV: +z is in
                   front of the camera); padded to ``max_memory_tokens`` rows with ``mask``.
``frames``         :func:`frames_input`: the ``max_memory_frames`` stored frames that overlap the
                   target views most (:class:`~pewm.memory.FrameMemory`), resized to the model's
                   resolution, with camera-to-current-camera poses; padded with ``frame_mask``.
``voxel-render``   :func:`rendered_input`: the fine colour map rendered into every target view:
                   RGB in ``[0, 1]``, depth in metres, coverage in ``{0, 1}`` (the reader
                   normalises them).
``none``           :class:`MemoryInput` with every field ``None``.
=================  ==========================================================================

Feature channels: a map built with an extractor of ``dim < memory_dim`` (e.g. the ``rgb``
extractor, 3 channels, with the tiny preset's ``memory_dim = 384``) has its features zero-padded
to ``memory_dim``; the token projection then simply learns zero weights for the absent channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from pewm.geometry import Intrinsics
from pewm.memory import (
    FeatureExtractor,
    FrameMemory,
    FrameMemoryConfig,
    PersistentMap,
    PersistentMapConfig,
    VoxelMapConfig,
    make_extractor,
)
from pewm.model.config import ModelConfig
from pewm.model.memory_readers import MemoryInput


def _pose(T) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(T.cpu() if isinstance(T, torch.Tensor) else T), dtype=torch.float64)
    if t.shape != (4, 4):
        raise ValueError(f"expected a (4, 4) camera-to-world pose, got shape {tuple(t.shape)}")
    return t


def _poses(T) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(T.cpu() if isinstance(T, torch.Tensor) else T), dtype=torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[1:] != (4, 4):
        raise ValueError(f"expected (N, 4, 4) camera-to-world poses, got shape {tuple(t.shape)}")
    return t


def world_to_camera(points: torch.Tensor, cam_to_world) -> torch.Tensor:
    """World points ``(..., 3)`` expressed in the camera frame of ``cam_to_world`` (OpenCV axes)."""
    T = _pose(cam_to_world)
    R, t = T[:3, :3], T[:3, 3]
    p = points.double()
    return ((p - t) @ R).to(points.dtype if points.is_floating_point() else torch.float32)


def poses_in_camera(poses, cam_to_world) -> torch.Tensor:
    """Camera-to-world ``poses`` ``(N, 4, 4)`` as camera-to-``cam_to_world``-camera poses (float32)."""
    T0 = _pose(cam_to_world)
    return (torch.linalg.inv(T0) @ _poses(poses)).float()


def scale_intrinsics(K, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """``(3, 3)`` intrinsics of an ``src_hw`` image resized to ``dst_hw`` (pixel-centre convention)."""
    K = np.asarray(K.cpu() if isinstance(K, torch.Tensor) else K, dtype=np.float64).reshape(3, 3)
    intr = Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], src_hw[1], src_hw[0]).scaled(dst_hw[1], dst_hw[0])
    return torch.as_tensor(intr.matrix, dtype=torch.float32)


def resize_rgb(rgb: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(N, 3, H, W)`` float images resized to ``h x w`` (area average when shrinking)."""
    if tuple(rgb.shape[-2:]) == (h, w):
        return rgb
    H, W = rgb.shape[-2:]
    mode = "area" if (H >= h and W >= w) else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(rgb, size=(h, w), mode=mode, **kw)


def resize_depth(depth: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(N, H, W)`` depth resized to ``h x w`` by taking the source pixel nearest to each new pixel
    centre (no averaging across depth edges, consistent with :func:`scale_intrinsics`)."""
    H, W = depth.shape[-2:]
    if (H, W) == (h, w):
        return depth
    rows = ((torch.arange(h, dtype=torch.float64) + 0.5) * H / h).floor().long().clamp(max=H - 1)
    cols = ((torch.arange(w, dtype=torch.float64) + 0.5) * W / w).floor().long().clamp(max=W - 1)
    return depth[..., rows, :][..., cols]


def pad_features(features: torch.Tensor, dim: int) -> torch.Tensor:
    """``(N, C)`` features zero-padded to ``(N, dim)``; ``C > dim`` is an error."""
    C = features.shape[-1]
    if C > dim:
        raise ValueError(
            f"map features have {C} channels, more than the model's memory_dim={dim}; use a model with "
            f"memory_dim >= {C} or a smaller feature extractor"
        )
    return F.pad(features.float(), (0, dim - C)) if C < dim else features.float()


# -- one clip ------------------------------------------------------------------------------------


def map_tokens_input(pmap: PersistentMap, current_pose, model_cfg: ModelConfig) -> MemoryInput:
    """``voxel-xattn`` memory of one clip (batch of 1): the map tokens nearest to the current camera,
    positions in the current camera's frame, padded to ``max_memory_tokens`` (§3.2-3.3)."""
    n = model_cfg.max_memory_tokens
    T0 = _pose(current_pose)
    tok = pmap.tokens(n, around=T0.float(), pad=True)
    feats = pad_features(tok.features.cpu(), model_cfg.memory_dim)
    if feats.shape[0] == 0:  # empty map: one masked row keeps the shapes regular
        feats = torch.zeros(n, model_cfg.memory_dim)
    pos = world_to_camera(tok.centers.cpu().float(), T0).float()
    mask = tok.mask.cpu().bool()
    if pos.shape[0] < n:  # an empty map returns no rows even with pad=True
        pos = F.pad(pos, (0, 0, 0, n - pos.shape[0]))
        mask = F.pad(mask, (0, n - mask.shape[0]), value=False)
    pos = pos * mask[:, None]  # padded rows at the camera centre (masked anyway)
    feats = feats * mask[:, None]
    return MemoryInput(tokens=feats[None], positions=pos[None], mask=mask[None])


def rendered_input(pmap: PersistentMap, K, target_poses, model_cfg: ModelConfig, supersample: int = 1) -> MemoryInput:
    """``voxel-render`` memory of one clip: the map rendered into the ``H`` target views at the model's
    resolution (``K`` already scaled to it): ``(1, H, 5, h, w)`` = RGB [0, 1], depth (m), coverage.

    ``supersample`` ``s > 1`` renders at ``s`` times the resolution and averages each ``s x s``
    block's colour over its covered sub-pixels (anti-aliased edges) and its depth over the covered
    sub-pixels on the nearest surface (within the render's blend tolerance; no depth between a
    foreground and a background); a pixel counts as covered when at least half of its sub-pixels are."""
    h, w = model_cfg.image_height, model_cfg.image_width
    T = _poses(target_poses).float()
    s = int(supersample)
    if s < 1:
        raise ValueError(f"render supersample must be >= 1, got {supersample}")
    if len(pmap.surface or []) == 0:
        r = torch.zeros(T.shape[0], 5, h, w)
    else:
        Kr = torch.as_tensor(np.asarray(K), dtype=torch.float32)
        if s > 1:
            Kr = scale_intrinsics(Kr, (h, w), (h * s, w * s))
        out = pmap.render(Kr, T, h * s, w * s)
        cov = out.mask.float()
        img, depth = out.image.float().clamp(0, 1), out.depth.float()
        if s > 1:
            frac = F.avg_pool2d(cov[:, None], s)
            img = F.avg_pool2d(img * cov[:, None], s) / frac.clamp_min(1e-6)
            # depth is not averaged across an edge (that depth exists nowhere): the sub-pixels
            # within the render's blend tolerance of the nearest one are averaged
            inf = torch.full_like(depth, float("inf"))
            near = -F.max_pool2d(-torch.where(cov > 0, depth, inf)[:, None], s)
            near_up = near.repeat_interleave(s, -2).repeat_interleave(s, -1)[:, 0]
            c = pmap.surface.config
            front = ((cov > 0) & (depth <= near_up + c.blend_tol_abs + c.blend_tol_rel * near_up)).float()
            depth = (F.avg_pool2d((depth * front)[:, None], s) / F.avg_pool2d(front[:, None], s).clamp_min(1e-6))[:, 0]
            cov = (frac[:, 0] >= 0.5).float()
        r = torch.cat([img * cov[:, None], (depth * cov)[:, None], cov[:, None]], 1)
    return MemoryInput(rendered=r.cpu()[None])


def frames_input(
    memory: FrameMemory, current_pose, target_poses, model_cfg: ModelConfig, K=None, src_hw: tuple[int, int] | None = None
) -> MemoryInput:
    """``frames`` memory of one clip: the ``max_memory_frames`` stored frames overlapping the target
    views most, resized to the model's resolution, poses relative to the current camera, padded
    with ``frame_mask = False``. ``K``/``src_hw``: the stored frames' intrinsics and size."""
    k, h, w = model_cfg.max_memory_frames, model_cfg.image_height, model_cfg.image_width
    frames = torch.zeros(k, 4, h, w)
    poses = torch.eye(4).repeat(k, 1, 1)
    Ks = torch.eye(3).repeat(k, 1, 1)
    mask = torch.zeros(k, dtype=torch.bool)
    if len(memory):
        got = memory.retrieve(_poses(target_poses).float(), k, K=K)
        n = got.rgb.shape[0]
        H, W = got.depth.shape[-2:]
        frames[:n, :3] = resize_rgb(got.rgb.float().cpu(), h, w)
        frames[:n, 3] = resize_depth(got.depth.float().cpu(), h, w)
        poses[:n] = poses_in_camera(got.poses.cpu(), current_pose)
        Ks[:n] = torch.stack([scale_intrinsics(Ki, (H, W), (h, w)) for Ki in got.K.cpu()])
        mask[:n] = True
    return MemoryInput(frames=frames[None], frame_poses=poses[None], frame_intrinsics=Ks[None], frame_mask=mask[None])


def stack_memory(items: list[MemoryInput]) -> MemoryInput:
    """Concatenate per-clip memories (each batch 1, or any batch) along the batch axis."""
    if not items:
        raise ValueError("stack_memory needs at least one MemoryInput")
    out = {}
    for f in fields(MemoryInput):
        vals = [getattr(m, f.name) for m in items]
        if all(v is None for v in vals):
            out[f.name] = None
        elif any(v is None for v in vals):
            raise ValueError(f"stack_memory: MemoryInput.{f.name} is set for some clips and None for others")
        else:
            out[f.name] = torch.cat(vals, dim=0)
    return MemoryInput(**out)


# -- builder -------------------------------------------------------------------------------------


@dataclass
class MemoryBuildConfig:
    """How a clip's memory is built from its ground-truth history (§4 "Training").

    ``extractor``: feature extractor of the token map (``auto`` by default: the model's frozen
    autoencoder encoder, ``autoencoder``, for a latent model, else ``rgb``; ``dinov2`` needs
    ``extractor_kwargs={"weights": DIR}``); ``feature_voxel``: the token map's voxel (the paper's
    0.25 x 0.25 x 1 m); ``surface_voxel``: the rendering map's voxel (``voxel-render``);
    ``max_depth``: depth beyond this is not fused; ``frames_depth_test``: occlusion-aware frame
    retrieval for the ``frames`` reader; ``render_supersample``: ``voxel-render`` renders at this
    many times the model's resolution, averaged down (anti-aliasing; :func:`rendered_input`).
    """

    extractor: str = "auto"
    extractor_kwargs: dict = field(default_factory=dict)
    feature_voxel: tuple[float, float, float] = (0.25, 0.25, 1.0)
    surface_voxel: float = 0.05
    max_depth: float = 10.0
    frames_depth_test: bool = False
    render_supersample: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.render_supersample, int) or isinstance(self.render_supersample, bool) or (
            self.render_supersample < 1
        ):
            raise ValueError(f"MemoryBuildConfig.render_supersample must be an integer >= 1, got {self.render_supersample!r}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryBuildConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MemoryBuildConfig: unknown key(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "feature_voxel" in d:
            d["feature_voxel"] = tuple(d["feature_voxel"])
        return cls(**d)


def resolve_extractor(name: str, autoencoder_config=None) -> str:
    """``"auto"``: the model's frozen autoencoder encoder (``"autoencoder"``) when the model has one
    (``ModelConfig.autoencoder``; the learned default for CPU training), else ``"rgb"``; other
    names pass unchanged."""
    if name != "auto":
        return name
    return "autoencoder" if autoencoder_config is not None else "rgb"


class MemoryBuilder:
    """Builds the :class:`MemoryInput` of ``model_cfg.reader`` from a clip's history frames.

    ``builder.from_history(rgb, depth, poses, K, current_pose, target_poses)`` -> memory of one clip
    (batch 1); ``builder.from_map(pmap, current_pose, target_poses, K_model)`` reads an existing
    (e.g. rollout) map. ``K`` is the intrinsics of the history frames (any resolution);
    ``K_model`` is scaled to the model's resolution.
    """

    def __init__(self, model_cfg: ModelConfig, cfg: MemoryBuildConfig | None = None,
                 extractor: FeatureExtractor | None = None, device="cpu", autoencoder=None):
        self.model_cfg = model_cfg
        self.cfg = cfg or MemoryBuildConfig()
        self.device = torch.device(device)
        self.reader = model_cfg.reader
        self._extractor = extractor
        self.extractor_name = extractor.name if extractor is not None else resolve_extractor(
            self.cfg.extractor, model_cfg.autoencoder)
        if self.reader == "voxel-xattn" and self._extractor is None:
            kw = dict(self.cfg.extractor_kwargs)
            if self.extractor_name == "autoencoder" and "weights" not in kw and "config" not in kw:
                if autoencoder is None:
                    how = "chosen by extractor='auto' for this latent model" if self.cfg.extractor == "auto" else "asked for"
                    raise ValueError(
                        f"the autoencoder feature extractor ({how}) needs the model's autoencoder: build memories "
                        "with MemoryBuilder.for_model(model), or pass extractor_kwargs={'weights': MODEL_DIR}"
                    )
                kw.update(autoencoder=autoencoder, depth_range=(model_cfg.depth_min, model_cfg.depth_max))
            self._extractor = make_extractor(self.extractor_name, **kw)
        if self._extractor is not None and self._extractor.dim > model_cfg.memory_dim:
            auto = " (chosen by extractor='auto'; pass --features rgb to use colour)" if self.cfg.extractor == "auto" else ""
            raise ValueError(
                f"feature extractor {self._extractor.name!r}{auto} has {self._extractor.dim} channels, more than "
                f"the model's memory_dim={model_cfg.memory_dim}"
            )

    @classmethod
    def for_model(cls, model, config: ModelConfig | None = None, device="cpu") -> "MemoryBuilder":
        """The builder a trained model's memories must come from: its ``memory_build`` settings
        (saved with the model by stage-2 training) or the defaults; ``config`` overrides the model's
        config (e.g. another reader)."""
        mb = getattr(model, "memory_build", None)
        return cls(config or model.config, MemoryBuildConfig.from_dict(mb) if mb else None, device=device,
                   autoencoder=getattr(model, "autoencoder", None))

    def resolved_config(self) -> MemoryBuildConfig:
        """This builder's settings with ``extractor="auto"`` replaced by the extractor it uses
        (what training saves with the model as ``memory.json``)."""
        from dataclasses import replace

        return replace(self.cfg, extractor=self.extractor_name)

    def new_map(self) -> PersistentMap:
        """An empty map with the parts this reader needs (features for tokens, surface for renders)."""
        c = self.cfg
        feats = VoxelMapConfig(voxel_size=c.feature_voxel, max_depth=c.max_depth,
                               attributes=VoxelMapConfig.paper(None).attributes)
        surface = VoxelMapConfig.surface(c.surface_voxel, max_depth=c.max_depth) if self.reader == "voxel-render" else None
        ext = self._extractor if self.reader == "voxel-xattn" else None
        return PersistentMap(PersistentMapConfig(features=feats, surface=surface), extractor=ext, device=self.device)

    def from_map(self, pmap: PersistentMap, current_pose, target_poses, K_model) -> MemoryInput:
        if self.reader == "voxel-xattn":
            return map_tokens_input(pmap, current_pose, self.model_cfg)
        if self.reader == "voxel-render":
            return rendered_input(pmap, K_model, target_poses, self.model_cfg, self.cfg.render_supersample)
        if self.reader == "none":
            return MemoryInput()
        raise ValueError(f"reader {self.reader!r} does not read a voxel map")

    def from_history(self, rgb, depth, poses, K, current_pose, target_poses) -> MemoryInput:
        """Memory of one clip from its history: ``rgb`` ``(M, h, w, 3)`` uint8, ``depth`` ``(M, h, w)``
        metres, ``poses`` ``(M, 4, 4)`` camera-to-world, ``K`` ``(3, 3)`` of those frames;
        ``current_pose`` ``(4, 4)``; ``target_poses`` ``(H, 4, 4)``."""
        mc = self.model_cfg
        if self.reader == "none":
            return MemoryInput()
        depth_t = torch.as_tensor(np.asarray(depth), dtype=torch.float32)
        src_hw = tuple(depth_t.shape[-2:])
        K_model = scale_intrinsics(K, src_hw, (mc.image_height, mc.image_width))
        poses_t = torch.as_tensor(np.asarray(poses), dtype=torch.float32)
        if self.reader == "frames":
            fm = FrameMemory(FrameMemoryConfig(max_depth=self.cfg.max_depth, depth_test=self.cfg.frames_depth_test))
            if len(depth_t):
                fm.add(np.asarray(rgb), depth_t, np.asarray(K, dtype=np.float32), poses_t)
            return frames_input(fm, current_pose, target_poses, mc, K=np.asarray(K, dtype=np.float32), src_hw=src_hw)
        pmap = self.new_map()
        if len(depth_t):
            pmap.integrate(np.asarray(rgb), depth_t, np.asarray(K, dtype=np.float32), poses_t)
        return self.from_map(pmap, current_pose, target_poses, K_model)


__all__ = [
    "MemoryBuildConfig",
    "MemoryBuilder",
    "frames_input",
    "map_tokens_input",
    "pad_features",
    "poses_in_camera",
    "rendered_input",
    "resize_depth",
    "resize_rgb",
    "scale_intrinsics",
    "stack_memory",
    "world_to_camera",
]
