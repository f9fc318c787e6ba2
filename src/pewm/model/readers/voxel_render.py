"""``voxel-render`` (beyond the paper): the map rendered into every target view enters pixel-aligned.

The fine colour (surface) map is rendered into each *future* view (:func:`rendered_input`: RGB in
``[0, 1]``, depth in metres, coverage in ``{0, 1}``); a zero-initialised convolution patchifies it
and its output is added to the backbone's patch embedding (= widening the input layer with
zero-initialised weights, as the paper does for depth, §3.2). In latent space the render is
encoded by the model's autoencoder like a frame, plus the coverage averaged per latent cell
(``MemoryInput.rendered_latent``, :meth:`VoxelRenderReader.encode_memory`). The current frame gets
no render. The memory blocks, kept for parameter parity, see an empty memory.

Option ``layout_prior`` (beyond the paper, :class:`VoxelRenderOptions`): the model also gets, for
every target pixel, the z-depth at which its ray meets the floor or the ceiling of the map
(:func:`pewm.geometry.layout.planes_from_heights` over the surface map's points, world z up), and
whether it does (``MemoryInput.layout``), through a second zero-initialised patch convolution; the
walls of unseen places are left to the model. Without a room in the map (empty, or not z-up) the
input is zero, as for a dropped memory.

Because the memory is pixel-aligned, sampling can keep what the map holds (``can_anchor``; see
:mod:`pewm.model.sampling`): known latent cells re-noised into every DDIM step (RePaint-style) and/or
covered pixels of the decoded frames copied from the render.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pewm.geometry.layout import layout_depth, planes_from_heights
from pewm.model.frame_ops import as_poses, scale_intrinsics
from pewm.model.normalization import normalize_depth, normalize_rgb
from pewm.model.readers.base import MemoryInput, MemoryReader, ReaderOptions, check_tensor, register_reader


def rendered_input(pmap, K, target_poses, model_cfg, supersample: int = 1) -> MemoryInput:
    """``voxel-render`` memory of one clip: the map rendered into the ``H`` target views at the model's
    resolution (``K`` already scaled to it): ``(1, H, 5, h, w)`` = RGB [0, 1], depth (m), coverage.

    ``supersample`` ``s > 1`` renders at ``s`` times the resolution and averages each ``s x s``
    block's colour over its covered sub-pixels (anti-aliased edges) and its depth over the covered
    sub-pixels on the nearest surface (within the render's blend tolerance; no depth between a
    foreground and a background); a pixel counts as covered when at least half of its sub-pixels are."""
    h, w = model_cfg.image_height, model_cfg.image_width
    T = as_poses(target_poses).float()
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
    layout = None
    if (model_cfg.reader_options or {}).get("layout_prior"):
        layout = plane_depth(pmap, K, T, model_cfg)[None]
    return MemoryInput(rendered=r.cpu()[None], layout=layout)


def plane_depth(pmap, K, target_poses, model_cfg) -> torch.Tensor:
    """``(H, 1, h, w)`` z-depth (m) at which each target pixel's ray meets the floor or the ceiling
    of ``pmap``'s surface map, NaN where it meets neither within ``model_cfg.depth_max`` or the map
    holds no room (:func:`pewm.geometry.layout.planes_from_heights`); ``K`` at the model's resolution."""
    h, w = model_cfg.image_height, model_cfg.image_width
    T = as_poses(target_poses).double().numpy()
    planes = None
    if pmap.surface is not None and len(pmap.surface) > 0:
        planes = planes_from_heights(pmap.surface.get("point")[:, 2].numpy())
    if planes is None:
        return torch.full((len(T), 1, h, w), float("nan"))
    far = float(model_cfg.depth_max)
    d = torch.from_numpy(layout_depth(T, np.asarray(K, np.float64), h, w, planes, far))
    return torch.where(d < far, d, torch.full_like(d, float("nan")))[:, None]


@dataclass(frozen=True)
class VoxelRenderOptions(ReaderOptions):
    """``layout_prior``: also read the floor and ceiling planes of the map (beyond the paper)."""

    layout_prior: bool = False

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.layout_prior, bool):
            self._fail("layout_prior", "a bool")


@register_reader
class VoxelRenderReader(MemoryReader):
    """``voxel-render``: the map's render of each future view as extra, pixel-aligned input."""

    name = "voxel-render"
    Options = VoxelRenderOptions
    channels = 5
    can_anchor = True
    # latent anchoring keeps only cells whose 3x3 neighbourhood is covered too
    ANCHOR_ERODE = True

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.latent:
            c_in, p = cfg.frame_channels + 1, cfg.patch_size
        else:
            c_in, p = self.channels, cfg.pixel_patch
        # no bias: an absent render (coverage 0 everywhere) and a dropped memory both give exactly 0
        self.render_patch = nn.Conv2d(c_in, cfg.width, p, stride=p, bias=False)
        nn.init.zeros_(self.render_patch.weight)
        self.layout_patch = None
        if self.options.layout_prior:  # the plane depth (normalised) and where it is known, per pixel
            q = cfg.pixel_patch
            self.layout_patch = nn.Conv2d(2, cfg.width, q, stride=q, bias=False)
            nn.init.zeros_(self.layout_patch.weight)

    def _layout_input(self, memory, batch, device) -> torch.Tensor:
        cfg = self.cfg
        h, w, H = cfg.image_height, cfg.image_width, cfg.frames
        if memory.layout is None:
            return torch.zeros(batch, H, 2, h, w, device=device, dtype=torch.float32)
        d = check_tensor(memory.layout, "layout", (batch, H, 1, h, w), self.name).to(device=device, dtype=torch.float32)
        known = (torch.isfinite(d) & (d > 0)).float()
        norm = normalize_depth(torch.nan_to_num(d, nan=cfg.depth_max), cfg.depth_min, cfg.depth_max)
        return torch.cat([norm * known, known], dim=2)

    def _pixel_input(self, memory, batch, device) -> torch.Tensor:
        cfg = self.cfg
        h, w, H = cfg.image_height, cfg.image_width, cfg.frames
        if memory.rendered is None:
            return torch.zeros(batch, H, self.channels, h, w, device=device, dtype=torch.float32)
        r = check_tensor(memory.rendered, "rendered", (batch, H, self.channels, h, w), self.name)
        r = r.to(device=device, dtype=torch.float32)
        cov = (r[:, :, 4:5] > 0.5).float()
        return torch.cat(
            [normalize_rgb(r[:, :, :3]) * cov, normalize_depth(r[:, :, 3:4], cfg.depth_min, cfg.depth_max) * cov, cov],
            dim=2,
        )

    def _latent_input(self, memory, batch, device) -> torch.Tensor:
        cfg = self.cfg
        shape = (batch, cfg.frames, cfg.frame_channels + 1, cfg.frame_height, cfg.frame_width)
        if memory.rendered_latent is None:
            if memory.rendered is not None:
                raise ValueError(
                    "MemoryInput.rendered is in pixels but this model diffuses latents: pass the memory through "
                    "WorldModel.encode_memory() (WorldModel.generate and training do it)"
                )
            return torch.zeros(shape, device=device, dtype=torch.float32)
        return check_tensor(memory.rendered_latent, "rendered_latent", shape, self.name).to(device=device,
                                                                                            dtype=torch.float32)

    def input_tokens(self, memory, batch, device, dtype):
        cfg = self.cfg
        H, L = cfg.frames, cfg.tokens_per_frame
        x = self._latent_input(memory, batch, device) if cfg.latent else self._pixel_input(memory, batch, device)
        tok = self.render_patch(x.flatten(0, 1).to(dtype)).flatten(2).transpose(1, 2).reshape(batch, H * L, -1)
        if self.layout_patch is not None:
            lay = self._layout_input(memory, batch, device).flatten(0, 1).to(dtype)
            tok = tok + self.layout_patch(lay).flatten(2).transpose(1, 2).reshape(batch, H * L, -1)
        return F.pad(tok, (0, 0, L, 0))  # no render for the current frame

    def encode_memory(self, memory: MemoryInput, model) -> MemoryInput:
        """Fill ``rendered_latent`` from ``rendered`` for a latent-space model: the covered part of
        the render (uncovered pixels zeroed, as in pixel space) encoded like a frame and zeroed in
        latent cells with no coverage at all, plus the coverage averaged over each latent cell; an
        empty render thus gives all zeros, exactly what a dropped memory gives."""
        if model.autoencoder is None or memory.rendered is None or memory.rendered_latent is not None:
            return memory
        cfg = self.cfg
        r = torch.as_tensor(memory.rendered).to(model.device, torch.float32)
        B, H = r.shape[:2]
        if tuple(r.shape[2:]) != (5, cfg.image_height, cfg.image_width):
            raise ValueError(
                f"MemoryInput.rendered has shape {tuple(r.shape)}, expected (B, {cfg.frames}, 5, {cfg.image_height}, "
                f"{cfg.image_width})"
            )
        cov = (r[:, :, 4:5] > 0.5).float()
        x = model.denoiser.normalize_frames(r[:, :, :3], r[:, :, 3]) * cov
        with torch.no_grad():
            z = model.encode_frames(x)
        d = cfg.downsample
        cov_lat = F.avg_pool2d(cov.flatten(0, 1), d).reshape(B, H, 1, *z.shape[-2:])
        # cells the render does not cover at all carry no latent (the encoder maps zeros to a
        # non-zero latent): an empty map then gives exactly the dropped memory's zero input
        z = z * (cov_lat > 0).to(z.dtype)
        return replace(memory, rendered_latent=torch.cat([z, cov_lat], dim=2))

    # -- sampling hooks ----------------------------------------------------------------------------
    def resolve_anchor(self, anchor: str, explicit: bool, memory: MemoryInput | None, latent: bool) -> str:
        """``both`` / ``latent`` / ``pixel`` as far as ``memory`` allows: in pixel space latent
        anchoring is pixel anchoring; without a pixel render ``both`` is ``latent``; without the
        needed render there is nothing to anchor to (``none``)."""
        if anchor == "none":
            return anchor
        if anchor in ("latent", "both") and not latent:
            anchor = "pixel"  # in pixel space the two are the same idea; pixels are exact
        has_render = memory is not None and memory.rendered is not None
        has_latent = memory is not None and (has_render or memory.rendered_latent is not None)
        if anchor == "both" and not has_render:
            anchor = "latent"
        if (anchor == "pixel" and not has_render) or (anchor == "latent" and not has_latent):
            return "none"  # nothing to anchor to (no memory given)
        return anchor

    def latent_anchor(self, memory: MemoryInput | None):
        """Known latents and mask of the cells the render covers completely (and, with
        ``ANCHOR_ERODE``, whose neighbours it covers completely too)."""
        if memory is None or memory.rendered_latent is None:
            return None, None
        z, cov = memory.rendered_latent[:, :, :-1], memory.rendered_latent[:, :, -1:]
        full = (cov >= 1.0 - 1e-6).to(z.dtype)
        # the encoder sees a few pixels past each cell, so a covered cell next to an uncovered one
        # holds part of the zero fill: keep only cells whose 3x3 neighbourhood is covered too
        mask = full
        if self.ANCHOR_ERODE:
            inner = -F.max_pool2d(-full.flatten(0, 1), 3, stride=1, padding=1)
            mask = inner.reshape(full.shape) * full
        if not bool(mask.any()):
            return None, None
        return z, mask

    def pixel_anchor(self, memory: MemoryInput):
        r = torch.as_tensor(memory.rendered).to(torch.float32)
        cov = r[:, :, 4:5] > 0.5
        return r[:, :, :3].clamp(0.0, 1.0), r[:, :, 3], cov

    # -- memory building ---------------------------------------------------------------------------
    @classmethod
    def new_store(cls, builder):
        """A map with its fine surface map (rendered into the targets); no extractor features."""
        return builder.new_map(surface=True, extractor=None)

    @classmethod
    def read_store(cls, builder, store, current_pose, target_poses, K_model) -> MemoryInput:
        return rendered_input(store, K_model, target_poses, builder.model_cfg, builder.cfg.render_supersample)


__all__ = ["VoxelRenderOptions", "VoxelRenderReader", "plane_depth", "rendered_input"]
