"""Memory readers: how the denoiser reads the persistent memory (§3.3 of arXiv 2505.05495).

One interface, four implementations chosen by ``ModelConfig.reader`` so that the paper's
comparison (Table 1) is one flag:

=================  ==========================================================================
``voxel-xattn``    the paper: a memory block after every transformer block cross-attends from
                   the video tokens (plus their camera rays) to the map tokens (voxel features
                   concatenated with a 3D sinusoidal position embedding).
``none``           NWM baseline: the same model with an empty memory (only the null token).
``frames``         image-memory baseline: the same memory blocks attend to patch tokens of
                   retrieved past RGB-D frames with their Plücker rays.
``voxel-render``   beyond the paper: the map rendered into every target view (RGB, depth,
                   coverage: 5 channels) enters pixel-aligned, as extra input channels; the
                   memory blocks see an empty memory.
=================  ==========================================================================

Parameter parity (the paper compares "equal parameter counts"): all four readers own the *same*
stack of memory blocks; they differ only in a small tokenizer (<= 2% of the tiny model), so the
four totals stay within 5% with no width compensation (see ``benchmarks/model_throughput.py``).

Memory block (one per transformer block; *unverified* reconstruction of the paper's equation)::

    s_H, b_H, a_M, s_F, b_F, a_H = AdaLN_video(t)          # expert AdaLN: video stream
    s_M, b_M                     = AdaLN_map(t)            # expert AdaLN: map stream
    H += a_M * Attn(q = W_q LN(H)(1+s_H)+b_H + W_c C,  kv = [null, LN(M)(1+s_M)+b_M])
    H += a_H * FF(LN(H)(1+s_F)+b_F)

``C`` is the mean-pooled Plücker ray of each token's patch (the "camera embedding" concatenated to
the video hidden states; a linear layer on a concatenation equals the sum of two linear maps).
The map stream is read, not updated, so it has no gate. Every AdaLN is zero-initialised: at
initialisation ``a_M = a_H = 0`` (or, with ``ModelConfig.memory_init = "zero-out"``, the gates are 1
and the attention's and feed-forward's output projections 0), and adding the memory blocks to a
trained stage-1 model leaves its output exactly unchanged (stage 2 starts from the stage-1 model). A learned null token per block
keeps the attention defined when the memory is empty or dropped (classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pewm.geometry import plucker_rays
from pewm.model.config import MEMORY_INITS
from pewm.model.layers import AdaLNModulation, CrossAttention, MLP, gated_residual, modulate, sincos_2d_grid, sincos_3d
from pewm.model.normalization import normalize_depth, normalize_rgb


@dataclass
class MemoryInput:
    """What the model is given as memory. Every field is optional; each reader reads its own.

    * ``tokens`` ``(B, N, memory_dim)`` map token features and ``positions`` ``(B, N, 3)`` their
      world positions expressed **in the current camera's frame** (metres, OpenCV axes); the model
      adds the 3D sinusoidal embedding. ``mask`` ``(B, N)`` bool, True = valid token.
      (``voxel-xattn``)
    * ``frames`` ``(B, K, 4, h, w)``: retrieved past frames, RGB in ``[0, 1]`` then depth in metres;
      ``frame_poses`` ``(B, K, 4, 4)`` their camera-to-current-camera poses; ``frame_intrinsics``
      ``(B, K, 3, 3)``, ``(B, 3, 3)`` or ``(3, 3)``; ``frame_mask`` ``(B, K)`` bool. (``frames``)
    * ``rendered`` ``(B, H, 5, h, w)``: the map rendered into each *future* view: RGB in ``[0, 1]``,
      depth in metres, coverage in ``{0, 1}``. (``voxel-render``)
    * ``rendered_latent`` ``(B, H, C + 1, h', w')``: for a latent-space model, the render encoded
      by the model's autoencoder plus the coverage averaged over each latent cell; filled in by
      :meth:`~pewm.model.world_model.WorldModel.encode_memory` from ``rendered``.
    """

    tokens: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    frames: torch.Tensor | None = None
    frame_poses: torch.Tensor | None = None
    frame_intrinsics: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None
    rendered: torch.Tensor | None = None
    rendered_latent: torch.Tensor | None = None

    def to(self, device=None, dtype=None) -> "MemoryInput":
        """A copy on ``device``; floating fields cast to ``dtype`` (masks stay bool)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            out[f.name] = v
        return MemoryInput(**out)

    @staticmethod
    def empty() -> "MemoryInput":
        return MemoryInput()


@dataclass
class MemoryContext:
    """A reader's prepared memory for one batch (computed once per clip, reused at every step).

    ``tokens`` ``(B, N, width)`` map-stream tokens for the memory blocks, ``mask`` ``(B, N)``;
    ``input_tokens`` ``(B, (1 + H) * L, width)`` added to the patch embeddings (``voxel-render``).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    input_tokens: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # (B, N, 3) token positions in the current camera's frame (voxel-xattn)
    attn_mask: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # (B, 1 + N) mask with the always-valid null token first; None when every token is valid
        # (lets SDPA take its unmasked fast path and avoids a device sync in every block)
        if not bool(self.mask.all()):
            ones = torch.ones(self.mask.shape[0], 1, dtype=torch.bool, device=self.mask.device)
            self.attn_mask = torch.cat([ones, self.mask], dim=1)

    def drop(self, keep: torch.Tensor) -> "MemoryContext":
        """The same memory with the samples where ``keep`` (``(B,)`` bool) is False emptied (CFG)."""
        keep = keep.to(self.mask.device)
        it = self.input_tokens
        if it is not None:
            it = it * keep[:, None, None].to(it.dtype)
        return replace(self, mask=self.mask & keep[:, None], input_tokens=it)

    def repeat(self, n: int) -> "MemoryContext":
        it = None if self.input_tokens is None else self.input_tokens.repeat(n, 1, 1)
        pos = None if self.positions is None else self.positions.repeat(n, 1, 1)
        return MemoryContext(self.tokens.repeat(n, 1, 1), self.mask.repeat(n, 1), it, pos)


class MemoryBlock(nn.Module):
    """Cross-attention from video tokens to memory tokens with expert AdaLNs, then a feed-forward
    layer (§3.3). Exactly the identity at initialisation, by ``init``:

    - ``zero-gate`` (AdaLN-Zero, the paper's reading): the gates ``a_M``, ``a_H`` start at 0. The
      attention and feed-forward then get no gradient until the gates have moved, and the gates'
      own gradient is the correlation of a randomly initialised attention's output with the loss.
    - ``zero-out``: the gates start at 1 (their AdaLN bias) and the output projections of the
      attention and of the feed-forward start at 0; the projections get gradient from the first
      step (a linear read-out of the attention output), the rest as soon as they move.
    """

    def __init__(self, width: int, heads: int, cond_dim: int, mlp_ratio: float, cam_channels: int = 6,
                 init: str = "zero-gate"):
        super().__init__()
        self.ada_video = AdaLNModulation(cond_dim, width, 6)
        self.ada_map = AdaLNModulation(cond_dim, width, 2)
        self.norm_video = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm_map = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm_ff = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.cam = nn.Linear(cam_channels, width, bias=False)
        self.null = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.attn = CrossAttention(width, heads)
        self.ff = MLP(width, mlp_ratio)
        if init == "zero-out":
            with torch.no_grad():
                bias = self.ada_video.linear.bias.view(6, width)
                bias[2].fill_(1.0)  # a_M
                bias[5].fill_(1.0)  # a_H
                for lin in (self.attn.proj, self.ff.fc2):
                    lin.weight.zero_()
                    lin.bias.zero_()
        elif init not in MEMORY_INITS:
            raise ValueError(f"MemoryBlock: init must be one of {MEMORY_INITS}, got {init!r}")

    def forward(self, x: torch.Tensor, c: torch.Tensor, cam: torch.Tensor, ctx: MemoryContext,
                q_extra: torch.Tensor | None = None, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``q_extra`` ``(B, L, width)``: added to the queries beside the camera embedding;
        ``attn_bias`` ``(B, L, N)``: added to the attention logits of the N map tokens (the null
        token gets 0)."""
        shift_h, scale_h, gate_m, shift_f, scale_f, gate_h = self.ada_video(c)
        shift_m, scale_m = self.ada_map(c)
        b = x.shape[0]
        mem = torch.cat([self.null.expand(b, -1, -1).to(x.dtype), ctx.tokens.to(x.dtype)], dim=1)
        mem = modulate(self.norm_map(mem), shift_m, scale_m)
        q = modulate(self.norm_video(x), shift_h, scale_h)
        extra = self.cam(cam.to(x.dtype))
        if q_extra is not None:
            extra = extra + q_extra
        bias = None
        if attn_bias is not None:
            bias = F.pad(attn_bias.to(x.dtype), (1, 0))  # the null token: no bias
        a = self.attn(q, mem, mask=ctx.attn_mask, q_extra=extra, bias=bias)
        x = gated_residual(x, gate_m, a)
        return gated_residual(x, gate_h, self.ff(modulate(self.norm_ff(x), shift_f, scale_f)))


READERS: dict[str, type["MemoryReader"]] = {}


def register_reader(cls: type["MemoryReader"]) -> type["MemoryReader"]:
    if cls.name in READERS:
        raise ValueError(f"memory reader {cls.name!r} is already registered")
    READERS[cls.name] = cls
    return cls


def build_reader(cfg) -> "MemoryReader":
    """The reader named by ``cfg.reader``."""
    try:
        cls = READERS[cfg.reader]
    except KeyError:
        raise ValueError(f"unknown memory reader {cfg.reader!r}; available: {sorted(READERS)}") from None
    return cls(cfg)


class MemoryReader(nn.Module):
    """Base class: owns one :class:`MemoryBlock` per transformer block (``blocks[i]`` runs right
    after backbone block ``i``) and turns a :class:`MemoryInput` into a :class:`MemoryContext`.

    Subclasses set ``name`` and implement :meth:`tokenize`; ``voxel-render`` also overrides
    :meth:`input_tokens`.
    """

    name: ClassVar[str] = ""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            MemoryBlock(cfg.width, cfg.heads, cfg.time_embed_dim, cfg.memory_mlp_ratio, init=cfg.memory_init)
            for _ in range(cfg.depth)
        )

    # -- to implement --------------------------------------------------------------------------
    def tokenize(self, memory: MemoryInput, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Map-stream tokens ``(B, N, width)`` and mask ``(B, N)`` (default: empty memory)."""
        return self._empty(batch, device, dtype)

    def input_tokens(self, memory: MemoryInput, batch: int, device, dtype) -> torch.Tensor | None:
        """Tokens added to the patch embeddings, ``(B, (1 + H) * L, width)``, or None."""
        return None

    # -- shared --------------------------------------------------------------------------------
    def _empty(self, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.zeros(batch, 0, self.cfg.width, device=device, dtype=dtype),
            torch.zeros(batch, 0, dtype=torch.bool, device=device),
        )

    def prepare(self, memory: MemoryInput | None, batch: int, device, dtype=torch.float32) -> MemoryContext:
        """Validate and tokenise ``memory`` (None = empty) for a batch of ``batch`` clips."""
        memory = memory if memory is not None else MemoryInput()
        if not isinstance(memory, MemoryInput):
            raise TypeError(f"memory must be a MemoryInput or None, got {type(memory).__name__}")
        tokens, mask = self.tokenize(memory, batch, device, dtype)
        return MemoryContext(tokens, mask, self.input_tokens(memory, batch, device, dtype))

    def block(self, i: int, x: torch.Tensor, c: torch.Tensor, cam: torch.Tensor, ctx: MemoryContext) -> torch.Tensor:
        return self.blocks[i](x, c, cam, ctx)


def _check(t: torch.Tensor | None, name: str, shape: tuple, reader: str) -> torch.Tensor:
    """Check ``t`` against ``shape`` (``None`` entries are free) and name the field on failure."""
    if t is None:
        raise ValueError(f"memory reader {reader!r} needs MemoryInput.{name}, which is None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"MemoryInput.{name} must be a torch.Tensor, got {type(t).__name__}")
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"MemoryInput.{name} has shape {tuple(t.shape)}, expected {want} (reader {reader!r})")
    return t


@register_reader
class NoMemoryReader(MemoryReader):
    """``none`` (NWM baseline): the memory blocks of the paper's model, always given an empty
    memory (only each block's null token). Any memory passed in is ignored."""

    name = "none"


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


@register_reader
class VoxelCrossAttnReader(MemoryReader):
    """``voxel-xattn`` (the paper, §3.3): map tokens = Linear(feature ‖ sincos3d(position)).

    With ``ModelConfig.memory_ray_query`` (beyond the paper), each video token's query also gets a
    linear map of :func:`ray_point_embedding` of its patch's ray, so attending to the voxels along a
    target ray is a similarity in the shared sinusoidal space rather than a camera projection the
    attention must learn. With ``ModelConfig.memory_ray_bias`` (beyond the paper) the attention
    logits get :func:`ray_distance_bias`, so each query starts reading the voxels on its own ray.
    Both are computed once per forward (all blocks share the rays) and reused across sampling steps."""

    name = "voxel-xattn"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.token_proj = nn.Linear(cfg.memory_dim + cfg.memory_pos_dim, cfg.width)
        self.ray_query = nn.Linear(cfg.memory_pos_dim, cfg.width) if cfg.memory_ray_query else None

    def prepare(self, memory: MemoryInput | None, batch: int, device, dtype=torch.float32) -> MemoryContext:
        ctx = super().prepare(memory, batch, device, dtype)
        if memory is not None and memory.tokens is not None:  # positions were validated by tokenize
            ctx.positions = memory.positions.to(device=device, dtype=torch.float32)
        return ctx

    def block(self, i: int, x: torch.Tensor, c: torch.Tensor, cam: torch.Tensor, ctx: MemoryContext) -> torch.Tensor:
        extra = bias = None
        if self.ray_query is not None or self.cfg.memory_ray_bias > 0:
            # the same rays for every block of one forward: compute once (keyed on the tensors)
            cached = getattr(self, "_ray_cache", None)
            if cached is None or cached[0] is not cam or cached[1] is not ctx:
                emb = ray_point_embedding(cam.float(), self.cfg.frames + 1, self.cfg.memory_pos_dim) \
                    if self.ray_query is not None else None
                rb = None
                if self.cfg.memory_ray_bias > 0 and ctx.positions is not None and ctx.positions.shape[1] > 0:
                    rb = ray_distance_bias(cam.float(), self.cfg.frames + 1, ctx.positions, self.cfg.memory_ray_bias)
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
        tok = _check(memory.tokens, "tokens", (batch, None, cfg.memory_dim), self.name)
        n = tok.shape[1]
        if n > cfg.max_memory_tokens:
            raise ValueError(
                f"MemoryInput.tokens has {n} tokens, more than ModelConfig.max_memory_tokens={cfg.max_memory_tokens}"
            )
        pos = _check(memory.positions, "positions", (batch, n, 3), self.name)
        mask = memory.mask
        if mask is None:
            mask = torch.ones(batch, n, dtype=torch.bool, device=device)
        else:
            mask = _check(mask, "mask", (batch, n), self.name).to(device=device, dtype=torch.bool)
        pe = sincos_3d(pos.to(device=device, dtype=torch.float32), cfg.memory_pos_dim)
        feats = torch.cat([tok.to(device=device, dtype=dtype), pe.to(dtype)], dim=-1)
        return self.token_proj(feats), mask


@register_reader
class FramesReader(MemoryReader):
    """``frames`` (image-memory baseline, Table 1): patch tokens of retrieved past RGB-D frames,
    each pixel with the Plücker ray of its camera relative to the current camera, patchified like
    the backbone's input (plus the fixed 2D patch-grid embedding)."""

    name = "frames"

    def __init__(self, cfg):
        super().__init__(cfg)
        p = cfg.pixel_patch
        self.patch = nn.Conv2d(cfg.rgbd_channels + cfg.plucker_channels, cfg.width, p, stride=p)
        self.register_buffer("grid_pe", sincos_2d_grid(*cfg.grid, cfg.width), persistent=False)

    def tokenize(self, memory, batch, device, dtype):
        cfg = self.cfg
        h, w = cfg.image_height, cfg.image_width
        if memory.frames is None:
            x = torch.zeros(batch, cfg.rgbd_channels + cfg.plucker_channels, h, w, device=device, dtype=dtype)[:0]
            t = self.patch(x).flatten(2).transpose(1, 2).reshape(batch, 0, cfg.width)
            return t, torch.zeros(batch, 0, dtype=torch.bool, device=device)
        fr = _check(memory.frames, "frames", (batch, None, 4, h, w), self.name).to(device=device, dtype=torch.float32)
        k = fr.shape[1]
        if k > cfg.max_memory_frames:
            raise ValueError(
                f"MemoryInput.frames has {k} frames, more than ModelConfig.max_memory_frames={cfg.max_memory_frames}"
            )
        poses = _check(memory.frame_poses, "frame_poses", (batch, k, 4, 4), self.name).to(device, torch.float32)
        K = memory.frame_intrinsics
        if K is None:
            raise ValueError(f"memory reader {self.name!r} needs MemoryInput.frame_intrinsics, which is None")
        K = K.to(device=device, dtype=torch.float32)
        if K.shape == (3, 3):
            K = K.expand(batch, k, 3, 3)
        elif K.shape == (batch, 3, 3):
            K = K[:, None].expand(batch, k, 3, 3)
        _check(K, "frame_intrinsics", (batch, k, 3, 3), self.name)
        with torch.autocast(fr.device.type, enabled=False):  # geometry in fp32 even under autocast
            rays = plucker_rays(K, poses, h, w)  # (B, K, 6, h, w)
        pix = torch.cat(
            [normalize_rgb(fr[:, :, :3]), normalize_depth(fr[:, :, 3:], cfg.depth_min, cfg.depth_max), rays], dim=2
        )
        tok = self.patch(pix.flatten(0, 1).to(dtype)).flatten(2).transpose(1, 2)  # (B*K, L, width)
        tok = (tok + self.grid_pe.to(tok.dtype)).reshape(batch, k * cfg.tokens_per_frame, cfg.width)
        fmask = memory.frame_mask
        if fmask is None:
            fmask = torch.ones(batch, k, dtype=torch.bool, device=device)
        else:
            fmask = _check(fmask, "frame_mask", (batch, k), self.name).to(device=device, dtype=torch.bool)
        return tok, fmask.repeat_interleave(cfg.tokens_per_frame, dim=1)


@register_reader
class VoxelRenderReader(MemoryReader):
    """``voxel-render`` (beyond the paper): the map rendered into each future view enters
    pixel-aligned, patchified by a zero-initialised convolution whose output is added to the
    backbone's patch embedding (= widening the input layer with zero-initialised weights, as the
    paper does for depth, §3.2). In pixel space the render gives 5 channels (RGB and depth,
    normalised like the frames and zeroed where not covered, then coverage); in latent space it is
    encoded by the model's autoencoder like a frame, plus the coverage averaged per latent cell
    (``MemoryInput.rendered_latent``), so covered places can be copied token for token. The
    current frame gets no render. The memory blocks, kept for parameter parity, see an empty memory."""

    name = "voxel-render"
    channels = 5

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.latent:
            c_in, p = cfg.frame_channels + 1, cfg.patch_size
        else:
            c_in, p = self.channels, cfg.pixel_patch
        # no bias: an absent render (coverage 0 everywhere) and a dropped memory both give exactly 0
        self.render_patch = nn.Conv2d(c_in, cfg.width, p, stride=p, bias=False)
        nn.init.zeros_(self.render_patch.weight)

    def _pixel_input(self, memory, batch, device) -> torch.Tensor:
        cfg = self.cfg
        h, w, H = cfg.image_height, cfg.image_width, cfg.frames
        if memory.rendered is None:
            return torch.zeros(batch, H, self.channels, h, w, device=device, dtype=torch.float32)
        r = _check(memory.rendered, "rendered", (batch, H, self.channels, h, w), self.name)
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
        return _check(memory.rendered_latent, "rendered_latent", shape, self.name).to(device=device, dtype=torch.float32)

    def input_tokens(self, memory, batch, device, dtype):
        cfg = self.cfg
        H, L = cfg.frames, cfg.tokens_per_frame
        x = self._latent_input(memory, batch, device) if cfg.latent else self._pixel_input(memory, batch, device)
        tok = self.render_patch(x.flatten(0, 1).to(dtype)).flatten(2).transpose(1, 2).reshape(batch, H * L, -1)
        return F.pad(tok, (0, 0, L, 0))  # no render for the current frame
