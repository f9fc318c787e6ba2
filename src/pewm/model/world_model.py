"""``WorldModel``: the denoiser, its memory reader and the diffusion process behind one object.

* ``model(batch)`` / :meth:`WorldModel.training_loss` -- the v-prediction loss of a
  :class:`ClipBatch` (§3.4), so a DDP-wrapped model is called like the model itself.
* :meth:`WorldModel.generate` -- one chunk of ``H`` future RGB-D frames from the current frame, its
  pose, the actions (or poses) and the memory (one iteration of Algorithm 1 without the map update).
* :meth:`WorldModel.save_pretrained` / :meth:`WorldModel.from_pretrained` -- a directory with
  ``config.json`` and ``model.safetensors``.

Conventions: poses are camera-to-world 4x4 (OpenCV camera, world z up), depth is metric z-depth,
``actions[t]`` moves from frame ``t`` to frame ``t + 1`` (frame 0 = the current frame), so a chunk
of ``H`` future frames takes exactly ``H`` actions.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pewm.geometry import Action, ActionConfig, check_pose, intrinsics_matrix, poses_from_actions
from pewm.model.autoencoder import RGBDAutoencoder
from pewm.model.config import READER_CONFIG_FIELDS, ModelConfig, from_preset
from pewm.model.denoiser import Conditioning, Denoiser
from pewm.model.diffusion import VDiffusion
from pewm.model.memory_readers import MemoryInput

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MEMORY_BUILD_NAME = "memory.json"  # optional: the MemoryBuildConfig the reader was trained with
READERS_DIR = "readers"  # optional: READERS_DIR/<reader>.safetensors, other readers' weights
# reader options (ModelConfig fields) travel in the safetensors metadata of a reader's weights
READER_PREFIX = "denoiser.reader."
FORMAT = "pewm.WorldModel"
FORMAT_VERSION = 1


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


def _write_json(path: Path, content) -> None:
    """Write JSON atomically (temp file + rename; nothing half-written is left behind)."""
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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

    # -- parameters ----------------------------------------------------------------------------
    def memory_parameters(self):
        """Parameters of the memory reader (trained in stage 2)."""
        return self.denoiser.memory_parameters()

    def backbone_parameters(self):
        """The denoiser without its memory reader (trained in stage 1, frozen in stage 2)."""
        return self.denoiser.backbone_parameters()

    def reinit_reader(self, **options) -> None:
        """Replace the memory reader by a freshly initialised one; ``options`` are reader fields of
        ``ModelConfig`` (:data:`READER_CONFIG_FIELDS`: ``memory_init``, ``memory_ray_query``,
        ``memory_ray_bias``; None keeps the configured value). The backbone is untouched and
        the model's output with any memory equals its output without memory again (stage 2 starts
        from exactly the stage-1 model); trained memory weights are discarded."""
        from pewm.model.memory_readers import build_reader

        unknown = sorted(set(options) - set(READER_CONFIG_FIELDS))
        if unknown:
            raise TypeError(f"reinit_reader: unknown reader option(s) {unknown}; known: {READER_CONFIG_FIELDS}")
        changes = {k: v for k, v in options.items() if v is not None}
        cfg = self.config.replace(**changes).validate() if changes else self.config
        like = next(self.denoiser.backbone_parameters())
        self.config = cfg
        self.denoiser.cfg = cfg
        self.denoiser.reader = build_reader(cfg).to(device=like.device, dtype=like.dtype)

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
        """Fill ``rendered_latent`` from ``rendered`` for a latent-space ``voxel-render`` model:
        the covered part of the render (uncovered pixels zeroed, as in pixel space) encoded like a
        frame and zeroed in latent cells with no coverage at all, plus the coverage averaged over
        each latent cell; an empty render thus gives all zeros, exactly what a dropped memory gives.
        Other memories pass unchanged."""
        if memory is None or self.autoencoder is None or memory.rendered is None or memory.rendered_latent is not None:
            return memory
        cfg = self.config
        r = torch.as_tensor(memory.rendered).to(self.device, torch.float32)
        B, H = r.shape[:2]
        if tuple(r.shape[2:]) != (5, cfg.image_height, cfg.image_width):
            raise ValueError(
                f"MemoryInput.rendered has shape {tuple(r.shape)}, expected (B, {cfg.frames}, 5, {cfg.image_height}, "
                f"{cfg.image_width})"
            )
        cov = (r[:, :, 4:5] > 0.5).float()
        x = self.denoiser.normalize_frames(r[:, :, :3], r[:, :, 3]) * cov
        with torch.no_grad():
            z = self.encode_frames(x)
        d = cfg.downsample
        cov_lat = torch.nn.functional.avg_pool2d(cov.flatten(0, 1), d).reshape(B, H, 1, *z.shape[-2:])
        # cells the render does not cover at all carry no latent (the encoder maps zeros to a
        # non-zero latent): an empty map then gives exactly the dropped memory's zero input
        z = z * (cov_lat > 0).to(z.dtype)
        from dataclasses import replace

        return replace(memory, rendered_latent=torch.cat([z, cov_lat], dim=2))

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
    def _rgb(self, rgb) -> torch.Tensor:
        cfg = self.config
        x = torch.as_tensor(rgb)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"current_rgb must be (B, h, w, 3) uint8 or (B, 3, h, w) float; got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            if x.shape[-1] != 3:
                raise ValueError(f"current_rgb: uint8 images must be channel-last (B, h, w, 3); got {tuple(x.shape)}")
            x = x.permute(0, 3, 1, 2).float() / 255.0
        elif x.is_floating_point():
            if x.shape[1] != 3:
                raise ValueError(f"current_rgb: float images must be channel-first (B, 3, h, w); got {tuple(x.shape)}")
            x = x.float()
        else:
            raise ValueError(f"current_rgb must be uint8 or float, got {x.dtype}")
        if tuple(x.shape[-2:]) != (cfg.image_height, cfg.image_width):
            raise ValueError(
                f"current_rgb has resolution {x.shape[-2]}x{x.shape[-1]} (h x w), but the model expects "
                f"{cfg.image_height}x{cfg.image_width}"
            )
        return x

    def _depth(self, depth, B: int) -> torch.Tensor:
        cfg = self.config
        d = torch.as_tensor(depth)
        if d.ndim == 2:
            d = d[None]
        if d.ndim != 3 or tuple(d.shape) != (B, cfg.image_height, cfg.image_width):
            raise ValueError(
                f"current_depth has shape {tuple(d.shape)}, expected ({B}, {cfg.image_height}, {cfg.image_width}) "
                "metric z-depth"
            )
        return d.float()

    def _K(self, K, B: int) -> torch.Tensor:
        cfg = self.config
        K = torch.from_numpy(intrinsics_matrix(K, cfg.image_height, cfg.image_width)).float()
        if K.shape == (3, 3):
            K = K.expand(B, 3, 3)
        if tuple(K.shape) != (B, 3, 3):
            raise ValueError(f"K has shape {tuple(K.shape)}, expected (3, 3) or ({B}, 3, 3)")
        return K

    def _future_poses(self, current_pose, actions, poses, B: int, action_config: ActionConfig) -> torch.Tensor:
        H = self.config.frames
        T0 = torch.as_tensor(np.asarray(current_pose.cpu() if isinstance(current_pose, torch.Tensor) else current_pose))
        given = tuple(T0.shape)
        if T0.ndim == 2 and given == (4, 4):
            T0 = T0[None].expand(B, 4, 4)
        if tuple(T0.shape) != (B, 4, 4):
            raise ValueError(f"current_pose has shape {given}, expected (4, 4) or ({B}, 4, 4)")
        T0 = check_pose(T0.double().numpy(), "current_pose")
        if (actions is None) == (poses is None):
            raise ValueError("generate: give exactly one of actions=... or poses=...")
        if actions is not None:
            a = np.asarray(actions.cpu() if isinstance(actions, torch.Tensor) else actions)
            given = a.shape
            if a.ndim == 1:
                a = np.broadcast_to(a, (B, a.shape[0]))
            if a.ndim != 2 or a.shape != (B, H):
                raise ValueError(
                    f"actions has shape {given}, expected ({H},) or ({B}, {H}): one action per future frame "
                    "(actions[t] moves frame t to frame t + 1)"
                )
            a = Action.check(a)
            fut = np.stack([poses_from_actions(T0[b], a[b], action_config)[1:] for b in range(B)])
        else:
            p = np.asarray(poses.cpu() if isinstance(poses, torch.Tensor) else poses, dtype=np.float64)
            given = p.shape
            if p.ndim == 3:
                p = np.broadcast_to(p, (B,) + p.shape)
            if p.shape != (B, H, 4, 4):
                raise ValueError(
                    f"poses has shape {given}, expected ({H}, 4, 4) or ({B}, {H}, 4, 4): camera-to-world poses "
                    "of the future frames"
                )
            fut = check_pose(p, "poses")
        return torch.from_numpy(np.concatenate([T0[:, None], fut], axis=1))

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
        steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        action_config: ActionConfig = ActionConfig(),
        rgb_uint8: bool = True,
        anchor: str | None = None,
    ) -> Generation:
        """Generate the next ``H`` RGB-D frames (§3, one iteration of Algorithm 1).

        ``current_rgb`` ``(B, h, w, 3)`` uint8 or ``(B, 3, h, w)`` float in ``[0, 1]``;
        ``current_depth`` ``(B, h, w)`` metres; ``current_pose`` ``(B, 4, 4)`` camera-to-world;
        ``K`` :class:`~pewm.geometry.Intrinsics`, ``(3, 3)`` or ``(B, 3, 3)``; exactly one of
        ``actions`` ``(H,)``/``(B, H)`` action ids (``actions[t]`` leads from frame ``t`` to
        ``t + 1``) or ``poses`` ``(H, 4, 4)``/``(B, H, 4, 4)`` future camera-to-world poses; the
        unbatched forms are accepted for ``B = 1`` (or broadcast over the batch). ``steps``
        DDIM steps (default ``config.diffusion.sampling_steps``); ``guidance_scale`` memory CFG.

        ``anchor`` (default ``config.diffusion.anchor``; ``voxel-render`` only) keeps what the map
        already holds: ``"latent"`` fixes the latent cells the render covers completely during
        sampling (the model fills in the rest around them), ``"pixel"`` replaces the covered pixels
        of the decoded frames by the render, ``"both"`` does both, ``"none"`` only conditions on
        the render.
        """
        rgb = self._rgb(current_rgb)
        B = rgb.shape[0]
        depth = self._depth(current_depth, B)
        Kt = self._K(K, B)
        all_poses = self._future_poses(current_pose, actions, poses, B, action_config)  # (B, 1+H, 4, 4) f64
        dev = self.device
        frame = self.encode_frames(self.denoiser.normalize_frames(rgb.to(dev), depth.to(dev)))
        anchor = self._anchor(anchor, memory)
        mem = self.encode_memory(memory.to(device=dev)) if memory is not None else None
        cond = self.denoiser.condition(frame, relative_poses(all_poses.to(dev)), Kt.to(dev), mem)
        known = known_mask = None
        if anchor in ("latent", "both"):
            known, known_mask = self._latent_anchor(mem)
        x = self.diffusion.sample(self.denoiser, cond, steps=steps, guidance_scale=guidance_scale, generator=generator,
                                  known=known, known_mask=known_mask)
        x = self.decode_frames(x.float()).clamp(-1.0, 1.0)
        out_rgb, out_depth = self.denoiser.denormalize_frames(x)
        if anchor in ("pixel", "both"):
            r = torch.as_tensor(memory.rendered).to(dev, torch.float32)
            cov = r[:, :, 4:5] > 0.5
            out_rgb = torch.where(cov, r[:, :, :3].clamp(0.0, 1.0), out_rgb)
            out_depth = torch.where(cov[:, :, 0], r[:, :, 3], out_depth)
        out_rgb = out_rgb.permute(0, 1, 3, 4, 2)
        if rgb_uint8:
            out_rgb = (out_rgb * 255.0).round().to(torch.uint8)
        return Generation(out_rgb.cpu(), out_depth.cpu(), all_poses[:, 1:].clone())

    def _anchor(self, anchor: str | None, memory: MemoryInput | None) -> str:
        """The anchoring mode of one ``generate`` call (checked against the reader and memory)."""
        from pewm.model.config import ANCHORS

        explicit = anchor is not None
        anchor = self.config.diffusion.anchor if anchor is None else anchor
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        if anchor == "none":
            return anchor
        if self.config.reader != "voxel-render":
            if explicit:
                raise ValueError(f"anchor={anchor!r} needs a voxel-render model (this one reads {self.config.reader!r})")
            return "none"
        if anchor in ("latent", "both") and self.autoencoder is None:
            anchor = "pixel"  # in pixel space the two are the same idea; pixels are exact
        has_render = memory is not None and memory.rendered is not None
        has_latent = memory is not None and (has_render or memory.rendered_latent is not None)
        if anchor == "both" and not has_render:
            anchor = "latent"
        if (anchor == "pixel" and not has_render) or (anchor == "latent" and not has_latent):
            return "none"  # nothing to anchor to (no memory given)
        return anchor

    ANCHOR_ERODE = True  # latent anchoring keeps only cells whose 3x3 neighbourhood is covered

    def _latent_anchor(self, mem: MemoryInput | None) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Known latents and mask of the cells the render covers completely (and, with
        ``ANCHOR_ERODE``, whose neighbours it covers completely too)."""
        if mem is None or mem.rendered_latent is None:
            return None, None
        z, cov = mem.rendered_latent[:, :, :-1], mem.rendered_latent[:, :, -1:]
        full = (cov >= 1.0 - 1e-6).to(z.dtype)
        # the encoder sees a few pixels past each cell, so a covered cell next to an uncovered one
        # holds part of the zero fill: keep only cells whose 3x3 neighbourhood is covered too
        mask = full
        if self.ANCHOR_ERODE:
            inner = -torch.nn.functional.max_pool2d(-full.flatten(0, 1), 3, stride=1, padding=1)
            mask = inner.reshape(full.shape) * full
        if not bool(mask.any()):
            return None, None
        return z, mask

    # -- checkpoints ---------------------------------------------------------------------------
    def save_pretrained(self, directory, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each file is written
        to a temporary file in the same directory and renamed, so a crash never leaves a torn file).
        ``dtype`` (e.g. ``torch.float16``) stores floating tensors in that type to halve the file
        (the shipped model); :meth:`from_pretrained` loads them back into the model's fp32."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".safetensors.tmp", dir=d)
        os.close(fd)
        try:
            save_file(state, tmp, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
            os.replace(tmp, d / WEIGHTS_NAME)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        files = [(CONFIG_NAME, meta)] + ([(MEMORY_BUILD_NAME, self.memory_build)] if self.memory_build else [])
        for name, content in files:
            _write_json(d / name, content)
        return d

    def save_reader(self, directory, dtype: torch.dtype | None = None) -> Path:
        """Write only this model's memory reader to ``directory/readers/<reader>.safetensors``, so a
        model directory can carry several readers over one shared (stage-1, frozen) backbone;
        ``from_pretrained(directory, reader=...)`` picks them up. Atomic like :meth:`save_pretrained`."""
        from safetensors.torch import save_file

        d = Path(directory) / READERS_DIR
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k.startswith(READER_PREFIX)}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        fd, tmp = tempfile.mkstemp(prefix=".reader-", suffix=".safetensors.tmp", dir=d)
        os.close(fd)
        try:
            reader_cfg = {k: getattr(self.config, k) for k in READER_CONFIG_FIELDS}
            save_file(state, tmp, metadata={"format": FORMAT, "reader": self.config.reader,
                                            "reader_config": json.dumps(reader_cfg)})
            os.replace(tmp, d / f"{self.config.reader}.safetensors")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        build = d / f"{self.config.reader}.{MEMORY_BUILD_NAME}"
        if self.memory_build:  # how this reader's memories were built (e.g. its feature extractor)
            _write_json(build, self.memory_build)
        elif build.exists():
            build.unlink()  # not another reader's leftover settings
        return d / f"{self.config.reader}.safetensors"

    @staticmethod
    def load_config(directory) -> ModelConfig:
        """The :class:`ModelConfig` saved in ``directory`` (errors name the file)."""
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"no checkpoint directory at {d}")
        path = d / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: not a pewm WorldModel checkpoint")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} config (format={meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format_version {meta.get('format_version')!r} is not supported (this pewm reads {FORMAT_VERSION})"
            )
        try:
            return ModelConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: incompatible model config: {e}") from e

    @classmethod
    def from_pretrained(cls, directory, reader: str | None = None, map_location="cpu") -> "WorldModel":
        """Load a checkpoint written by :meth:`save_pretrained`.

        ``reader`` switches the memory reader: the backbone is loaded (strictly) and the new
        reader comes from ``readers/<reader>.safetensors`` when the directory has it (written by
        :meth:`save_reader`: stage-2 weights of another reader trained on the same frozen
        backbone, with its own reader options from the file's metadata), else starts from its
        identity initialisation with default reader options, i.e. from exactly the stage-1 model
        (§3.4, stage 2). Otherwise every tensor must match.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = cls.load_config(d)
        switch = reader is not None and reader != cfg.reader
        adapter = d / READERS_DIR / f"{reader if switch else cfg.reader}.safetensors"
        if switch:  # the reader's own architecture options (older files, or no file: the defaults)
            cfg = cfg.replace(reader=reader, **_reader_config(adapter if adapter.is_file() else None))
        path = d / WEIGHTS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (config.json is there)")
        try:
            state = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path}: cannot read the weights: {e}") from e
        model = cls(cfg)
        own = model.state_dict()
        reader_build = None
        if switch and adapter.is_file():  # trained memory blocks of another reader over the same backbone
            try:
                extra = load_file(str(adapter), device=str(map_location))
            except (SafetensorError, OSError) as e:
                raise ValueError(f"{adapter}: cannot read the reader weights: {e}") from e
            want = {k for k in own if k.startswith(READER_PREFIX)}
            if set(extra) != want or any(tuple(extra[k].shape) != tuple(own[k].shape) for k in want):
                raise ValueError(f"{adapter}: does not hold the {cfg.reader!r} reader of this model's architecture")
            state = {k: v for k, v in state.items() if not k.startswith(READER_PREFIX)} | extra
            switch = False
            reader_build = d / READERS_DIR / f"{cfg.reader}.{MEMORY_BUILD_NAME}"
        if switch:
            state = {k: v for k, v in state.items() if not k.startswith(READER_PREFIX)}
            own = {k: v for k, v in own.items() if not k.startswith(READER_PREFIX)}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:3]}")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[:3]}")
            if shapes:
                k = shapes[0]
                parts.append(
                    f"{len(shapes)} shape mismatch(es), e.g. {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                )
            raise ValueError(f"{path} does not match its config.json: " + "; ".join(parts))
        model.load_state_dict(state, strict=not switch)
        mb = d / MEMORY_BUILD_NAME
        if reader_build is not None and reader_build.is_file():
            mb = reader_build  # the extra reader's own memory settings
        elif reader is not None and reader != cls.load_config(d).reader and reader_build is None:
            mb = None  # another reader without trained weights: default memory settings
        # (reader weights saved without their own memory.json: the main one, as they were trained)
        if mb is not None and mb.is_file():
            try:
                model.memory_build = json.loads(mb.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{mb} is not valid JSON: {e}") from e
        return model.to(map_location)


def _reader_config(adapter: Path | None) -> dict:
    """The :data:`READER_CONFIG_FIELDS` saved in a reader file's metadata; fields it does not name
    take ``ModelConfig``'s defaults (files written before those fields existed), and so do all of
    them without a file (a new reader does not inherit another reader's options)."""
    from safetensors import SafetensorError, safe_open

    defaults = ModelConfig()
    if adapter is None:
        return {k: getattr(defaults, k) for k in READER_CONFIG_FIELDS}
    try:
        with safe_open(str(adapter), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{adapter}: cannot read the reader weights: {e}") from e
    try:
        saved = json.loads(meta.get("reader_config", "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{adapter}: metadata 'reader_config' is not valid JSON: {e}") from e
    return {k: saved.get(k, getattr(defaults, k)) for k in READER_CONFIG_FIELDS}
