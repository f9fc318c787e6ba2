"""``voxel-xattn`` (the paper, §3.2-3.3): cross-attention from the video tokens to the tokens of the
3D feature-voxel map, each a linear map of (voxel feature ‖ sincos3d(voxel position)).

Memory of one clip (:func:`map_tokens_input`): the ``max_memory_tokens`` voxels of the map nearest
to the current camera; features zero-padded to ``memory_dim``; positions = voxel centres in the
**current camera's frame** (OpenCV: +z in front of the camera); padded rows masked. Feature
channels: a map built with an extractor of ``dim < memory_dim`` (e.g. ``rgb``, 3 channels) has its
features zero-padded; the token projection then learns zero weights for the absent channels.

Options beyond the paper (:class:`VoxelXAttnOptions`): ``ray_query`` gives each video token's query
a linear map of :func:`ray_point_embedding` of its patch's ray, so attending to the voxels along a
target ray is a similarity in the shared sinusoidal space rather than a camera projection the
attention must learn; ``ray_bias`` (sigma, metres) adds :func:`ray_distance_bias` to the attention
logits, so each query starts reading the voxels on its own ray. Both are computed once per forward
(all blocks share the rays) and reused across sampling steps. ``cell_tokens`` = k makes the
attention local: each head of a query token attends only to the null token and the ``k`` map
tokens nearest to the camera among those whose voxels cover one latent cell of the token's patch
in its view (:mod:`pewm.model.readers.cell_lists`; head ``h`` reads cell ``h mod patch^2``, see
:func:`~pewm.model.readers.cell_lists.head_cells`), with
the pair's depth and projection offset added to key and value. The map is then read from
``store.tokens()`` in full (every voxel, not the ``max_memory_tokens`` nearest the camera) and up to
``cell_token_cap`` distinct tokens are kept per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pewm.model.frame_ops import as_pose, pad_features, world_to_camera
from pewm.model.layers import sincos_3d
from pewm.model.readers.base import MemoryContext, MemoryInput, MemoryReader, ReaderOptions, check_tensor, register_reader
from pewm.model.readers.cell_lists import PAIR_FEATURES, cell_token_lists, head_cells

# depths (metres) along each query token's ray whose 3D embeddings form its ray query
RAY_QUERY_DEPTHS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def ray_origins(cam: torch.Tensor, frames: int) -> torch.Tensor:
    """Camera centre of every frame ``(B, frames, 3)`` from the per-token Plücker rays ``cam``
    ``(B, frames * L, 6)`` (moment ``o x d``, direction ``d``; a patch mean of rays through one
    centre is again such a ray). Least squares over a frame's tokens of ``d x o = -m``: exact
    (up to rounding) because every ray of a frame passes through its centre."""
    B, N, _ = cam.shape
    c = cam.double().reshape(B, frames, N // frames, 6)
    m, d = c[..., :3], c[..., 3:]
    zero = torch.zeros_like(d[..., 0])
    skew = torch.stack([  # skew(d) @ o = d x o
        torch.stack([zero, -d[..., 2], d[..., 1]], -1),
        torch.stack([d[..., 2], zero, -d[..., 0]], -1),
        torch.stack([-d[..., 1], d[..., 0], zero], -1),
    ], -2)
    At = skew.transpose(-1, -2)
    o = torch.linalg.solve((At @ skew).sum(2), (At @ -m[..., None]).sum(2))
    return o[..., 0].to(cam.dtype)


def token_rays(cam: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origin and unit direction ``(B, frames * L, 3)`` each of every token's ray (fp32)."""
    B, N, _ = cam.shape
    o = ray_origins(cam, frames).repeat_interleave(N // frames, dim=1).float()
    d = cam[..., 3:].float()
    return o, d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def ray_point_embedding(cam: torch.Tensor, frames: int, dim: int, depths=RAY_QUERY_DEPTHS) -> torch.Tensor:
    """``(B, frames * L, dim)``: for each token, the mean 3D sinusoidal embedding (the map tokens'
    own :func:`sincos_3d`) of the points at ``depths`` metres along its ray, all in the current
    camera's frame. Its dot product with a map token's position embedding is a sum of sinusoidal
    kernels between the voxel and the ray's points: large for voxels on the ray, whatever the pose."""
    o, d = token_rays(cam, frames)  # (B, N, 3) each
    s = torch.as_tensor(depths, dtype=torch.float32, device=cam.device)
    pts = o[:, :, None] + s[None, None, :, None] * d[:, :, None]  # (B, N, S, 3)
    return sincos_3d(pts, dim).mean(dim=2)


def ray_distance_bias(cam: torch.Tensor, frames: int, positions: torch.Tensor, sigma: float) -> torch.Tensor:
    """Attention-logit bias ``(B, frames * L, N)`` = ``-dist^2 / (2 sigma^2)``, ``dist`` the distance
    of each map token's position (``(B, N, 3)``, current camera frame) from the half-line of each
    video token's ray (from its camera centre forward; behind the camera, the distance to the
    centre). Map tokens on a target ray start with the largest weights, so the memory read is
    pixel-aligned from the first step of stage 2 (beyond the paper)."""
    o, d = token_rays(cam, frames)  # (B, L, 3) each
    rel = positions.float()[:, None, :, :] - o[:, :, None, :]  # (B, L, N, 3)
    t = (rel * d[:, :, None, :]).sum(-1).clamp_min(0.0)
    dist2 = (rel * rel).sum(-1) - t * t
    return -dist2.clamp_min(0.0) / (2.0 * sigma * sigma)


def map_tokens_input(pmap, current_pose, model_cfg) -> MemoryInput:
    """``voxel-xattn`` memory of one clip (batch of 1) from a :class:`~pewm.memory.PersistentMap`:
    the map tokens nearest to the current camera, positions in the current camera's frame, padded
    to ``max_memory_tokens`` (§3.2-3.3)."""
    n = model_cfg.max_memory_tokens
    T0 = as_pose(current_pose)
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


def cell_tokens_input(pmap, current_pose, target_poses, K_model, model_cfg, k: int, cap: int,
                      voxel: float) -> MemoryInput:
    """``voxel-xattn`` memory of one clip with ``cell_tokens`` = ``k``: the map tokens that cover some
    latent cell of the clip's views (current frame, then ``target_poses``), at most ``cap`` of them,
    with each view's cell lists (:func:`~pewm.model.readers.cell_lists.cell_token_lists`)."""
    T0 = as_pose(current_pose)
    views = torch.cat([T0[None], torch.as_tensor(target_poses, dtype=torch.float64).reshape(-1, 4, 4)])
    tok = pmap.tokens(None)
    centers = tok.centers.cpu().double()
    lists = cell_token_lists(centers, views, torch.as_tensor(K_model).reshape(3, 3),
                             (model_cfg.image_height, model_cfg.image_width),
                             (model_cfg.frame_height, model_cfg.frame_width), voxel, k, max_tokens=cap)
    rows = lists.tokens
    if tok.features.shape[0]:
        feats = pad_features(tok.features.cpu()[rows], model_cfg.memory_dim)
    else:
        feats = torch.zeros(0, model_cfg.memory_dim)
    pos = world_to_camera(centers[rows], T0).float()
    mask = torch.ones(rows.shape[0], dtype=torch.bool)
    if rows.shape[0] == 0:  # one masked row keeps the shapes regular
        feats, pos, mask = torch.zeros(1, model_cfg.memory_dim), torch.zeros(1, 3), torch.zeros(1, dtype=torch.bool)
    return MemoryInput(tokens=feats[None], positions=pos[None], mask=mask[None],
                       cell_index=lists.index[None], cell_geometry=lists.geometry[None])


@dataclass(frozen=True)
class VoxelXAttnOptions(ReaderOptions):
    """``ray_query``: queries also embed 3D points along their rays; ``ray_bias``: sigma (m) of an
    attention bias toward map tokens on each ray, 0 = off; ``cell_tokens``: k > 0 makes each head
    attend only to the k nearest map tokens covering its latent cell, up to ``cell_token_cap``
    tokens per clip (all beyond the paper)."""

    ray_query: bool = False
    ray_bias: float = 0.0
    cell_tokens: int = 0
    cell_token_cap: int = 4096

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.ray_query, bool):
            self._fail("ray_query", "a bool")
        if not isinstance(self.ray_bias, (int, float)) or isinstance(self.ray_bias, bool) or not self.ray_bias >= 0:
            self._fail("ray_bias", "a length >= 0 in metres")
        for name, low in (("cell_tokens", 0), ("cell_token_cap", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                self._fail(name, f"an integer >= {low}")
        if self.cell_tokens and (self.ray_query or self.ray_bias > 0):
            raise ValueError("voxel-xattn reader option cell_tokens replaces ray_query and ray_bias; set them off")


@register_reader
class VoxelCrossAttnReader(MemoryReader):
    """``voxel-xattn`` (the paper, §3.3): map tokens = Linear(feature ‖ sincos3d(position))."""

    name = "voxel-xattn"
    Options = VoxelXAttnOptions
    uses_features = True

    @classmethod
    def check_config(cls, cfg, options: VoxelXAttnOptions) -> None:
        if (options.ray_query or options.ray_bias > 0) and cfg.tokens_per_frame < 2:
            raise ValueError(f"voxel-xattn reader options ray_query/ray_bias need >= 2 tokens per frame to recover "
                             f"camera centres, got tokens_per_frame={cfg.tokens_per_frame}")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.token_proj = nn.Linear(cfg.memory_dim + cfg.memory_pos_dim, cfg.width)
        self.ray_query = nn.Linear(cfg.memory_pos_dim, cfg.width) if self.options.ray_query else None
        # relative geometry of a (cell, token) pair -> key and value offsets, per head
        self.pair_proj = nn.Linear(PAIR_FEATURES, 2 * cfg.width) if self.options.cell_tokens else None
        if self.pair_proj is not None:
            self.register_buffer("head_cells", head_cells(cfg.grid, cfg.patch_size, cfg.heads), persistent=False)

    def prepare(self, memory: MemoryInput | None, batch: int, device, dtype=torch.float32) -> MemoryContext:
        ctx = super().prepare(memory, batch, device, dtype)
        if memory is not None and memory.tokens is not None:  # positions were validated by tokenize
            ctx.positions = memory.positions.to(device=device, dtype=torch.float32)
        if self.pair_proj is not None:
            ctx.cells = self._cells(memory, ctx, batch, device, dtype)
        return ctx

    def _cells(self, memory: MemoryInput | None, ctx: MemoryContext, batch: int, device, dtype) -> tuple:
        """The per-head cell lists of every query token: (index, valid, pair_k, pair_v)."""
        cfg = self.cfg
        V, heads, hd = cfg.frames + 1, cfg.heads, cfg.head_dim
        L = V * cfg.tokens_per_frame
        cells = cfg.frame_height * cfg.frame_width
        k = self.options.cell_tokens
        if memory is None or memory.cell_index is None or ctx.tokens.shape[1] == 0:
            if memory is not None and memory.tokens is not None and memory.cell_index is None:
                raise ValueError("voxel-xattn with cell_tokens needs MemoryInput.cell_index (build the memory "
                                 "with this model's MemoryBuilder)")
            index = torch.full((batch, V, cells, k), -1, dtype=torch.long, device=device)
            geo = torch.zeros(batch, V, cells, k, PAIR_FEATURES, device=device)
        else:
            n = ctx.tokens.shape[1]
            index = check_tensor(memory.cell_index, "cell_index", (batch, V, cells, k), self.name).to(device)
            geo = check_tensor(memory.cell_geometry, "cell_geometry", (batch, V, cells, k, PAIR_FEATURES),
                               self.name).to(device=device, dtype=torch.float32)
            if index.dtype != torch.long or bool((index >= n).any()) or bool((index < -1).any()):
                raise ValueError(f"MemoryInput.cell_index must be long rows of the {n} tokens or -1")
        hc = self.head_cells.to(device)  # (heads, tokens per frame)
        index = index[:, :, hc]  # (B, V, heads, Lf, k)
        geo = geo[:, :, hc]
        index = index.permute(0, 2, 1, 3, 4).reshape(batch, heads, L, k)
        geo = geo.permute(0, 2, 1, 3, 4, 5).reshape(batch, heads, L, k, PAIR_FEATURES)
        w = self.pair_proj.weight.view(2, heads, hd, PAIR_FEATURES)
        b = self.pair_proj.bias.view(2, heads, 1, 1, hd)
        pair = torch.einsum("bhlkf,shdf->sbhlkd", geo.to(w.dtype), w) + b[:, None]
        return index, index >= 0, pair[0].to(dtype), pair[1].to(dtype)

    def block(self, i: int, x: torch.Tensor, c: torch.Tensor, cam: torch.Tensor, ctx: MemoryContext) -> torch.Tensor:
        extra = bias = None
        sigma = self.options.ray_bias
        if self.ray_query is not None or sigma > 0:
            # the same rays for every block of one forward: compute once (keyed on the tensors)
            cached = getattr(self, "_ray_cache", None)
            if cached is None or cached[0] is not cam or cached[1] is not ctx:
                frames = self.cfg.frames + 1
                emb = ray_point_embedding(cam.float(), frames, self.cfg.memory_pos_dim) \
                    if self.ray_query is not None else None
                rb = None
                if sigma > 0 and ctx.positions is not None and ctx.positions.shape[1] > 0:
                    rb = ray_distance_bias(cam.float(), frames, ctx.positions, sigma)
                cached = (cam, ctx, emb, rb)
                self._ray_cache = cached
            if cached[2] is not None:
                extra = self.ray_query(cached[2].to(x.dtype))
            bias = cached[3]
        return self.blocks[i](x, c, cam, ctx, q_extra=extra, attn_bias=bias)

    def tokenize(self, memory, batch, device, dtype):
        cfg = self.cfg
        if memory.tokens is None:
            if memory.positions is not None:
                raise ValueError("MemoryInput.positions is given but MemoryInput.tokens is None")
            # an empty memory still runs the projection so every parameter is in the graph (DDP)
            feats = torch.zeros(batch, 0, cfg.memory_dim + cfg.memory_pos_dim, device=device, dtype=dtype)
            return self.token_proj(feats), torch.zeros(batch, 0, dtype=torch.bool, device=device)
        tok = check_tensor(memory.tokens, "tokens", (batch, None, cfg.memory_dim), self.name)
        n = tok.shape[1]
        cap, what = (self.options.cell_token_cap, "reader option cell_token_cap") if self.options.cell_tokens else (
            cfg.max_memory_tokens, "ModelConfig.max_memory_tokens")
        if n > cap:
            raise ValueError(f"MemoryInput.tokens has {n} tokens, more than {what}={cap}")
        pos = check_tensor(memory.positions, "positions", (batch, n, 3), self.name)
        mask = memory.mask
        if mask is None:
            mask = torch.ones(batch, n, dtype=torch.bool, device=device)
        else:
            mask = check_tensor(mask, "mask", (batch, n), self.name).to(device=device, dtype=torch.bool)
        pe = sincos_3d(pos.to(device=device, dtype=torch.float32), cfg.memory_pos_dim)
        feats = torch.cat([tok.to(device=device, dtype=dtype), pe.to(dtype)], dim=-1)
        return self.token_proj(feats), mask

    # -- memory building ---------------------------------------------------------------------------
    @classmethod
    def new_store(cls, builder):
        """A feature-voxel map (no surface map) fusing the builder's feature extractor."""
        return builder.new_map(surface=False, extractor=builder.extractor)

    @classmethod
    def read_store(cls, builder, store, current_pose, target_poses, K_model) -> MemoryInput:
        opts = cls.Options.from_dict(builder.model_cfg.reader_options)
        if opts.cell_tokens:
            return cell_tokens_input(store, current_pose, target_poses, K_model, builder.model_cfg, opts.cell_tokens,
                                     opts.cell_token_cap, max(builder.cfg.feature_voxel))
        return map_tokens_input(store, current_pose, builder.model_cfg)


__all__ = ["RAY_QUERY_DEPTHS", "VoxelCrossAttnReader", "VoxelXAttnOptions", "cell_tokens_input", "map_tokens_input", "ray_distance_bias",
           "ray_origins", "ray_point_embedding", "token_rays"]
