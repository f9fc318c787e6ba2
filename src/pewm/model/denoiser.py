"""The video diffusion transformer (§3.1-3.2 of arXiv 2505.05495).

A DiT over patch tokens of a clip of ``1 + H`` RGB-D frames: the current frame ``O_t`` (given
clean) followed by ``H`` noisy future frames. Every pixel carries, concatenated to its RGB-D
channels, the Plücker ray ``(o x d, d)`` of its frame's camera expressed in the current camera's
frame (§3.2: actions -> relative poses -> per-pixel Plücker image, "concatenated to the input
channels ... better for precise pixel-wise control"). Frames live in the diffusion space: normalised
pixels, or the latents of :mod:`pewm.model.autoencoder` (``ModelConfig.autoencoder``, as the
paper diffuses VAE latents). A token covers ``patch_size`` x ``patch_size`` cells of that space,
i.e. ``pixel_patch`` pixels; frame cells and Plücker pixels are patchified by two convolutions
whose outputs are summed (= one convolution over their concatenation when both are pixels), so the
rays keep full pixel resolution instead of being mean-pooled. Fixed sinusoidal spatial
(patch grid) and temporal (frame index) position embeddings are added.

Each backbone block is AdaLN-Zero (DiT; CogVideoX, which the paper fine-tunes, conditions on the
timestep the same way): ``x += g1 * Attn(LN(x)(1+s1)+b1); x += g2 * MLP(LN(x)(1+s2)+b2)``, with
``(b, s, g)`` regressed from the timestep embedding. Attention is factorised (blocks alternate
spatial attention within a frame and temporal attention across frames at one patch position, as
in Latte; the ``tiny`` default: on a 2-core CPU one SDPA over all 576 tokens takes ~15 ms against
~3 ms spatial / ~2 ms temporal, and a tiny forward 92 ms against 101 ms) or full spatio-temporal
(CogVideoX; the ``base``/``paper`` default, where GPU flash attention makes it cheap). Both have
exactly the same parameters, so a checkpoint loads under either. After block ``i``
the memory reader's block ``i`` runs (§3.3). The output is the v-prediction (§3.4) of the ``H``
future frames only, in the normalised RGB-D space of :mod:`pewm.model.normalization`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pewm.geometry import plucker_rays
from pewm.model.config import ModelConfig
from pewm.model.layers import (
    MLP,
    AdaLNModulation,
    SelfAttention,
    TimestepEmbedding,
    gated_residual,
    modulate,
    sincos_1d,
    sincos_2d_grid,
)
from pewm.model.readers import MemoryContext, MemoryInput, build_reader
from pewm.model.normalization import denormalize_depth, denormalize_rgb, normalize_depth, normalize_rgb


@dataclass
class Conditioning:
    """Everything but the noisy frames and the timestep; computed once per clip, reused at every
    sampling step. ``current`` ``(B, C, h', w')`` the clean current frame in diffusion space, ``plucker``
    ``(B, 1 + H, 6, h, w)``, ``cam`` ``(B, (1 + H) * L, 6)`` the per-patch mean Plücker ray (the
    memory blocks' camera embedding), ``memory`` the reader's prepared memory. ``rays``: the
    denoiser's cache of its ray embedding (the same at every sampling step), filled without grad."""

    current: torch.Tensor
    plucker: torch.Tensor
    cam: torch.Tensor
    memory: MemoryContext
    rays: tuple | None = field(default=None, repr=False, compare=False)

    def drop_memory(self, keep: torch.Tensor) -> "Conditioning":
        return Conditioning(self.current, self.plucker, self.cam, self.memory.drop(keep), self.rays)


class BackboneBlock(nn.Module):
    """DiT block with AdaLN-Zero; ``mode`` is ``full``, ``spatial`` or ``temporal`` attention."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_dim: int, mode: str):
        super().__init__()
        self.mode = mode
        self.ada = AdaLNModulation(cond_dim, width, 6)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.mlp = MLP(width, mlp_ratio)

    def _attend(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        b, n, c = h.shape
        if self.mode == "full":
            return self.attn(h)
        L = n // frames
        if self.mode == "spatial":
            return self.attn(h.reshape(b * frames, L, c)).reshape(b, n, c)
        h = h.view(b, frames, L, c).transpose(1, 2).reshape(b * L, frames, c)  # temporal
        return self.attn(h).view(b, L, frames, c).transpose(1, 2).reshape(b, n, c)

    def forward(self, x: torch.Tensor, c: torch.Tensor, frames: int) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)
        x = gated_residual(x, gate1, self._attend(modulate(self.norm1(x), shift1, scale1), frames))
        return gated_residual(x, gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))


class Denoiser(nn.Module):
    """v-prediction network ``v = f(x_t, t | O_t, poses, K, memory)`` (§3.1-3.4)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        p, w, pp = cfg.patch_size, cfg.width, cfg.pixel_patch
        self.patch_embed = nn.Conv2d(cfg.frame_channels, w, p, stride=p)
        self.ray_embed = nn.Conv2d(cfg.plucker_channels, w, pp, stride=pp, bias=False)
        self.register_buffer("pe_space", sincos_2d_grid(*cfg.grid, w), persistent=False)
        self.register_buffer(
            "pe_time", sincos_1d(torch.arange(cfg.frames + 1), w, max_period=100.0), persistent=False
        )
        self.t_embed = TimestepEmbedding(cfg.time_embed_dim)
        modes = ["full"] * cfg.depth if cfg.attention == "full" else ["spatial", "temporal"] * cfg.depth
        self.blocks = nn.ModuleList(
            BackboneBlock(w, cfg.heads, cfg.mlp_ratio, cfg.time_embed_dim, modes[i]) for i in range(cfg.depth)
        )
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_ada = AdaLNModulation(cfg.time_embed_dim, w, 2)
        self.final = nn.Linear(w, p * p * cfg.out_channels)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        self.reader = build_reader(cfg)
        # Stage 1 trains the backbone while the memory blocks keep their initialisation (zero gates
        # or zero output projections, the reader option init), so they add exactly 0; skipping them
        # then is exact and saves their cost (tests/test_train_loop.py).
        self.run_memory_blocks = True
        # pure-efficiency shortcut (pewm.model.layers.set_fast_paths): the ray embedding of a
        # Conditioning is computed once, not at every sampling step (bit-identical)
        self.fast_path = True

    # -- parameter groups (stage 1 trains the backbone, stage 2 the memory, §3.4 "Training") ----
    def memory_parameters(self):
        return self.reader.parameters()

    def backbone_parameters(self):
        return (p for n, p in self.named_parameters() if not n.startswith("reader."))

    # -- normalisation -------------------------------------------------------------------------
    def normalize_frames(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """RGB ``(..., 3, h, w)`` in ``[0, 1]`` and depth ``(..., h, w)`` in metres -> ``(..., 4, h, w)``."""
        d = normalize_depth(depth, self.cfg.depth_min, self.cfg.depth_max)
        return torch.cat([normalize_rgb(rgb.float()), d[..., None, :, :]], dim=-3)

    def denormalize_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., 4, h, w)`` -> RGB ``(..., 3, h, w)`` in ``[0, 1]``, depth ``(..., h, w)`` in metres."""
        return denormalize_rgb(x[..., :3, :, :]), denormalize_depth(x[..., 3, :, :], self.cfg.depth_min, self.cfg.depth_max)

    # -- conditioning --------------------------------------------------------------------------
    def condition(
        self,
        current: torch.Tensor,
        rel_poses: torch.Tensor,
        K: torch.Tensor,
        memory: MemoryInput | None = None,
    ) -> Conditioning:
        """Prepare the clean inputs.

        ``current`` ``(B, C, h', w')`` current frame in diffusion space (normalised RGB-D, or its
        autoencoder latent); ``rel_poses`` ``(B, 1 + H, 4, 4)``
        camera-to-current-camera poses of every frame of the clip (index 0 is the identity);
        ``K`` ``(B, 3, 3)`` or ``(3, 3)`` intrinsics at the model's resolution.
        """
        cfg = self.cfg
        B, F_ = current.shape[0], cfg.frames + 1
        h, w, p = cfg.image_height, cfg.image_width, cfg.pixel_patch
        want = (cfg.frame_channels, cfg.frame_height, cfg.frame_width)
        if tuple(current.shape[1:]) != want:
            raise ValueError(f"current frame has shape {tuple(current.shape)}, expected (B, {', '.join(map(str, want))})")
        if tuple(rel_poses.shape) != (B, F_, 4, 4):
            raise ValueError(f"rel_poses has shape {tuple(rel_poses.shape)}, expected ({B}, {F_}, 4, 4)")
        K = K.to(device=current.device, dtype=torch.float32)
        if K.shape == (3, 3):
            K = K.expand(B, 3, 3)
        if tuple(K.shape) != (B, 3, 3):
            raise ValueError(f"K has shape {tuple(K.shape)}, expected (3, 3) or ({B}, 3, 3)")
        with torch.autocast(current.device.type, enabled=False):  # geometry in fp32 even under autocast
            plucker = plucker_rays(K[:, None], rel_poses.to(current.device, torch.float32), h, w)  # (B, F, 6, h, w)
        cam = F.avg_pool2d(plucker.flatten(0, 1), p).flatten(2).transpose(1, 2).reshape(B, F_ * cfg.tokens_per_frame, 6)
        dtype = self.patch_embed.weight.dtype
        mem = self.reader.prepare(memory, B, current.device, dtype)
        return Conditioning(current, plucker, cam, mem)

    def _ray_tokens(self, cond: Conditioning, dtype: torch.dtype) -> torch.Tensor:
        """``ray_embed`` of the clip's Plücker rays: it does not depend on the noisy frames or the
        timestep, so without grad it is kept in ``cond`` for the next sampling steps (keyed on the
        dtype, the autocast state and the weights' version)."""
        if not self.fast_path or torch.is_grad_enabled():
            return self.ray_embed(cond.plucker.to(dtype).flatten(0, 1))
        dev = cond.plucker.device.type
        w = self.ray_embed.weight
        key = (dtype, torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev), w.data_ptr(), w._version)
        if cond.rays is None or cond.rays[0] != key:
            cond.rays = (key, self.ray_embed(cond.plucker.to(dtype).flatten(0, 1)))
        return cond.rays[1]

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """``x_t`` ``(B, H, C, h', w')`` noisy future frames (diffusion space), ``t`` ``(B,)``
        timesteps -> v of the same shape."""
        cfg = self.cfg
        B, H = x_t.shape[:2]
        F_, L, p = H + 1, cfg.tokens_per_frame, cfg.patch_size
        want = (cfg.frame_channels, cfg.frame_height, cfg.frame_width)
        if H != cfg.frames or tuple(x_t.shape[2:]) != want:
            raise ValueError(
                f"x_t has shape {tuple(x_t.shape)}, expected (B, {cfg.frames}, {', '.join(map(str, want))})"
            )
        frames = torch.cat([cond.current[:, None].to(x_t.dtype), x_t], dim=1).flatten(0, 1)
        x = self.patch_embed(frames) + self._ray_tokens(cond, x_t.dtype)
        x = x.flatten(2).transpose(1, 2)  # (B*F, L, w)
        x = (x + self.pe_space).view(B, F_, L, -1) + self.pe_time[:, None]
        x = x.reshape(B, F_ * L, -1)
        if cond.memory.input_tokens is not None:
            x = x + cond.memory.input_tokens.to(x.dtype)
        c = self.t_embed(t.reshape(-1).expand(B) if t.numel() == 1 else t)
        for i, block in enumerate(self.blocks):
            x = block(x, c, F_)
            if self.run_memory_blocks:
                x = self.reader.block(i, x, c, cond.cam, cond.memory)
        shift, scale = self.final_ada(c)
        x = self.final(modulate(self.final_norm(x), shift, scale))  # (B, F*L, p*p*C)
        x = x.view(B, F_, L, -1)[:, 1:]  # future frames only
        r, cc = cfg.grid
        x = x.reshape(B, H, r, cc, p, p, cfg.out_channels).permute(0, 1, 6, 2, 4, 3, 5)
        return x.reshape(B, H, cfg.out_channels, cfg.frame_height, cfg.frame_width)
