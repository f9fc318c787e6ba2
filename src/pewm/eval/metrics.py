"""Per-frame metrics of the generation benchmark (paper Table 1) and scene-revisit consistency.

Every metric is a small pure function: images/depths in (NumPy arrays or torch tensors, any
device), a per-frame NumPy ``float64`` array ``(T,)`` out. Aggregation over frames, classes and
seeds lives in :mod:`pewm.eval.report`; NaN marks "no value for this frame" and is skipped there.

* :func:`psnr`, :func:`ssim` — image fidelity against the ground truth (Table 1's PSNR↑, SSIM↑).
* :func:`depth_absrel`, :func:`depth_delta1` — depth fidelity of the generated depth (the paper's
  model is RGB-D; these are the standard monocular-depth metrics AbsRel↓ and δ1↑).
* :func:`frame_metrics` — all four at once, keyed ``psnr, ssim, absrel, delta1``.
* :func:`mse`, :func:`gradient_magnitude`, :func:`sharpness` — what the split-level PSNR of the mean
  MSE and the sharpness ratio are computed from (issue #12; aggregation: :mod:`pewm.eval.aggregate`).
* SRC, *scene revisit consistency* (Table 1's SRC↑: cosine similarity of image features between
  the first visit of a place and a later visit of it): a :class:`GlobalFeatures` extractor
  (:class:`DinoV2GlobalFeatures` as in the paper, or the weight-free fallback
  :class:`ColorLayoutFeatures`), :func:`match_first_visits` to find the first visit of each frame's
  place from camera poses, and :func:`src` / :func:`src_at_matches` for the cosine similarities.

Image conventions: ``(T, h, w, 3)`` channel-last, ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``
(data range 1). Depth: metric z-depth ``(T, h, w)``; ground-truth depth that is not finite or not
positive is "no measurement" (see ``docs/conventions.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from pewm.memory.features import Dinov2Extractor

METRICS = ("psnr", "ssim", "absrel", "delta1", "src")
"""Metric names of the benchmark, in Table-1 order (``src`` comes from the SRC functions)."""

PSNR_MAX_DB = 100.0
"""PSNR of identical frames. The MSE is clamped at ``1e-10`` (data range 1), so a perfect frame
scores 100 dB instead of ``inf`` and means over frames and seeds stay finite."""

_MSE_FLOOR = 10.0 ** (-PSNR_MAX_DB / 10.0)
_ABSREL_EPS = 1e-6  # predicted depth <= 0 (or not finite) is replaced by this for AbsRel


# --------------------------------------------------------------------------------------------
# input handling


def _np(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _images01(x, name: str) -> np.ndarray:
    """``(T, h, w, 3)`` uint8 or float [0, 1] -> float64 in [0, 1] (floats are clipped to [0, 1]).

    Floats far outside [0, 1] (below -0.5 or above 1.5) are rejected: they are almost surely
    ``[-1, 1]`` model outputs or ``[0, 255]`` floats, which would silently give wrong scores.
    """
    a = _np(x, name)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (T, h, w, 3), got {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    if a.size and (a.min() < -0.5 or a.max() > 1.5):
        raise ValueError(
            f"{name} is float with values in [{a.min():.3g}, {a.max():.3g}]; expected [0, 1] "
            "(convert [-1, 1] or [0, 255] images first)"
        )
    return np.clip(a, 0.0, 1.0)


def _same_shape(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape, got {a.shape} and {b.shape}")


def _depths(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p = _np(pred, "pred").astype(np.float64)
    g = _np(gt, "gt").astype(np.float64)
    if g.ndim != 3:
        raise ValueError(f"gt depth must have shape (T, h, w), got {g.shape}")
    _same_shape(p, g, "pred depth", "gt depth")
    return p, g


# --------------------------------------------------------------------------------------------
# image and depth fidelity


def psnr(pred_rgb, gt_rgb) -> np.ndarray:
    """Peak signal-to-noise ratio per frame in dB, ``(T,)`` (Table 1's PSNR↑), data range 1.

    ``10 log10(1 / MSE)`` with the MSE over all pixels and channels of a frame. Identical frames
    give :data:`PSNR_MAX_DB` (100 dB) rather than ``inf`` (the MSE is clamped at ``1e-10``).
    """
    return 10.0 * np.log10(1.0 / np.maximum(mse(pred_rgb, gt_rgb), _MSE_FLOOR))


def mse(pred_rgb, gt_rgb) -> np.ndarray:
    """Mean squared error per frame, ``(T,)``, data range 1, over all pixels and channels (unclamped:
    identical frames give 0). Split-level PSNR of the mean MSE (issue #12) is
    ``10 log10(1 / mean(mse))``: a pixel-identical frame adds 0 to the mean instead of 100 dB to a
    mean of PSNRs."""
    p, g = _images01(pred_rgb, "pred_rgb"), _images01(gt_rgb, "gt_rgb")
    _same_shape(p, g, "pred_rgb", "gt_rgb")
    return ((p - g) ** 2).reshape(p.shape[0], -1).mean(axis=1)


def gradient_magnitude(rgb) -> np.ndarray:
    """Mean image-gradient magnitude per frame, ``(T,)``: ``sqrt(dx² + dy²)`` of forward differences
    per channel (data range 1) on the ``(h-1) x (w-1)`` pixels that have both, averaged over pixels
    and channels. A blurred frame has less of it than a sharp one."""
    x = _images01(rgb, "rgb")
    if min(x.shape[1:3]) < 2:
        raise ValueError(f"gradient_magnitude needs frames of at least 2x2 pixels, got {x.shape[1:3]}")
    dx = x[:, :-1, 1:] - x[:, :-1, :-1]
    dy = x[:, 1:, :-1] - x[:, :-1, :-1]
    return np.sqrt(dx ** 2 + dy ** 2).reshape(x.shape[0], -1).mean(axis=1)


def sharpness(pred_rgb, gt_rgb) -> np.ndarray:
    """Sharpness ratio per frame, ``(T,)`` (issue #12): :func:`gradient_magnitude` of the prediction
    over the ground truth's; < 1 = blurrier than the truth (a blurred mean prediction), > 1 = noisier.
    NaN where the ground truth has no gradient at all. Over a set of frames the benchmark reports the
    ratio of the mean magnitudes (a flat ground-truth frame cannot dominate it)."""
    gp, gg = gradient_magnitude(pred_rgb), gradient_magnitude(gt_rgb)
    if gp.shape != gg.shape:
        raise ValueError(f"pred_rgb and gt_rgb must have the same number of frames, got {gp.shape} and {gg.shape}")
    return np.where(gg > 0, gp / np.where(gg > 0, gg, 1.0), np.nan)


def ssim(pred_rgb, gt_rgb) -> np.ndarray:
    """Structural similarity per frame, ``(T,)`` (Table 1's SSIM↑).

    ``torchmetrics``' ``structural_similarity_index_measure`` with its defaults (Gaussian window
    11 px, sigma 1.5, k1 = 0.01, k2 = 0.03), data range 1, on the RGB channels (the mean over
    channels and the valid window area). Frames must be at least 11 px on each side. Imported from
    ``torchmetrics.functional.image``: the root ``torchmetrics.functional`` alias is deprecated
    (torchmetrics 1.9 warns on every call).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    p, g = _images01(pred_rgb, "pred_rgb"), _images01(gt_rgb, "gt_rgb")
    _same_shape(p, g, "pred_rgb", "gt_rgb")
    if min(p.shape[1:3]) < 11:
        raise ValueError(f"ssim needs frames of at least 11x11 pixels, got {p.shape[1:3]}")
    if p.shape[0] == 0:
        return np.zeros(0)
    tp = torch.from_numpy(p).permute(0, 3, 1, 2).contiguous()
    tg = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous()
    out = structural_similarity_index_measure(tp, tg, data_range=1.0, reduction="none")
    return out.reshape(-1).double().numpy()


def depth_absrel(pred, gt) -> np.ndarray:
    """Mean absolute relative depth error per frame, ``(T,)`` (AbsRel↓).

    ``mean(|p - g| / g)`` over the pixels whose ground truth is valid (finite and > 0). A predicted
    depth that is not finite or ``<= 0`` is replaced by a tiny epsilon (1e-6 m), i.e. counts as an
    error of about 1. Frames without any valid ground-truth pixel give NaN.
    """
    p, g = _depths(pred, gt)
    ok = np.isfinite(g) & (g > 0)
    ps = np.where(np.isfinite(p) & (p > 0), p, _ABSREL_EPS)
    gs = np.where(ok, g, 1.0)
    err = np.where(ok, np.abs(ps - gs) / gs, 0.0)
    n = ok.reshape(len(g), -1).sum(axis=1)
    return np.where(n > 0, err.reshape(len(g), -1).sum(axis=1) / np.maximum(n, 1), np.nan)


def depth_delta1(pred, gt) -> np.ndarray:
    """Share of valid pixels with ``max(p / g, g / p) < 1.25`` per frame, ``(T,)`` (δ1↑).

    Valid = ground truth finite and > 0. A predicted depth that is not finite or ``<= 0`` is
    always wrong. Frames without any valid ground-truth pixel give NaN.
    """
    p, g = _depths(pred, gt)
    ok = np.isfinite(g) & (g > 0)
    pok = np.isfinite(p) & (p > 0)
    ps = np.where(pok, p, 1.0)
    gs = np.where(ok, g, 1.0)
    good = ok & pok & (np.maximum(ps / gs, gs / ps) < 1.25)
    n = ok.reshape(len(g), -1).sum(axis=1)
    return np.where(n > 0, good.reshape(len(g), -1).sum(axis=1) / np.maximum(n, 1), np.nan)


def frame_metrics(pred_rgb, gt_rgb, pred_depth=None, gt_depth=None) -> dict[str, np.ndarray]:
    """``{"psnr", "ssim", "absrel", "delta1"}`` -> per-frame ``(T,)`` arrays.

    Without depth (either argument ``None``) the depth metrics are all-NaN, which aggregation skips.
    """
    out = {"psnr": psnr(pred_rgb, gt_rgb), "ssim": ssim(pred_rgb, gt_rgb)}
    T = len(out["psnr"])
    if pred_depth is None or gt_depth is None:
        out["absrel"] = np.full(T, np.nan)
        out["delta1"] = np.full(T, np.nan)
    else:
        out["absrel"] = depth_absrel(pred_depth, gt_depth)
        out["delta1"] = depth_delta1(pred_depth, gt_depth)
        if len(out["absrel"]) != T:
            raise ValueError(f"depth has {len(out['absrel'])} frames but rgb has {T}")
    return out


# --------------------------------------------------------------------------------------------
# scene revisit consistency (SRC)


@runtime_checkable
class GlobalFeatures(Protocol):
    """One embedding per image: ``features(rgb (T, h, w, 3) uint8) -> (T, D)`` float array.

    ``name`` identifies the extractor in reports (SRC values of different extractors are not
    comparable).
    """

    name: str

    def __call__(self, rgb) -> np.ndarray: ...


class DinoV2GlobalFeatures:
    """DINOv2 image embedding for SRC, as in the paper: the patch features of
    :class:`pewm.memory.features.Dinov2Extractor` averaged over the image (``(T, hidden_size)``).

    ``weights_dir`` is a local ``save_pretrained`` directory (e.g. a copy of
    ``facebook/dinov2-small``); nothing is downloaded. The mean of the pixel-upsampled patch grid
    equals (up to bilinear border effects) the mean of the patch tokens.
    """

    name = "dinov2"

    def __init__(self, weights_dir: str | Path, device: torch.device | str = "cpu",
                 input_size: int | tuple[int, int] | None = None, batch_size: int = 16):
        self.extractor = Dinov2Extractor(weights_dir, device=device, input_size=input_size, batch_size=batch_size)
        self.dim = self.extractor.dim

    def __call__(self, rgb) -> np.ndarray:
        x = _images01(rgb, "rgb")
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for i in range(0, x.shape[0], self.extractor.batch_size):
            chunk = torch.from_numpy(x[i : i + self.extractor.batch_size]).float().permute(0, 3, 1, 2)
            out.append(self.extractor(chunk).mean(dim=(2, 3)).cpu())
        return torch.cat(out).numpy().astype(np.float32)


class ColorLayoutFeatures:
    """Weight-free fallback embedding for SRC when no DINOv2 weights are available.

    The image is area-downsampled to at most ``size`` x ``size``; on a ``grid`` x ``grid`` layout
    (default 4 x 4) each cell contributes its mean colour mapped to [-1, 1] (3 values) and its mean
    gradient magnitude of the grey image minus the image-wide mean gradient magnitude (1 value);
    the ``grid² * 4`` vector is L2-normalised (so ``src`` is a plain dot product). Centring colours
    and gradients keeps the cosine from saturating near 1 for unrelated images (raw colours are all
    positive). It measures layout and colour agreement only, far cruder than DINOv2: reports must
    name the extractor used (``name = "color_layout"``).
    """

    name = "color_layout"

    def __init__(self, grid: int = 4, size: int = 32):
        if grid < 1 or size < grid:
            raise ValueError(f"need 1 <= grid <= size, got grid={grid}, size={size}")
        self.grid, self.size = grid, size
        self.dim = grid * grid * 4

    def __call__(self, rgb) -> np.ndarray:
        x = torch.from_numpy(_images01(rgb, "rgb")).float().permute(0, 3, 1, 2)  # (T, 3, h, w)
        T, _, h, w = x.shape
        if T == 0:
            return np.zeros((0, self.dim), np.float32)
        if min(h, w) < self.grid:
            raise ValueError(f"rgb frames must be at least {self.grid} px on each side, got {(h, w)}")
        x = F.adaptive_avg_pool2d(x, (min(h, self.size), min(w, self.size)))
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
        gx = F.pad(grey[..., :, 1:] - grey[..., :, :-1], (0, 1, 0, 0))
        gy = F.pad(grey[..., 1:, :] - grey[..., :-1, :], (0, 0, 0, 1))
        grad = torch.sqrt(gx**2 + gy**2)
        cells = (self.grid, self.grid)
        colour = F.adaptive_avg_pool2d(x, cells) * 2.0 - 1.0  # (T, 3, g, g)
        g = F.adaptive_avg_pool2d(grad, cells)
        g = g - g.mean(dim=(2, 3), keepdim=True)
        f = torch.cat([colour, g], dim=1).reshape(T, -1)
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return f.numpy().astype(np.float32)


def match_first_visits(poses, first_candidate_end: int | None, max_dist: float = 0.5,
                       max_angle_deg: float = 30.0, min_gap: int = 8) -> np.ndarray:
    """For each frame, the earliest earlier frame seen from (nearly) the same place: ``(T,)`` int.

    ``poses`` are camera-to-world ``(T, 4, 4)`` (OpenCV camera: the rotation's third column is the
    viewing direction, camera +z). Frame ``s`` is a **candidate** first visit of frame ``t`` iff

    * ``s <= t - min_gap`` (at least ``min_gap`` frames earlier, so a frame is not matched to its
      immediate predecessors while the agent walks or turns on the spot), and
    * ``s < first_candidate_end`` — pass the cut point (the number of context/history frames) to
      accept only frames observed before generation started, or ``None`` (equivalently ``T``) to
      accept any earlier frame, generated ones included.

    A candidate **matches** when its camera centre is within ``max_dist`` metres of frame ``t``'s
    and the angle between the two viewing directions is at most ``max_angle_deg`` (both bounds
    inclusive, up to 1e-9 for rounding). The result is the smallest matching ``s`` (the *first*
    visit, not the most recent one) or ``-1`` when nothing matches; frames ``t < min_gap`` are
    always ``-1``. Used for SRC (Table 1): compare frame ``t`` with frame ``result[t]``.
    """
    P = _np(poses, "poses").astype(np.float64)
    if P.ndim != 3 or P.shape[1:] != (4, 4):
        raise ValueError(f"poses must have shape (T, 4, 4), got {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("poses contains NaN or inf")
    if int(min_gap) < 1:
        raise ValueError(f"min_gap must be >= 1, got {min_gap}")
    if max_dist < 0 or not (0 <= max_angle_deg <= 180):
        raise ValueError(f"need max_dist >= 0 and 0 <= max_angle_deg <= 180, got {max_dist}, {max_angle_deg}")
    T = P.shape[0]
    end = T if first_candidate_end is None else int(first_candidate_end)
    pos = P[:, :3, 3]
    fwd = P[:, :3, 2]
    fwd = fwd / np.maximum(np.linalg.norm(fwd, axis=1, keepdims=True), 1e-12)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)  # (t, s)
    cos = fwd @ fwd.T
    t_idx, s_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    ok = (s_idx <= t_idx - int(min_gap)) & (s_idx < end)
    ok &= dist <= max_dist + 1e-9
    ok &= cos >= np.cos(np.deg2rad(max_angle_deg)) - 1e-9
    any_ok = ok.any(axis=1)
    return np.where(any_ok, ok.argmax(axis=1), -1).astype(np.int64)


def src(features_a, features_b) -> np.ndarray:
    """Row-wise cosine similarity ``(T,)`` of two ``(T, D)`` feature arrays (SRC, Table 1).

    A zero feature vector gives NaN (the cosine is undefined). The paper reports SRC x 100.
    """
    a = _np(features_a, "features_a").astype(np.float64)
    b = _np(features_b, "features_b").astype(np.float64)
    if a.ndim != 2:
        raise ValueError(f"features_a must have shape (T, D), got {a.shape}")
    _same_shape(a, b, "features_a", "features_b")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > 0) & (nb > 0)
    dot = (a * b).sum(axis=1)
    return np.where(ok, dot / np.where(ok, na * nb, 1.0), np.nan)


def src_at_matches(features, matches, reference_features=None) -> np.ndarray:
    """SRC per frame: ``cos(features[t], reference_features[matches[t]])``, NaN where ``matches[t] < 0``.

    ``features`` ``(T, D)`` are of the frames being scored (e.g. generated frames, placed at their
    frame index); ``reference_features`` ``(M, D)`` those of the first visits (default:
    ``features`` itself, i.e. the first visit as the model generated it, or the ground truth /
    history frames when the first visit lies before the cut); ``matches`` from
    :func:`match_first_visits`.
    """
    f = _np(features, "features").astype(np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must have shape (T, D), got {f.shape}")
    ref = f if reference_features is None else _np(reference_features, "reference_features").astype(np.float64)
    if ref.ndim != 2 or ref.shape[1] != f.shape[1]:
        raise ValueError(f"reference_features must have shape (M, {f.shape[1]}), got {ref.shape}")
    m = _np(matches, "matches").astype(np.int64)
    if m.shape != (f.shape[0],):
        raise ValueError(f"matches must have shape ({f.shape[0]},), got {m.shape}")
    if m.size and m.max(initial=-1) >= ref.shape[0]:
        raise ValueError(f"matches index {m.max()} is out of range for {ref.shape[0]} reference frames")
    out = np.full(f.shape[0], np.nan)
    hit = m >= 0
    if hit.any():
        out[hit] = src(f[hit], ref[m[hit]])
    return out
