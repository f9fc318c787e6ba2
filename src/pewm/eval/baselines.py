"""Benchmark modes without a world model: what copying the history alone scores (issue #12).

A memory reader's claim is its gain over these, not only over the empty memory (``none``): on the
revisit-seeking cuts, rendering the map of the history with a trivial fill scored within 0.4 dB of
the shipped model. Both modes see exactly what a memory reader sees -- the ground-truth history
frames ``[0, cut]`` (RGB-D, poses, intrinsics) and the camera path after the cut -- and never a
target frame; the functions below take the history and the target poses only, so they cannot.

* ``render-only``: the map of the history built by the ``voxel-render`` reader's own builder (its
  fine surface map, with the memory settings of the model evaluated as ``voxel-render``: surface
  voxel, render supersampling) and rendered into every target view exactly as that reader renders
  it (:func:`pewm.model.readers.voxel_render.rendered_input`). Pixels the render does not cover
  are filled **from the render itself** (:func:`fill_from_render`): the mean colour and mean depth
  of that view's covered pixels; a view with no covered pixel takes the mean over all the
  episode's rendered views; with nothing rendered at all, mid-grey and the history's mean depth.
* ``nearest-frame``: the history frame whose camera pose is closest to the target's
  (:func:`pose_distance`: camera-centre distance in metres plus ``rotation_weight`` metres per
  radian of the relative rotation angle; default 1 m/rad, so one 15 degree turn weighs about one
  0.25 m forward step), its RGB-D returned unchanged. Ties go to the latest history frame.
* ``render-layout``: ``render-only``'s frames, with the uncovered pixels' depth taken from a box
  layout instead of the mean (:mod:`pewm.eval.layout`): the floor and ceiling planes of the history
  (robust percentiles of its points' heights) and a wall at ``layout_wall_m`` (2 m, the value with
  the lowest novel-frame AbsRel on the val explore cuts among 1.5 .. 4 m; ``docs/design.md``,
  "Session 10") in every column. Its RGB is ``render-only``'s; it is the depth baseline that
  imagined depth has to beat. Histories whose world up axis is unknown (imported recordings) get
  no planes: the wall distance everywhere.

Both give what a model mode gives per episode: ``{"rgb": (H, h, w, 3) uint8, "depth": (H, h, w)
float32}``, so every metric, split and report applies unchanged. Neither is random: the same
frames for every sampling seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pewm.eval.layout import layout_depth, room_planes
from pewm.model import MemoryBuilder
from pewm.rollout import RolloutMemory

BASELINE_MODES = ("render-only", "nearest-frame", "render-layout")
"""The benchmark modes that need no model weights (``pewm eval --memory render-only,nearest-frame``)."""


@dataclass
class BaselineConfig:
    """Settings of the no-model modes: ``rotation_weight`` (metres per radian) of the
    ``nearest-frame`` pose distance (:func:`pose_distance`); ``layout_wall_m``, the z-depth of the
    walls ``render-layout`` puts where the map shows nothing."""

    rotation_weight: float = 1.0
    layout_wall_m: float = 2.0

    def validate(self) -> "BaselineConfig":
        if not np.isfinite(self.rotation_weight) or self.rotation_weight < 0:
            raise ValueError(f"BaselineConfig.rotation_weight must be a finite number >= 0, got {self.rotation_weight}")
        if not np.isfinite(self.layout_wall_m) or self.layout_wall_m <= 0:
            raise ValueError(f"BaselineConfig.layout_wall_m must be a positive number of metres, got {self.layout_wall_m}")
        return self


def pose_distance(poses_a, poses_b, rotation_weight: float = 1.0) -> np.ndarray:
    """``(N, M)`` distances between camera-to-world poses ``(N, 4, 4)`` and ``(M, 4, 4)``:
    ``|c_a - c_b|`` (metres between camera centres) ``+ rotation_weight * angle(R_a^T R_b)``
    (radians of the relative rotation, in ``[0, pi]``)."""
    A, B = np.asarray(poses_a, np.float64), np.asarray(poses_b, np.float64)
    if A.ndim != 3 or A.shape[1:] != (4, 4) or B.ndim != 3 or B.shape[1:] != (4, 4):
        raise ValueError(f"poses must have shapes (N, 4, 4) and (M, 4, 4), got {A.shape} and {B.shape}")
    trans = np.linalg.norm(A[:, None, :3, 3] - B[None, :, :3, 3], axis=-1)
    # trace(R_a^T R_b) = sum of the elementwise product
    tr = np.einsum("nij,mij->nm", A[:, :3, :3], B[:, :3, :3])
    angle = np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))
    return trans + float(rotation_weight) * angle


def nearest_history_frames(history_poses, target_poses, rotation_weight: float = 1.0) -> np.ndarray:
    """``(H,)`` index into the history of the frame closest to each target pose (ties: the latest)."""
    d = pose_distance(target_poses, history_poses, rotation_weight)
    if d.shape[1] == 0:
        raise ValueError("nearest-frame needs at least one history frame")
    last = d.shape[1] - 1
    return last - np.argmin(d[:, ::-1], axis=1)


def nearest_frame(history_rgb, history_depth, history_poses, target_poses, rotation_weight: float = 1.0) -> dict:
    """``nearest-frame`` for one episode: the closest history frame's RGB-D for each target pose."""
    idx = nearest_history_frames(history_poses, target_poses, rotation_weight)
    return {"rgb": np.ascontiguousarray(np.asarray(history_rgb)[idx]),
            "depth": np.ascontiguousarray(np.asarray(history_depth, dtype=np.float32)[idx]),
            "source_frames": idx}


def fill_from_render(rendered, history_depth=None) -> tuple[np.ndarray, np.ndarray]:
    """Frames from a ``voxel-render`` render ``(H, 5, h, w)`` (RGB [0, 1], depth, coverage):
    ``(rgb (H, h, w, 3) uint8, depth (H, h, w) float32)``, uncovered pixels filled with the mean
    covered colour and depth of the same view, else of all views, else mid-grey and the mean valid
    depth of ``history_depth`` (1 m without it). Nothing but the render (and the history) is read."""
    r = torch.as_tensor(rendered).double().numpy()
    if r.ndim != 4 or r.shape[1] != 5:
        raise ValueError(f"rendered must have shape (H, 5, h, w), got {r.shape}")
    cov = r[:, 4] > 0.5
    rgb, depth = r[:, :3].transpose(0, 2, 3, 1).clip(0.0, 1.0), r[:, 3]
    if cov.any():
        all_rgb, all_depth = rgb[cov].mean(0), float(depth[cov].mean())
    else:
        hd = None if history_depth is None else np.asarray(history_depth, np.float64)
        ok = None if hd is None else np.isfinite(hd) & (hd > 0)
        all_rgb = np.full(3, 0.5)
        all_depth = float(hd[ok].mean()) if ok is not None and ok.any() else 1.0
    out_rgb, out_depth = rgb.copy(), depth.copy()
    for i in range(len(r)):
        m = cov[i]
        out_rgb[i][~m] = rgb[i][m].mean(0) if m.any() else all_rgb
        out_depth[i][~m] = depth[i][m].mean() if m.any() else all_depth
    return (np.round(out_rgb * 255.0).clip(0, 255).astype(np.uint8), out_depth.astype(np.float32))


def render_builder(model, render_supersample: int | None = None) -> MemoryBuilder:
    """The ``voxel-render`` reader's memory builder with ``model``'s memory settings (whatever
    ``model``'s own reader is; ``render_supersample`` overrides the saved setting)."""
    cfg = model.config if model.config.reader == "voxel-render" else model.config.replace(reader="voxel-render")
    return MemoryBuilder.for_model(model, config=cfg, render_supersample=render_supersample)


def render_only(builder: MemoryBuilder, history_rgb, history_depth, history_poses, K, target_poses) -> dict:
    """``render-only`` for one episode: the history's map rendered into ``target_poses`` ``(H, 4, 4)``
    (``K``: the targets' intrinsics at the model's resolution) and filled (:func:`fill_from_render`)."""
    if builder.reader != "voxel-render":
        raise ValueError(f"render-only needs the voxel-render memory builder (render_builder), got {builder.reader!r}")
    mem = RolloutMemory.from_frames(builder, history_rgb, history_depth, history_poses, K)
    targets = np.asarray(target_poses, dtype=np.float64)
    rendered = mem.read(np.asarray(history_poses[-1], dtype=np.float64), targets, K=np.asarray(K)).rendered[0]
    rgb, depth = fill_from_render(rendered, history_depth)
    return {"rgb": rgb, "depth": depth, "coverage": rendered[:, 4].numpy() > 0.5}


def render_layout(builder: MemoryBuilder, history_rgb, history_depth, history_poses, K, target_poses,
                  wall_m: float = 2.0, z_up: bool = True) -> dict:
    """``render-layout`` for one episode: :func:`render_only`'s frames with the depth of the pixels
    the render does not cover from :func:`pewm.eval.layout.layout_depth` (the history's floor and
    ceiling, walls at ``wall_m``; no planes unless the world frame has z up, ``z_up``), plus
    ``render_depth`` (``render-only``'s depth) and ``planes`` (:func:`~pewm.eval.layout.room_planes`)."""
    out = render_only(builder, history_rgb, history_depth, history_poses, K, target_poses)
    planes = room_planes(history_depth, history_poses, K) if z_up else None
    h, w = out["depth"].shape[1:]
    guess = layout_depth(target_poses, K, h, w, planes, wall_m)
    out["render_depth"] = out["depth"]  # render-only's depth (holes: the mean)
    out["depth"] = np.where(out["coverage"], out["depth"], guess).astype(np.float32)
    out["planes"] = planes
    return out


__all__ = ["BASELINE_MODES", "BaselineConfig", "fill_from_render", "nearest_frame", "nearest_history_frames",
           "pose_distance", "render_builder", "render_layout", "render_only"]
