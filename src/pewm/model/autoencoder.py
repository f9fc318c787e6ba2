"""A small RGB-D autoencoder: the latent space the ``tiny`` denoiser works in (§3.2 of arXiv 2505.05495).

The paper encodes RGB and depth with CogVideoX's VAE and diffuses in its latent space. pewm cannot
download that VAE, and diffusing 64x64 pixels with 8x8 patches through a 192-wide transformer
fails (each token would have to emit 256 values; ``benchmarks/token_bottleneck.py`` measures it:
the sampled frames stay noise). So the ``tiny`` preset trains this autoencoder first (training
stage ``autoencoder``), freezes it, and diffuses its latents: 64x64x4 normalised RGB-D ->
16x16x``latent_channels``, 2x2 latent patches -> the same 64 tokens per frame, each carrying 16
numbers instead of 256.

Design (measured choices are in ``docs/design.md``):

* deterministic (no KL): convolutions and residual blocks, ``log2(downsample)`` stride-2 levels;
* the decoder is trained on latents with Gaussian noise added (``latent_noise`` times the batch's
  latent std), so that slightly-off latents produced by the diffusion model still decode well;
* latents are standardised per channel with statistics measured on the data after training
  (:meth:`RGBDAutoencoder.calibrate`; buffers saved with the model), so the diffusion model sees
  roughly unit-variance inputs, as Stable Diffusion's ``scaling_factor`` does.

Frames enter and leave normalised (RGB in ``[-1, 1]``, log depth in ``[-1, 1]``; see
:mod:`pewm.model.normalization`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AutoencoderConfig:
    """``downsample`` (a power of 2, >= 2) per axis; ``channels`` one width per resolution level
    below full resolution (``len(channels) == log2(downsample)``): the encoder first folds 2x2
    pixels into channels (pixel unshuffle; full-resolution convolutions cost 4x more on a CPU for
    little gain), then halves the resolution once per further level."""

    latent_channels: int = 4
    downsample: int = 4
    channels: tuple[int, ...] = (48, 96)
    latent_noise: float = 0.1
    depth_weight: float = 1.0  # loss weight of the depth channel against the three RGB channels

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.validate()

    def validate(self) -> "AutoencoderConfig":
        d = self.downsample
        if not isinstance(d, int) or d < 2 or d & (d - 1):
            raise ValueError(f"AutoencoderConfig.downsample must be a power of 2 >= 2, got {d!r}")
        levels = int(math.log2(d))
        if len(self.channels) != levels or any(c <= 0 for c in self.channels):
            raise ValueError(
                f"AutoencoderConfig.channels must list {levels} positive widths for downsample={d}, got {self.channels}"
            )
        if not isinstance(self.latent_channels, int) or self.latent_channels <= 0:
            raise ValueError(f"AutoencoderConfig.latent_channels must be a positive integer, got {self.latent_channels!r}")
        if self.latent_noise < 0 or self.depth_weight < 0:
            raise ValueError("AutoencoderConfig.latent_noise and depth_weight must be >= 0")
        return self

    def to_dict(self) -> dict:
        return dict(latent_channels=self.latent_channels, downsample=self.downsample, channels=list(self.channels),
                    latent_noise=self.latent_noise, depth_weight=self.depth_weight)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.n1, self.c1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.n2, self.c2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class RGBDAutoencoder(nn.Module):
    """Normalised RGB-D ``(N, 4, h, w)`` <-> standardised latents ``(N, C, h/d, w/d)``."""

    in_channels = 4

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg.validate()
        ch, c4 = cfg.channels, 4 * self.in_channels
        enc: list[nn.Module] = [nn.PixelUnshuffle(2), nn.Conv2d(c4, ch[0], 3, padding=1), ResBlock(ch[0], ch[0])]
        for a, b in zip(ch[:-1], ch[1:]):
            enc += [nn.Conv2d(a, b, 3, stride=2, padding=1), ResBlock(b, b)]
        enc += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1), ResBlock(ch[-1], ch[-1])]
        for a, b in zip(ch[::-1][:-1], ch[::-1][1:]):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1), ResBlock(b, b)]
        dec += [_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], c4, 3, padding=1), nn.PixelShuffle(2)]
        self.decoder = nn.Sequential(*dec)
        # per-channel latent standardisation (set by calibrate(); saved with the model)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        d = self.cfg.downsample
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{what}: expected (N, {channels}, h, w), got {tuple(x.shape)}")
        if what == "encode" and (x.shape[-1] % d or x.shape[-2] % d):
            raise ValueError(f"encode: image size {x.shape[-2]}x{x.shape[-1]} is not divisible by downsample={d}")

    def _raw_encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB-D ``(N, 4, h, w)`` -> standardised latents ``(N, C, h/d, w/d)``."""
        self._check(x, self.in_channels, "encode")
        z = self._raw_encode(x)
        return (z - self.latent_mean[:, None, None].to(z.dtype)) / self.latent_std[:, None, None].to(z.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised latents ``(N, C, h', w')`` -> normalised RGB-D ``(N, 4, h' d, w' d)``."""
        self._check(z, self.cfg.latent_channels, "decode")
        z = z * self.latent_std[:, None, None].to(z.dtype) + self.latent_mean[:, None, None].to(z.dtype)
        return self.decoder(z)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Reconstruction loss of normalised RGB-D ``x`` (L1 + MSE, depth weighted by
        ``depth_weight``), with the decoder fed noisy latents. Returns ``loss``, ``loss_rgb``,
        ``loss_depth`` (the last two detached) and ``psnr_rgb`` (dB, of the clean-latent-free
        training reconstruction; RGB range 2)."""
        self._check(x, self.in_channels, "loss")
        z = self._raw_encode(x)
        if self.cfg.latent_noise > 0:
            gdev = x.device if generator is None else generator.device
            n = torch.randn(z.shape, device=gdev, dtype=z.dtype, generator=generator).to(z.device)
            z = z + n * (self.cfg.latent_noise * z.detach().std(dim=(0, 2, 3), keepdim=True))
        rec = self.decoder(z)
        err = rec.float() - x.float()
        per = err.abs() + err.pow(2)
        rgb, dep = per[:, :3].mean(), per[:, 3].mean()
        loss = (3 * rgb + self.cfg.depth_weight * dep) / (3 + self.cfg.depth_weight)
        mse_rgb = err[:, :3].pow(2).mean().detach()
        return {
            "loss": loss,
            "loss_rgb": rgb.detach(),
            "loss_depth": dep.detach(),
            "psnr_rgb": 10 * torch.log10(4.0 / mse_rgb.clamp_min(1e-10)),
        }

    @torch.no_grad()
    def calibrate(self, frames: torch.Tensor) -> None:
        """Set the per-channel latent mean and std from normalised RGB-D ``frames`` ``(N, 4, h, w)``."""
        z = self._raw_encode(frames.to(self.latent_mean.device, self.encoder[1].weight.dtype)).float()
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(z.std(dim=(0, 2, 3)).clamp_min(1e-4))


__all__ = ["AutoencoderConfig", "RGBDAutoencoder"]
