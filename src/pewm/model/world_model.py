"""``WorldModel``: the denoiser, its memory reader, the autoencoder and the diffusion process
behind one object (§3 of arXiv 2505.05495).

* ``model(batch)`` / :meth:`WorldModel.training_loss` -- the v-prediction loss of a
  :class:`ClipBatch` (§3.4), so a DDP-wrapped model is called like the model itself.
* :meth:`WorldModel.generate` -- one chunk of ``H`` future RGB-D frames from the current frame, its
  pose, the actions (or poses) and the memory (one iteration of Algorithm 1 without the map
  update), sampled as one :class:`~pewm.model.sampling.SamplingConfig` says.
* :meth:`WorldModel.save_pretrained` / :meth:`WorldModel.from_pretrained` -- :mod:`pewm.model.checkpoint`.

Conventions: poses are camera-to-world 4x4 (OpenCV camera, world z up), depth is metric z-depth,
``actions[t]`` moves from frame ``t`` to frame ``t + 1`` (frame 0 = the current frame), so a chunk
of ``H`` future frames takes exactly ``H`` actions. Inputs are checked once, at
:meth:`WorldModel.generate` (:mod:`pewm.model.inputs`); :meth:`WorldModel.sample_frames` takes
checked tensors (rollouts check their inputs once per rollout and call it directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pewm.geometry import ActionConfig
from pewm.model import checkpoint
from pewm.model.autoencoder import RGBDAutoencoder
from pewm.model.config import ModelConfig, from_preset
from pewm.model.denoiser import Conditioning, Denoiser
from pewm.model.diffusion import VDiffusion
from pewm.model.inputs import check_depth, check_K, check_rgb, clip_poses
from pewm.model.readers import MemoryInput, build_reader
from pewm.model.sampling import KnownRegion, SamplingConfig, ddim_sample, guided


@dataclass
class ClipBatch:
    """A training batch of clips of ``1 + H`` frames (frame 0 = the current, clean frame).

    ``rgb`` ``(B, 1 + H, 3, h, w)`` float in ``[0, 1]`` (or uint8), ``depth`` ``(B, 1 + H, h, w)``
    metres, ``poses`` ``(B, 1 + H, 4, 4)`` camera-to-world, ``K`` ``(B, 3, 3)`` or ``(3, 3)``,
    ``memory`` for the reader (positions in frame 0's camera frame).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    poses: torch.Tensor
    K: torch.Tensor
    memory: MemoryInput | None = None


@dataclass
class Generation:
    """Generated future frames: ``rgb`` ``(B, H, h, w, 3)`` (uint8, or float in ``[0, 1]``),
    ``depth`` ``(B, H, h, w)`` metres (float32), ``poses`` ``(B, H, 4, 4)`` camera-to-world (float64)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    poses: torch.Tensor


def relative_poses(poses: torch.Tensor) -> torch.Tensor:
    """``(B, F, 4, 4)`` camera-to-world -> poses relative to frame 0 (``inv(T_0) @ T_i``), float32."""
    T = poses.double()
    R0, t0 = T[:, :1, :3, :3], T[:, :1, :3, 3:]
    R0t = R0.transpose(-1, -2)
    rel = torch.zeros_like(T)
    rel[..., :3, :3] = R0t @ T[..., :3, :3]
    rel[..., :3, 3:] = R0t @ (T[..., :3, 3:] - t0)
    rel[..., 3, 3] = 1.0
    return rel.float()


class WorldModel(nn.Module):
    """RGB-D video diffusion world model with a memory reader (§3 of arXiv 2505.05495)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"WorldModel needs a ModelConfig, got {type(config).__name__}")
        self.config = config.validate()
        self.denoiser = Denoiser(config)
        self.diffusion = VDiffusion(config.diffusion)
        # the latent space (§3.2); trained in the "autoencoder" stage, frozen afterwards
        self.autoencoder = RGBDAutoencoder(config.autoencoder) if config.latent else None
        # how memories were built in training (MemoryBuildConfig as a dict; None = the defaults):
        # saved beside the weights so evaluation builds the same memories
        self.memory_build: dict | None = None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "WorldModel":
        return cls(from_preset(name, **overrides))

    @property
    def reader(self):
        """The memory reader module (:class:`~pewm.model.readers.MemoryReader`)."""
        return self.denoiser.reader

    # -- parameters ----------------------------------------------------------------------------
    def memory_parameters(self):
        """Parameters of the memory reader (trained in stage 2)."""
        return self.denoiser.memory_parameters()

    def backbone_parameters(self):
        """The denoiser without its memory reader (trained in stage 1, frozen in stage 2)."""
        return self.denoiser.backbone_parameters()

    def reinit_reader(self, options: dict | None = None, keep_trained: bool = False) -> list[str]:
        """Replace the memory reader by a freshly initialised one whose options are the current
        ones updated with ``options`` (the reader's ``Options`` fields, e.g. ``{"init": "zero-out"}``).
        The backbone is untouched and the model's output with any memory equals its output without
        memory again (stage 2 starts from exactly the stage-1 model); trained memory weights are
        discarded, unless ``keep_trained``: then every reader weight of the same name and shape is
        copied over, and only what the options add starts fresh (e.g. ``voxel-render``'s
        zero-initialised ``layout_prior`` input, so the model starts as exactly the trained one).
        Returns the names of the reader's weights that start fresh."""
        merged = {**self.config.reader_options, **dict(options or {})}
        cfg = self.config.replace(reader_options=merged).validate()
        like = next(self.denoiser.backbone_parameters())
        old = self.denoiser.reader.state_dict()
        reader = build_reader(cfg).to(device=like.device, dtype=like.dtype)
        fresh = list(reader.state_dict())
        if keep_trained:
            new = reader.state_dict()
            kept = {k: v for k, v in old.items() if k in new and new[k].shape == v.shape}
            reader.load_state_dict(kept, strict=False)
            fresh = [k for k in new if k not in kept]
        self.config = cfg
        self.denoiser.cfg = cfg
        self.denoiser.reader = reader
        return fresh

    def autoencoder_parameters(self):
        """The autoencoder's parameters (trained in the ``autoencoder`` stage; none in pixel space)."""
        return iter(()) if self.autoencoder is None else self.autoencoder.parameters()

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: ``backbone`` and ``memory`` (the denoiser), ``autoencoder``, ``total``."""
        mem = sum(p.numel() for p in self.memory_parameters())
        bb = sum(p.numel() for p in self.backbone_parameters())
        ae = sum(p.numel() for p in self.autoencoder_parameters())
        return {"backbone": bb, "memory": mem, "autoencoder": ae, "total": bb + mem + ae}

    # -- diffusion space -----------------------------------------------------------------------
    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB-D ``(..., 4, h, w)`` -> diffusion space ``(..., C, h', w')`` (identity in pixel space)."""
        if self.autoencoder is None:
            return x
        lead = x.shape[:-3]
        z = self.autoencoder.encode(x.reshape(-1, *x.shape[-3:]))
        return z.reshape(*lead, *z.shape[1:])

    def decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion space ``(..., C, h', w')`` -> normalised RGB-D ``(..., 4, h, w)``."""
        if self.autoencoder is None:
            return z
        lead = z.shape[:-3]
        x = self.autoencoder.decode(z.reshape(-1, *z.shape[-3:]))
        return x.reshape(*lead, *x.shape[1:])

    def encode_memory(self, memory: MemoryInput | None) -> MemoryInput | None:
        """``memory`` in the model's diffusion space, as its reader needs it (e.g. the
        ``voxel-render`` reader encodes its render with the autoencoder); None stays None."""
        return None if memory is None else self.reader.encode_memory(memory, self)

    @property
    def device(self) -> torch.device:
        return self.denoiser.patch_embed.weight.device

    # -- training ------------------------------------------------------------------------------
    def _check_clip(self, batch: ClipBatch) -> None:
        cfg = self.config
        F_, h, w = cfg.frames + 1, cfg.image_height, cfg.image_width
        B = batch.rgb.shape[0] if batch.rgb.ndim else 0
        for name, t, shape in (
            ("rgb", batch.rgb, (B, F_, 3, h, w)),
            ("depth", batch.depth, (B, F_, h, w)),
            ("poses", batch.poses, (B, F_, 4, 4)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"ClipBatch.{name} has shape {tuple(t.shape)}, expected {shape} (1 + H = {F_} frames)")

    def condition(self, batch: ClipBatch) -> tuple[torch.Tensor, Conditioning]:
        """Future frames ``x0`` ``(B, H, C, h', w')`` in diffusion space and the conditioning of ``batch``."""
        self._check_clip(batch)
        dev = self.device
        rgb = batch.rgb.to(dev)
        rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
        frames = self.denoiser.normalize_frames(rgb, batch.depth.to(dev).float())
        with torch.no_grad():  # the autoencoder is frozen once the denoiser trains
            frames = self.encode_frames(frames)
        rel = relative_poses(torch.as_tensor(batch.poses).to(dev))
        K = torch.as_tensor(batch.K).to(dev)
        cond = self.denoiser.condition(frames[:, 0], rel, K, self.encode_memory(batch.memory))
        return frames[:, 1:], cond

    def training_loss(
        self, batch: ClipBatch, memory_dropout: float | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """v-prediction loss (§3.4); the memory of each sample is dropped with probability
        ``memory_dropout`` (default ``config.memory_dropout``) for classifier-free guidance."""
        x0, cond = self.condition(batch)
        p = self.config.memory_dropout if memory_dropout is None else memory_dropout
        return self.diffusion.loss(self.denoiser, x0, cond, memory_dropout=p, generator=generator)

    def autoencoder_loss(self, batch: ClipBatch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Reconstruction loss of the autoencoder on every frame of ``batch`` (training stage ``autoencoder``)."""
        if self.autoencoder is None:
            raise ValueError("autoencoder_loss: this model works in pixel space (ModelConfig.autoencoder is None)")
        self._check_clip(batch)
        dev = self.device
        rgb = batch.rgb.to(dev)
        rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
        x = self.denoiser.normalize_frames(rgb.flatten(0, 1), batch.depth.to(dev).float().flatten(0, 1))
        return self.autoencoder.loss(x, generator=generator)

    def forward(self, batch: ClipBatch, objective: str = "diffusion", **kw) -> dict[str, torch.Tensor]:
        """The training loss of ``batch``: ``objective`` ``diffusion`` (:meth:`training_loss`) or
        ``autoencoder`` (:meth:`autoencoder_loss`), so a DDP-wrapped model trains either."""
        if objective == "autoencoder":
            return self.autoencoder_loss(batch, **kw)
        if objective != "diffusion":
            raise ValueError(f"unknown objective {objective!r}; use 'diffusion' or 'autoencoder'")
        return self.training_loss(batch, **kw)

    # -- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        current_rgb,
        current_depth,
        current_pose,
        K,
        actions=None,
        poses=None,
        memory: MemoryInput | None = None,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        action_config: ActionConfig = ActionConfig(),
        rgb_uint8: bool = True,
        allow_any_fov: bool = False,
    ) -> Generation:
        """Generate the next ``H`` RGB-D frames (§3, one iteration of Algorithm 1).

        ``current_rgb`` ``(B, h, w, 3)`` uint8 or ``(B, 3, h, w)`` float in ``[0, 1]``;
        ``current_depth`` ``(B, h, w)`` metres; ``current_pose`` ``(B, 4, 4)`` camera-to-world;
        ``K`` :class:`~pewm.geometry.Intrinsics`, ``(3, 3)`` or ``(B, 3, 3)``; exactly one of
        ``actions`` ``(H,)``/``(B, H)`` action ids (``actions[t]`` leads from frame ``t`` to
        ``t + 1``) or ``poses`` ``(H, 4, 4)``/``(B, H, 4, 4)`` future camera-to-world poses; the
        unbatched forms are accepted for ``B = 1`` (or broadcast over the batch). ``sampling``:
        DDIM steps, memory guidance and anchoring (None fields: the model's defaults);
        ``generator`` draws the noise (default: ``sampling.seed``, else torch's global one).
        ``K`` whose vertical field of view is far from the training camera's is refused
        (:func:`~pewm.model.inputs.check_fov`) unless ``allow_any_fov``.
        """
        hw = (self.config.image_height, self.config.image_width)
        rgb = check_rgb(current_rgb, hw)
        B = rgb.shape[0]
        depth = check_depth(current_depth, B, hw)
        Kt = torch.from_numpy(check_K(K, B, hw, allow_any_fov)).float()
        all_poses = clip_poses(current_pose, actions, poses, B, self.config.frames, action_config)
        sampling = sampling or SamplingConfig()
        if generator is None:
            generator = sampling.generator()
        return self.sample_frames(rgb, depth, all_poses, Kt, memory, sampling, generator, rgb_uint8)

    @torch.no_grad()
    def sample_frames(
        self,
        rgb: torch.Tensor,
        depth: torch.Tensor,
        poses: torch.Tensor,
        K: torch.Tensor,
        memory: MemoryInput | None = None,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        rgb_uint8: bool = True,
    ) -> Generation:
        """:meth:`generate` on checked tensors: ``rgb`` ``(B, 3, h, w)`` float in ``[0, 1]``,
        ``depth`` ``(B, h, w)``, ``poses`` ``(B, 1 + H, 4, 4)`` float64 (current, then future),
        ``K`` ``(B, 3, 3)`` float32 at the model's resolution.

        Anchoring (``sampling.anchor``, readers with ``can_anchor``; beyond the paper) keeps what the
        memory already holds: ``"latent"`` fixes the latent cells the render covers completely
        during sampling (the model fills in the rest around them, :class:`KnownRegion`), ``"pixel"``
        replaces the covered pixels of the decoded frames by the render, ``"both"`` does both,
        ``"none"`` only conditions on the memory."""
        s = (sampling or SamplingConfig()).resolve(self.config.diffusion)
        dev = self.device
        frame = self.encode_frames(self.denoiser.normalize_frames(rgb.to(dev), depth.to(dev)))
        anchor = self.reader.resolve_anchor(s.anchor, (sampling or SamplingConfig()).anchor is not None, memory,
                                            self.autoencoder is not None)
        mem = self.encode_memory(memory.to(device=dev)) if memory is not None else None
        cond = self.denoiser.condition(frame, relative_poses(poses.to(dev)), K.to(dev), mem)
        hooks = []
        if anchor in ("latent", "both"):
            known, mask = self.reader.latent_anchor(mem)
            if known is not None:
                hooks.append(KnownRegion(known, mask, generator))
        x = self._sample(cond, s, generator, hooks)
        x = self.decode_frames(x.float()).clamp(-1.0, 1.0)
        out_rgb, out_depth = self.denoiser.denormalize_frames(x)
        if anchor in ("pixel", "both"):
            known_rgb, known_depth, cov = (t.to(dev) for t in self.reader.pixel_anchor(memory))
            out_rgb = torch.where(cov, known_rgb, out_rgb)
            out_depth = torch.where(cov[:, :, 0], known_depth, out_depth)
        out_rgb = out_rgb.permute(0, 1, 3, 4, 2)
        if rgb_uint8:
            out_rgb = (out_rgb * 255.0).round().to(torch.uint8)
        return Generation(out_rgb.cpu(), out_depth.cpu(), poses[:, 1:].clone())

    def _sample(self, cond: Conditioning, s: SamplingConfig, generator, hooks) -> torch.Tensor:
        """The pure DDIM loop over this denoiser, with memory guidance (§3.4)."""
        cfg = self.config
        B, dev, dtype = cond.current.shape[0], cond.current.device, cond.current.dtype
        uncond = cond.drop_memory(torch.zeros(B, dtype=torch.bool, device=dev)) if s.guidance_scale != 1.0 else None
        denoise = guided(lambda x, t: self.denoiser(x, t.expand(B), cond),
                         lambda x, t: self.denoiser(x, t.expand(B), uncond), float(s.guidance_scale))
        shape = (B, cfg.frames, cfg.out_channels, cfg.frame_height, cfg.frame_width)
        return ddim_sample(denoise, cfg.diffusion, shape, s.steps, dev, dtype, generator, hooks)

    # -- checkpoints (pewm.model.checkpoint) ---------------------------------------------------
    def save_pretrained(self, directory, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically); ``dtype``
        (e.g. ``torch.float16``) stores floating tensors in that type (the shipped model)."""
        return checkpoint.save_pretrained(self, directory, dtype)

    def save_reader(self, directory, dtype: torch.dtype | None = None) -> Path:
        """Write only this model's memory reader to ``directory/readers/<reader>.safetensors``, so a
        model directory can carry several readers over one shared (stage-1, frozen) backbone."""
        return checkpoint.save_reader(self, directory, dtype)

    @staticmethod
    def load_config(directory) -> ModelConfig:
        """The :class:`ModelConfig` saved in ``directory`` (errors name the file)."""
        return checkpoint.load_config(directory)

    @classmethod
    def from_pretrained(cls, directory, reader: str | None = None, map_location="cpu") -> "WorldModel":
        """Load a model directory (see :func:`pewm.model.checkpoint.load_pretrained`); ``reader``
        switches to another reader (its weights from ``readers/`` when present)."""
        return checkpoint.load_pretrained(cls, directory, reader=reader, map_location=map_location)


__all__ = ["ClipBatch", "Generation", "WorldModel", "relative_poses"]
