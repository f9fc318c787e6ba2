"""The learned map feature extractor: the world model's own RGB-D autoencoder encoder, frozen.

The paper fuses DINOv2 features into its map (§3.2, "DINO-Map"). DINOv2 weights cannot be
downloaded here and a ViT-S/14 is slow on a 2-core CPU, so the default extractor of a latent-space
model is the encoder it already has: the autoencoder trained on the same data (stage
``autoencoder``), frozen. Its last hidden activations (``channels[-1]`` per cell of the
``downsample``-times smaller grid, after the final normalisation and SiLU, before the latent
projection) are bilinearly upsampled to pixels, as the paper upsamples DINOv2 patch features.

It registers as ``"autoencoder"`` in the :mod:`pewm.memory` extractor registry and passes the same
contract tests as ``rgb`` and ``dinov2``. Unlike them it reads depth too (``uses_depth = True``;
:meth:`pewm.memory.PersistentMap.integrate` passes it); without depth it sees a constant mid-range
depth channel.

    make_extractor("autoencoder", weights="runs/ae")          # any saved latent model or run
    make_extractor("autoencoder", autoencoder=model.autoencoder, depth_range=(0.1, 20.0))
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pewm.memory import register_extractor
from pewm.memory._util import as_tensor, rgb_to_bchw_float
from pewm.model.autoencoder import AutoencoderConfig, RGBDAutoencoder
from pewm.model.checkpoint import resolve_model_dir
from pewm.model.world_model import WorldModel
from pewm.model.normalization import normalize_depth, normalize_rgb


class AutoencoderFeatures:
    """Per-pixel features of a frozen :class:`RGBDAutoencoder` encoder (see the module docstring).

    ``autoencoder``: the module (shared, not copied; never trained through here) with
    ``depth_range`` = the model's ``(depth_min, depth_max)``; or ``weights``: a saved latent world
    model (``save_pretrained`` directory or training run) whose autoencoder and depth range are
    loaded; or ``config`` (an :class:`AutoencoderConfig` or its dict): a randomly initialised
    encoder (``seed``), for tests. ``batch_size`` bounds peak memory.
    """

    name = "autoencoder"
    uses_depth = True

    def __init__(
        self,
        autoencoder: RGBDAutoencoder | None = None,
        depth_range: tuple[float, float] | None = None,
        weights: str | Path | None = None,
        config: AutoencoderConfig | dict | None = None,
        seed: int = 0,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ):
        given = [x is not None for x in (autoencoder, weights, config)]
        if sum(given) != 1:
            raise ValueError("autoencoder features: give exactly one of autoencoder=, weights= or config=")
        if weights is not None:
            path = resolve_model_dir(weights, what="autoencoder weights")
            model = WorldModel.from_pretrained(path)
            if model.autoencoder is None:
                raise ValueError(f"{path}: this model diffuses pixels and has no autoencoder to take features from")
            autoencoder = model.autoencoder
            depth_range = (model.config.depth_min, model.config.depth_max)
        elif config is not None:
            cfg = config if isinstance(config, AutoencoderConfig) else AutoencoderConfig(**config)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                autoencoder = RGBDAutoencoder(cfg)
        if not isinstance(autoencoder, RGBDAutoencoder):
            raise ValueError(f"autoencoder must be an RGBDAutoencoder, got {type(autoencoder).__name__}")
        self.depth_range = tuple(float(d) for d in (depth_range or (0.1, 20.0)))
        if not 0 < self.depth_range[0] < self.depth_range[1]:
            raise ValueError(f"depth_range must be (min, max) with 0 < min < max, got {depth_range}")
        self.autoencoder = autoencoder
        # encoder without its latent projection: PixelUnshuffle ... ResBlock, GroupNorm, SiLU
        self.body = autoencoder.encoder[:-1]
        self.dim = int(autoencoder.cfg.channels[-1])
        self.downsample = int(autoencoder.cfg.downsample)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    def to(self, device) -> "AutoencoderFeatures":
        self.device = torch.device(device)
        return self

    def _frames(self, images, depth) -> torch.Tensor:
        x = rgb_to_bchw_float(images, device=self.device)
        B, _, H, W = x.shape
        if depth is None:
            d = torch.zeros(B, 1, H, W, device=self.device)  # mid-range in normalised depth
        else:
            dt = as_tensor(depth, device=self.device, dtype=torch.float32)
            if dt.ndim == 2:
                dt = dt[None]
            if tuple(dt.shape) != (B, H, W):
                raise ValueError(f"autoencoder features: depth has shape {tuple(dt.shape)}, expected {(B, H, W)}")
            d = normalize_depth(dt, *self.depth_range)[:, None]
        return torch.cat([normalize_rgb(x), d], dim=1)

    @property
    def grid_stride(self) -> int:
        """Pixels per feature cell: :class:`~pewm.memory.PersistentMap` fuses :meth:`grid` at this
        stride instead of upsampling (the same voxels at a fraction of the cost)."""
        return self.downsample

    def _encode(self, images, depth, size_of) -> torch.Tensor:
        x = self._frames(images, depth)
        B, _, H, W = x.shape
        s = self.downsample
        h, w = max(s, round(H / s) * s), max(s, round(W / s) * s)
        out_hw = size_of(H, W)
        param = next(self.body.parameters())
        dev, dtype = param.device, param.dtype
        outs = []
        for i in range(0, B, self.batch_size):
            xb = x[i : i + self.batch_size]
            if (h, w) != (H, W):
                xb = F.interpolate(xb, size=(h, w), mode="bilinear", align_corners=False)
            f = self.body(xb.to(dev, dtype)).float().to(self.device)
            if tuple(f.shape[-2:]) != out_hw:
                f = F.interpolate(f, size=out_hw, mode="bilinear", align_corners=False)
            outs.append(f)
        return torch.cat(outs).contiguous()

    @torch.no_grad()
    def __call__(self, images, depth=None) -> torch.Tensor:
        """``images`` as every extractor takes them, ``depth`` ``(B, H, W)`` metres (optional) ->
        ``(B, dim, H, W)`` float32 (bilinearly upsampled from the encoder's grid)."""
        return self._encode(images, depth, lambda H, W: (H, W))

    @torch.no_grad()
    def grid(self, images, depth=None) -> torch.Tensor:
        """The encoder's own grid: ``(B, dim, h, w)`` with one cell per pixel that
        :func:`pewm.memory.persistent_map.subsample_frames` samples (``h = len(range(s // 2, H, s))``)."""
        s = self.downsample
        return self._encode(images, depth, lambda H, W: (len(range(s // 2, H, s)), len(range(s // 2, W, s))))


register_extractor("autoencoder", AutoencoderFeatures)

__all__ = ["AutoencoderFeatures"]
