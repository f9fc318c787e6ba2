"""Per-pixel feature extractors whose output is fused into the map (§3.2 "3D feature map").

One small interface, :class:`FeatureExtractor`: ``extractor(images) -> (B, C, H, W)`` float32 at
the input's pixel resolution, with attributes ``dim`` (= C) and ``name``. Images are uint8
``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in [0, 1] (unbatched accepted), on any device; the
output is on the extractor's device.

Built in:

* ``rgb`` — the colour itself (C = 3): the paper's "point cloud" ablation.
* ``dinov2`` — DINOv2 ViT-S/14 patch features (C = 384 for ViT-S) bilinearly upsampled to pixels,
  as in the paper's DINO-Map. Weights come from a **local** directory (``save_pretrained`` layout,
  e.g. a downloaded ``facebook/dinov2-small``); nothing is ever downloaded. Needs the optional
  ``transformers`` dependency (``pip install pewm[dinov2]``).

Other packages (e.g. the model's learned encoder) add theirs with :func:`register_extractor`; every
registered extractor runs the shared contract tests in ``tests/test_memory_features.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from pewm.memory._util import rgb_to_bchw_float

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class FeatureExtractor(Protocol):
    """``(B, 3, H, W)`` float [0, 1] (or uint8 ``(B, H, W, 3)``) -> ``(B, dim, H, W)`` float32."""

    name: str
    dim: int

    def __call__(self, images) -> torch.Tensor: ...


class RGBExtractor:
    """The colour as a 3-channel feature (the paper's "point cloud" map ablation)."""

    name = "rgb"
    dim = 3

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def to(self, device) -> "RGBExtractor":
        self.device = torch.device(device)
        return self

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        return rgb_to_bchw_float(images, device=self.device).contiguous()


class Dinov2Extractor:
    """DINOv2 patch features upsampled to pixels (§3.2: "DINOv2 features ... bilinearly upsampled").

    ``weights``: a local directory with ``config.json`` + weights, loaded with
    ``transformers.Dinov2Model.from_pretrained(weights, local_files_only=True)`` (no download).
    Images are ImageNet-normalised and resized to ``input_size`` (``(H, W)``, each a multiple of the
    patch size; default: the image size rounded to the nearest multiple, at least one patch), the
    last hidden state's patch tokens (CLS and any register tokens dropped) are reshaped to a grid
    and bilinearly upsampled to the input resolution. ``batch_size`` bounds peak memory.
    """

    name = "dinov2"

    def __init__(
        self,
        weights: str | Path,
        device: torch.device | str = "cpu",
        input_size: int | tuple[int, int] | None = None,
        batch_size: int = 16,
        dtype: torch.dtype = torch.float32,
    ):
        try:
            from transformers import Dinov2Model
        except ImportError as e:  # pragma: no cover - exercised only without the extra
            raise ImportError("the dinov2 extractor needs transformers: pip install 'pewm[dinov2]'") from e
        path = Path(weights)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"DINOv2 weights directory {path} has no config.json; pass a local save_pretrained directory "
                "(e.g. a copy of facebook/dinov2-small); pewm never downloads weights"
            )
        self.model = Dinov2Model.from_pretrained(str(path), local_files_only=True).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.model.to(device=self.device, dtype=dtype)
        self.patch = int(self.model.config.patch_size)
        self.dim = int(self.model.config.hidden_size)
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        if self.input_size is not None and any(s % self.patch for s in self.input_size):
            raise ValueError(f"input_size {self.input_size} must be multiples of the patch size {self.patch}")
        self.batch_size = batch_size
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def to(self, device) -> "Dinov2Extractor":
        self.device = torch.device(device)
        self.model.to(self.device)
        self._mean, self._std = self._mean.to(self.device), self._std.to(self.device)
        return self

    def _size(self, H: int, W: int) -> tuple[int, int]:
        if self.input_size is not None:
            return self.input_size
        p = self.patch
        return max(p, round(H / p) * p), max(p, round(W / p) * p)

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        x = rgb_to_bchw_float(images, device=self.device)
        B, _, H, W = x.shape
        h, w = self._size(H, W)
        gh, gw = h // self.patch, w // self.patch
        outs = []
        for i in range(0, B, self.batch_size):
            xb = x[i : i + self.batch_size]
            if (h, w) != (H, W):
                xb = F.interpolate(xb, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            xb = ((xb - self._mean) / self._std).to(self.dtype)
            hidden = self.model(pixel_values=xb).last_hidden_state  # (b, 1 [+ registers] + gh*gw, C)
            patches = hidden[:, -gh * gw :].float().reshape(-1, gh, gw, self.dim).permute(0, 3, 1, 2)
            outs.append(F.interpolate(patches, size=(H, W), mode="bilinear", align_corners=False))
        return torch.cat(outs).contiguous()


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor], overwrite: bool = False) -> None:
    """Register ``factory(**kw) -> FeatureExtractor`` under ``name`` (for :func:`make_extractor`)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"feature extractor {name!r} is already registered")
    _REGISTRY[name] = factory


def make_extractor(name: str, **kw) -> FeatureExtractor:
    """Build a registered extractor: ``make_extractor("dinov2", weights="/path/dinov2-small")``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown feature extractor {name!r}; registered: {available_extractors()}")
    return _REGISTRY[name](**kw)


def available_extractors() -> list[str]:
    return sorted(_REGISTRY)


register_extractor("rgb", RGBExtractor)
register_extractor("dinov2", Dinov2Extractor)
