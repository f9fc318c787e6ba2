"""Goal costs: how far an imagined RGB-D frame looks from the goal image (lower is better).

arXiv 2505.05495 §4.2 (Table 2) ranks candidates by LPIPS between the goal image and each
candidate's last imagined frame. LPIPS needs backbone weights that cannot be downloaded here, so
the planners take any cost with one signature::

    cost(rgb (N, h, w, 3) uint8, depth (N, h, w), goal_rgb (h, w, 3), goal_depth (h, w)) -> (N,) float

* :class:`LatentCost` (``latent``): squared L2 distance between the world model's own autoencoder
  latents of candidate and goal RGB-D (mean over latent elements); the model's normalised pixels
  for a pixel-space model.
* :class:`SSIMDepthCost` (``ssim-depth``): ``1 - SSIM`` on RGB (torchmetrics, computed locally)
  plus ``depth_weight`` x mean ``|log(depth / goal depth)|``.
* :class:`PixelCost` (``pixel``): RGB mean squared error in ``[0, 1]`` plus the same depth term.
* :class:`DINOv2Cost` (``dinov2``): cosine distance of mean-pooled DINOv2 patch features from local
  weights (:class:`~pewm.memory.features.Dinov2Extractor`; nothing is downloaded).

Arrays may be numpy or torch; a single candidate ``(h, w, 3)`` is accepted.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch

from pewm.memory.features import Dinov2Extractor
from pewm.model import WorldModel

MIN_DEPTH, MAX_DEPTH = 0.05, 10.0  # depth clamp of the log-ratio term (metres)


@runtime_checkable
class GoalCost(Protocol):
    """``cost(rgb, depth, goal_rgb, goal_depth) -> (N,)`` float64, lower = closer to the goal."""

    name: str

    def __call__(self, rgb, depth, goal_rgb, goal_depth) -> np.ndarray: ...


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def cost_inputs(rgb, depth, goal_rgb, goal_depth) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked inputs: candidates ``(N, 3, h, w)`` float in ``[0, 1]`` and ``(N, h, w)`` metres, the
    goal ``(1, 3, h, w)`` and ``(1, h, w)``."""
    r, d, gr, gd = _np(rgb), _np(depth).astype(np.float32), _np(goal_rgb), _np(goal_depth).astype(np.float32)
    if r.ndim == 3:
        r = r[None]
    if d.ndim == 2:
        d = d[None]
    if r.ndim != 4 or r.shape[-1] != 3 or r.dtype != np.uint8:
        raise ValueError(f"rgb must be (N, h, w, 3) uint8, got shape {r.shape} dtype {r.dtype}")
    if d.shape != r.shape[:3]:
        raise ValueError(f"depth has shape {d.shape}, expected {r.shape[:3]} to match rgb")
    if gr.shape != r.shape[1:] or gr.dtype != np.uint8:
        raise ValueError(f"goal_rgb must be {r.shape[1:]} uint8 like the candidates, "
                         f"got shape {gr.shape} dtype {gr.dtype}")
    if gd.shape != r.shape[1:3]:
        raise ValueError(f"goal_depth has shape {gd.shape}, expected {r.shape[1:3]}")

    def chw(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float() / 255.0

    return chw(r), torch.from_numpy(d), chw(gr[None]), torch.from_numpy(gd[None])


def log_depth_error(depth: torch.Tensor, goal_depth: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mean ``|log(depth / goal depth)|`` over the pixels with a valid goal depth (finite,
    > 0); depths are clamped to ``[MIN_DEPTH, MAX_DEPTH]`` (an invalid candidate depth counts as
    ``MIN_DEPTH``); 0 when the goal has no valid pixel."""
    valid = torch.isfinite(goal_depth) & (goal_depth > 0)
    d = torch.nan_to_num(depth, nan=0.0, posinf=MAX_DEPTH).clamp(MIN_DEPTH, MAX_DEPTH).log()
    g = torch.nan_to_num(goal_depth, nan=1.0).clamp(MIN_DEPTH, MAX_DEPTH).log()
    err = (d - g).abs() * valid
    return err.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)


def _check_weight(name: str, w) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {w!r}")
    return float(w)


class PixelCost:
    """RGB mean squared error (in ``[0, 1]``) + ``depth_weight`` x mean ``|log depth ratio|``."""

    name = "pixel"

    def __init__(self, depth_weight: float = 0.1) -> None:
        self.depth_weight = _check_weight("depth_weight", depth_weight)

    def __call__(self, rgb, depth, goal_rgb, goal_depth) -> np.ndarray:
        r, d, gr, gd = cost_inputs(rgb, depth, goal_rgb, goal_depth)
        c = ((r - gr) ** 2).flatten(1).mean(1) + self.depth_weight * log_depth_error(d, gd)
        return c.double().numpy()


class SSIMDepthCost:
    """``1 - SSIM`` on RGB (torchmetrics' Gaussian 11 px window, data range 1; frames of at least
    11 x 11 pixels) + ``depth_weight`` x mean ``|log depth ratio|``."""

    name = "ssim-depth"

    def __init__(self, depth_weight: float = 0.5) -> None:
        self.depth_weight = _check_weight("depth_weight", depth_weight)

    def __call__(self, rgb, depth, goal_rgb, goal_depth) -> np.ndarray:
        from torchmetrics.functional.image import structural_similarity_index_measure

        r, d, gr, gd = cost_inputs(rgb, depth, goal_rgb, goal_depth)
        if min(r.shape[-2:]) < 11:
            raise ValueError(f"ssim-depth cost needs frames of at least 11x11 pixels, got {tuple(r.shape[-2:])}")
        s = structural_similarity_index_measure(r, gr.expand_as(r).contiguous(), data_range=1.0, reduction="none")
        c = 1.0 - s.reshape(-1) + self.depth_weight * log_depth_error(d, gd)
        return c.double().numpy()


class LatentCost:
    """Mean squared distance between the world model's latents of candidate and goal RGB-D (the
    frozen autoencoder's encoding of the normalised frames, :meth:`WorldModel.encode_frames`; the
    normalised pixels themselves for a pixel-space model). Frames at the model's resolution."""

    name = "latent"

    def __init__(self, model: WorldModel, batch_size: int = 64) -> None:
        if not isinstance(model, WorldModel):
            raise ValueError(f"LatentCost needs the WorldModel whose autoencoder it uses, got {type(model).__name__}")
        self.model = model
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` in ``[0, 1]`` and ``(N, h, w)`` -> ``(N, D)`` flattened latents."""
        m, dev = self.model, self.model.device
        out = []
        for i in range(0, rgb.shape[0], self.batch_size):
            x = m.denoiser.normalize_frames(rgb[i:i + self.batch_size].to(dev), depth[i:i + self.batch_size].to(dev))
            out.append(m.encode_frames(x).float().flatten(1).cpu())
        return torch.cat(out)

    def __call__(self, rgb, depth, goal_rgb, goal_depth) -> np.ndarray:
        r, d, gr, gd = cost_inputs(rgb, depth, goal_rgb, goal_depth)
        hw = (self.model.config.image_height, self.model.config.image_width)
        if tuple(r.shape[-2:]) != hw:
            raise ValueError(f"latent cost: frames are {r.shape[-2]}x{r.shape[-1]}, the model encodes {hw[0]}x{hw[1]}")
        z, zg = self.encode(r, d), self.encode(gr, gd)
        return ((z - zg) ** 2).mean(1).double().numpy()


class DINOv2Cost:
    """``1 - cos`` between mean-pooled DINOv2 patch features of candidate and goal RGB (weights from
    a local directory, :class:`~pewm.memory.features.Dinov2Extractor`) + ``depth_weight`` x mean
    ``|log depth ratio|``."""

    name = "dinov2"

    def __init__(self, weights, input_size: int | tuple[int, int] | None = None, depth_weight: float = 0.0,
                 device="cpu") -> None:
        self.extractor = Dinov2Extractor(weights, device=device, input_size=input_size)
        self.depth_weight = _check_weight("depth_weight", depth_weight)

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` in ``[0, 1]`` -> ``(N, C)`` unit-norm mean features."""
        f = self.extractor(rgb).flatten(2).mean(-1).cpu()
        return torch.nn.functional.normalize(f, dim=1)

    def __call__(self, rgb, depth, goal_rgb, goal_depth) -> np.ndarray:
        r, d, gr, gd = cost_inputs(rgb, depth, goal_rgb, goal_depth)
        c = 1.0 - (self.features(r) * self.features(gr)).sum(1) + self.depth_weight * log_depth_error(d, gd)
        return c.double().numpy()


COSTS: dict[str, Callable[..., GoalCost]] = {
    "latent": LatentCost,
    "ssim-depth": SSIMDepthCost,
    "pixel": PixelCost,
    "dinov2": DINOv2Cost,
}


def make_cost(name: str, model: WorldModel | None = None, **kwargs) -> GoalCost:
    """The cost ``name`` of :data:`COSTS`: ``latent`` needs ``model``; ``dinov2`` needs
    ``weights=DIR`` (a local DINOv2 ``save_pretrained`` directory); ``kwargs`` go to the class."""
    if name not in COSTS:
        raise ValueError(f"unknown goal cost {name!r}; known: {sorted(COSTS)}")
    if name == "latent":
        if model is None:
            raise ValueError("the latent cost needs the world model (make_cost('latent', model))")
        return LatentCost(model, **kwargs)
    if name == "dinov2" and "weights" not in kwargs:
        raise ValueError("the dinov2 cost needs weights=DIR, a local DINOv2 directory (pewm never downloads weights)")
    return COSTS[name](**kwargs)


__all__ = [
    "COSTS",
    "DINOv2Cost",
    "GoalCost",
    "LatentCost",
    "PixelCost",
    "SSIMDepthCost",
    "cost_inputs",
    "log_depth_error",
    "make_cost",
]
