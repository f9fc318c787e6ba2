"""Memory tokens of a voxel map and their 3D sinusoidal position embedding (§3.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class MemoryTokens:
    """Memory tokens of a map: voxel ``centers`` (N, 3), ``features`` (N, C), ``pos_emb`` (N, D).

    ``mask`` (N,) is True for real tokens (False for padding when ``pad=True``). ``as_tensor()``
    concatenates ``[features, pos_emb]`` as in the paper ("feature concatenated with a 3D sinusoidal
    absolute position embedding").
    """

    centers: torch.Tensor
    features: torch.Tensor
    pos_emb: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    def as_tensor(self) -> torch.Tensor:
        return torch.cat([self.features, self.pos_emb.to(self.features.dtype)], dim=-1)


def sinusoidal_position_embedding(
    xyz: torch.Tensor, dim: int = 96, min_wavelength: float = 0.5, max_wavelength: float = 100.0
) -> torch.Tensor:
    """3D sinusoidal absolute position embedding ``(..., dim)`` of world points ``(..., 3)`` in metres.

    Each axis gets ``dim / 3`` channels: sines and cosines at ``dim / 6`` wavelengths spaced
    geometrically from ``min_wavelength`` to ``max_wavelength`` (metres). Layout ``[x_sin, x_cos,
    y_sin, y_cos, z_sin, z_cos]``.
    """
    if dim % 6:
        raise ValueError(f"dim must be a multiple of 6, got {dim}")
    n = dim // 6
    if n == 1:
        wl = torch.tensor([min_wavelength], device=xyz.device, dtype=torch.float32)
    else:
        wl = min_wavelength * (max_wavelength / min_wavelength) ** (
            torch.arange(n, device=xyz.device, dtype=torch.float32) / (n - 1)
        )
    ang = xyz.float()[..., :, None] * (2 * math.pi / wl)  # (..., 3, n)
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)
