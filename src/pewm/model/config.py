"""Typed configuration of the world model, with named presets (``tiny``, ``base``, ``paper``).

``ModelConfig`` describes the denoiser (§3.1-3.2 of arXiv 2505.05495), its memory reader (§3.3)
and, nested, the diffusion process (``DiffusionConfig``, §3.4). A config is saved as JSON next to
every checkpoint; :meth:`ModelConfig.from_dict` refuses unknown keys so that a typo or a checkpoint
from an incompatible version fails loudly instead of being silently ignored.

Presets:

* ``micro`` -- unit tests (16x16 frames, width 32, 2 blocks, 2 future frames).
* ``tiny``  -- a 2-core CPU: 64x64 frames diffused as 16x16x4 autoencoder latents
  (:mod:`pewm.model.autoencoder`), 2x2 latent patches, width 192, 6 blocks, H = 8 future frames.
* ``base``  -- one GPU: 128x128 frames, patch 8, width 768, 12 blocks.
* ``paper`` -- CogVideoX-2B-like widths and depth (30 blocks, width 1920, 30 heads, timestep
  embedding 512); about 1.5B backbone parameters plus about 1.1B of memory blocks, matching the
  paper's "CogVideoX fine-tuned, nearly 1B added memory parameters" (build it on ``meta``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from pewm.model.autoencoder import AutoencoderConfig
from pewm.model.readers import READERS, reader_class

ATTENTION_KINDS = ("full", "factorized")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _check_keys(cls, d: dict, what: str) -> None:
    if not isinstance(d, dict):
        raise TypeError(f"{what}: expected a dict, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; known keys: {sorted(known)}")


ANCHORS = ("none", "latent", "pixel", "both")
# ModelConfig fields of pewm <= 0.1.0 that are now reader options (ModelConfig.reader_options):
# old config.json files and reader metadata are read through legacy_reader_options
LEGACY_READER_FIELDS = {"memory_init": "init", "memory_ray_query": "ray_query", "memory_ray_bias": "ray_bias"}


def legacy_reader_options(reader: str, d: dict) -> dict:
    """Pop the legacy reader fields (``memory_init``, ``memory_ray_*``) from ``d`` and return them as
    options of ``reader``: an option the reader does not have is dropped when it has the old default
    value (``False`` / ``0.0``) and is an error otherwise (it would change the architecture)."""
    opts = {}
    for old, new in LEGACY_READER_FIELDS.items():
        if old not in d:
            continue
        v = d.pop(old)
        if reader in READERS and new not in READERS[reader].Options.names():
            if v in (False, 0, 0.0, None) and not isinstance(v, str):
                continue
            raise ValueError(f"ModelConfig.{old} is for the voxel-xattn reader, not {reader!r}")
        opts[new] = v
    return opts


@dataclass
class DiffusionConfig:
    """The diffusion process (§3.4: v-prediction, DDIM sampling).

    The schedule follows ``diffusers`` names, so ``to_scheduler_kwargs()`` feeds its
    ``DDPMScheduler``/``DDIMScheduler`` directly. ``rescale_betas_zero_snr`` makes the last training
    step pure noise (v-prediction is well defined there; sampling with ``timestep_spacing="trailing"``
    then starts from pure noise, as in Lin et al. 2024).
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    rescale_betas_zero_snr: bool = True
    timestep_spacing: str = "trailing"
    sampling_steps: int = 10
    guidance_scale: float = 1.0  # classifier-free guidance on the memory; 1.0 = off
    # map-anchored sampling (voxel-render only, beyond the paper): "none", "latent" (known latent
    # cells re-noised into every DDIM step, RePaint-style), "pixel" (covered pixels of the
    # decoded frames taken from the render) or "both"; see WorldModel.sample_frames
    anchor: str = "none"

    def validate(self) -> None:
        if self.num_train_timesteps < 2:
            raise ValueError(f"DiffusionConfig.num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"DiffusionConfig.beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.timestep_spacing not in ("trailing", "leading", "linspace"):
            raise ValueError(f"DiffusionConfig.timestep_spacing: unknown value {self.timestep_spacing!r}")
        if not 1 <= self.sampling_steps <= self.num_train_timesteps:
            raise ValueError(
                f"DiffusionConfig.sampling_steps must be in [1, {self.num_train_timesteps}], got {self.sampling_steps}"
            )
        if self.guidance_scale < 0:
            raise ValueError(f"DiffusionConfig.guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"DiffusionConfig.anchor must be one of {ANCHORS}, got {self.anchor!r}")

    def to_scheduler_kwargs(self) -> dict:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_schedule=self.beta_schedule,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            rescale_betas_zero_snr=self.rescale_betas_zero_snr,
            timestep_spacing=self.timestep_spacing,
            prediction_type="v_prediction",
            clip_sample=False,
        )


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`~pewm.model.world_model.WorldModel`.

    Inputs per frame (pixel level, concatenated before patchifying, §3.2): RGB (3, in [-1, 1]),
    normalised depth (1, see :mod:`pewm.model.normalization`), Plücker rays of the frame's camera
    relative to the current camera (6), plus 5 rendered-map channels for the ``voxel-render`` reader.
    """

    # frames and tokens
    image_height: int = 64
    image_width: int = 64
    patch_size: int = 2
    frames: int = 8  # H: future frames generated per chunk (the clip has 1 + H frames)
    # backbone (§3.1: video diffusion transformer with timestep AdaLN)
    width: int = 192
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    time_embed_dim: int = 192
    attention: str = "factorized"  # "factorized" (blocks alternate spatial / temporal) or "full" spatio-temporal
    # memory (§3.3)
    reader: str = "voxel-xattn"
    memory_dim: int = 384  # feature channels of a map token (DINOv2 ViT-S/14 in the paper)
    memory_pos_dim: int = 96  # 3D sinusoidal position embedding concatenated to each map token
    memory_mlp_ratio: float = 2.0  # feed-forward of the memory blocks
    max_memory_tokens: int = 1024
    max_memory_frames: int = 4  # past frames for the "frames" reader
    memory_dropout: float = 0.1  # training: probability to drop the memory of a sample (for CFG)
    # the reader's own architecture options (its Options dataclass, e.g. {"init": "zero-out"}; see
    # pewm.model.readers); stored complete (defaults filled in) so equal configs compare equal
    reader_options: dict = field(default_factory=dict)
    # depth normalisation (log depth between depth_min and depth_max, see normalization.py)
    depth_min: float = 0.1
    depth_max: float = 20.0
    # diffusion (§3.4)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # latent space (§3.2: the paper diffuses VAE latents): None = patches of normalised pixels
    autoencoder: AutoencoderConfig | None = field(default_factory=AutoencoderConfig)

    # channel counts (fixed by the modalities; derived, not stored)
    @property
    def rgbd_channels(self) -> int:
        return 4

    @property
    def plucker_channels(self) -> int:
        return 6

    @property
    def latent(self) -> bool:
        """Whether the denoiser works on autoencoder latents (else on normalised pixels)."""
        return self.autoencoder is not None

    @property
    def downsample(self) -> int:
        """Pixels per latent cell along each axis (1 in pixel space)."""
        return self.autoencoder.downsample if self.autoencoder is not None else 1

    @property
    def frame_channels(self) -> int:
        """Channels of one frame in the space the diffusion runs in (4 RGB-D or the latent's)."""
        return self.autoencoder.latent_channels if self.autoencoder is not None else self.rgbd_channels

    @property
    def frame_height(self) -> int:
        return self.image_height // self.downsample

    @property
    def frame_width(self) -> int:
        return self.image_width // self.downsample

    @property
    def pixel_patch(self) -> int:
        """Pixels per token along each axis (``patch_size`` latent cells of ``downsample`` pixels)."""
        return self.patch_size * self.downsample

    @property
    def in_channels(self) -> int:
        """Channels of one frame entering the backbone's patch embeddings (frame + Plücker)."""
        return self.frame_channels + self.plucker_channels

    @property
    def out_channels(self) -> int:
        return self.frame_channels

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)`` of one frame."""
        return self.image_height // self.pixel_patch, self.image_width // self.pixel_patch

    @property
    def tokens_per_frame(self) -> int:
        r, c = self.grid
        return r * c

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def validate(self) -> "ModelConfig":
        for name in ("image_height", "image_width", "patch_size", "frames", "width", "depth", "heads",
                     "time_embed_dim", "memory_dim", "max_memory_tokens", "max_memory_frames"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {v!r}")
        if self.autoencoder is not None:
            if not isinstance(self.autoencoder, AutoencoderConfig):
                raise TypeError(
                    f"ModelConfig.autoencoder must be an AutoencoderConfig or None, got {type(self.autoencoder).__name__}"
                )
            self.autoencoder.validate()
        for name in ("image_height", "image_width"):
            if getattr(self, name) % self.pixel_patch:
                what = f"patch_size={self.patch_size}" if not self.latent else (
                    f"patch_size x downsample = {self.patch_size} x {self.downsample}")
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} is not divisible by {what}")
        if self.width % self.heads:
            raise ValueError(f"ModelConfig.width={self.width} is not divisible by heads={self.heads}")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig: head dimension width/heads={self.head_dim} must be even")
        if self.memory_pos_dim <= 0 or self.memory_pos_dim % 6:
            raise ValueError(f"ModelConfig.memory_pos_dim must be a positive multiple of 6, got {self.memory_pos_dim}")
        if self.mlp_ratio <= 0 or self.memory_mlp_ratio <= 0:
            raise ValueError(
                f"ModelConfig: mlp_ratio and memory_mlp_ratio must be positive, got {self.mlp_ratio}, {self.memory_mlp_ratio}"
            )
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"ModelConfig.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.reader not in READERS:
            raise ValueError(f"ModelConfig.reader must be one of {sorted(READERS)}, got {self.reader!r}")
        if not isinstance(self.reader_options, dict):
            raise TypeError(f"ModelConfig.reader_options must be a dict, got {type(self.reader_options).__name__}")
        reader = reader_class(self.reader)
        options = reader.Options.from_dict(self.reader_options)
        reader.check_config(self, options)
        self.reader_options = options.to_dict()
        if not 0.0 <= self.memory_dropout < 1.0:
            raise ValueError(f"ModelConfig.memory_dropout must be in [0, 1), got {self.memory_dropout}")
        if not 0.0 < self.depth_min < self.depth_max:
            raise ValueError(
                f"ModelConfig: need 0 < depth_min < depth_max, got depth_min={self.depth_min}, depth_max={self.depth_max}"
            )
        if not isinstance(self.diffusion, DiffusionConfig):
            raise TypeError(f"ModelConfig.diffusion must be a DiffusionConfig, got {type(self.diffusion).__name__}")
        self.diffusion.validate()
        return self

    def __post_init__(self) -> None:
        self.reader_options = dict(self.reader_options or {})
        if isinstance(self.diffusion, dict):
            _check_keys(DiffusionConfig, self.diffusion, "ModelConfig.diffusion")
            self.diffusion = DiffusionConfig(**self.diffusion)
        if isinstance(self.autoencoder, dict):
            _check_keys(AutoencoderConfig, self.autoencoder, "ModelConfig.autoencoder")
            self.autoencoder = AutoencoderConfig(**self.autoencoder)
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["autoencoder"] = None if self.autoencoder is None else self.autoencoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """From :meth:`to_dict` output (configs of older pewm versions with the reader options as
        top-level fields are converted; unknown keys are an error)."""
        d = dict(d)
        legacy = legacy_reader_options(d.get("reader", cls.reader), d)
        if legacy:
            d["reader_options"] = {**legacy, **dict(d.get("reader_options") or {})}
        _check_keys(cls, d, "ModelConfig")
        return cls(**d)

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with ``overrides`` (``diffusion`` may be a partial dict of DiffusionConfig fields)."""
        d = self.to_dict()
        diff = overrides.pop("diffusion", None)
        if isinstance(overrides.get("autoencoder"), AutoencoderConfig):
            overrides["autoencoder"] = overrides["autoencoder"].to_dict()
        if "reader" in overrides and overrides["reader"] != self.reader and "reader_options" not in overrides:
            d["reader_options"] = {}  # another reader starts from its own default options
        legacy = legacy_reader_options(overrides.get("reader", self.reader), overrides)
        if legacy:
            overrides["reader_options"] = {**d["reader_options"], **dict(overrides.get("reader_options") or {}), **legacy}
        _check_keys(type(self), overrides, "ModelConfig overrides")
        d.update(overrides)
        if diff is not None:
            if isinstance(diff, DiffusionConfig):
                diff = dataclasses.asdict(diff)
            _check_keys(DiffusionConfig, diff, "ModelConfig.diffusion overrides")
            d["diffusion"] = {**d["diffusion"], **diff}
        return type(self).from_dict(d)


PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests only: 16x16 px, patch 4, 2 future frames, width 32 (a forward takes ~1 ms).
    "micro": dict(
        image_height=16, image_width=16, patch_size=4, frames=2, width=32, depth=2, heads=2,
        autoencoder=None, mlp_ratio=2.0, time_embed_dim=32, attention="factorized", memory_dim=16, memory_pos_dim=12,
        memory_mlp_ratio=1.0, max_memory_tokens=64, max_memory_frames=2, depth_min=0.1, depth_max=10.0,
        diffusion=dict(sampling_steps=4),
    ),
    # 2-core CPU. 64x64 px -> 16x16x4 autoencoder latents, 2x2 latent patches -> 64 tokens per
    # frame (8x8 px each), 9 frames -> 576 tokens. Pixel patches of 8 cannot be denoised at width
    # 192 (benchmarks/token_bottleneck.py); latents carry 16 numbers per token instead of 256.
    "tiny": dict(
        image_height=64, image_width=64, patch_size=2, frames=8,
        autoencoder=dict(latent_channels=4, downsample=4, channels=[48, 96]), width=192, depth=6, heads=6,
        mlp_ratio=4.0, time_embed_dim=192, attention="factorized", memory_dim=384, memory_pos_dim=96,
        memory_mlp_ratio=2.0, max_memory_tokens=1024, max_memory_frames=4,
    ),
    # One GPU. 128x128 px, patch 8 -> 256 tokens per frame, 2304 per clip.
    "base": dict(
        image_height=128, image_width=128, patch_size=8, autoencoder=None, frames=8, width=768, depth=12, heads=12,
        mlp_ratio=4.0, time_embed_dim=512, attention="full", memory_dim=384, memory_pos_dim=96,
        memory_mlp_ratio=2.0, max_memory_tokens=8192, max_memory_frames=8, diffusion=dict(sampling_steps=50),
    ),
    # CogVideoX-2B-like: 30 blocks of width 1920 with 30 heads and a 512-d timestep embedding.
    # Pixel space 512x512 with patch 16 gives CogVideoX's 32x32 token grid per frame.
    "paper": dict(
        image_height=512, image_width=512, patch_size=16, autoencoder=None, frames=8, width=1920, depth=30, heads=30,
        mlp_ratio=4.0, time_embed_dim=512, attention="full", memory_dim=384, memory_pos_dim=96,
        memory_mlp_ratio=2.0, max_memory_tokens=65536, max_memory_frames=8, diffusion=dict(sampling_steps=50),
    ),
}


def from_preset(name: str, **overrides) -> ModelConfig:
    """The preset ``name`` (``tiny``, ``base``, ``paper``) with field ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; available: {sorted(PRESETS)}")
    return ModelConfig.from_dict(dict(PRESETS[name])).replace(**overrides)
