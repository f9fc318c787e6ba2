"""Fit RGB-D frames of any size and field of view to the model's input: crop, resize, new intrinsics.

:func:`fit_frames` centre-crops to the target aspect ratio and resizes:

* **RGB** by exact **area averaging**: each output pixel is the mean of the source area it covers
  (fractional pixels weighted by their covered fraction), so nothing aliases and the colour
  centroid of any blob stays where the camera model puts it.
* **Depth** by **nearest valid sample**: each output pixel takes the valid depth (finite, > 0) of
  the source pixel whose centre is closest to the output pixel's centre, searched within the
  output pixel's footprint; ``0`` if the footprint holds no valid depth. Every output depth is a
  real measurement of a surface that the output pixel sees, so depth edges never get values in
  between (averaging would put floating points in mid-air between a chair and the wall behind
  it). It is chosen over min-pooling because the model and every geometry check unproject a
  depth along the ray through the pixel *centre*: the sample nearest that centre is (within half
  a source pixel) on that ray, whereas the minimum over the footprint biases every slanted
  surface (the floor, walls seen at an angle) towards the camera by up to the footprint's depth
  range and dilates foreground objects by up to a footprint.

Geometry (pixel-centre convention of :mod:`pewm.geometry`: pixel ``(row, col)`` is centred at
``(u, v) = (col, row)``, the image spans ``[-0.5, W - 0.5]``): the crop is exact, not rounded to
whole pixels, so the scale is the same on both axes (square pixels stay square) and the
principal point keeps its place relative to the crop. A pure resize (same aspect ratio) gives
exactly :meth:`pewm.geometry.Intrinsics.scaled`. The resampling maps are "output edge coordinate
``e`` -> source edge coordinate ``a * e + b``" per axis (edge coordinates are ``u + 0.5``); the
ScanNet importer composes them with the colour-to-depth camera registration so that colour is
resampled once.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from pewm.geometry import Intrinsics

AxisMap = tuple[float, float]
"""``(a, b)``: output edge coordinate ``e`` lies at source edge coordinate ``a * e + b``."""

__all__ = ["AxisMap", "crop_box", "fit_frames", "fit_intrinsics", "fit_maps", "fov_deg", "map_intrinsics",
           "resample_depth", "resample_rgb"]


def crop_box(src_height: int, src_width: int, height: int, width: int) -> tuple[float, float, float, float]:
    """The centre crop ``(x0, y0, crop_width, crop_height)`` (in source pixels, edges at 0 and
    ``W``; fractional) that has the aspect ratio of ``width`` x ``height``."""
    _check_size(src_height, src_width, "source")
    _check_size(height, width, "target")
    if src_width * height > src_height * width:  # source is wider: crop the sides
        cw = src_height * width / height
        return (src_width - cw) / 2.0, 0.0, cw, float(src_height)
    if src_width * height < src_height * width:  # source is taller: crop top and bottom
        ch = src_width * height / width
        return 0.0, (src_height - ch) / 2.0, float(src_width), ch
    return 0.0, 0.0, float(src_width), float(src_height)


def fit_maps(src_height: int, src_width: int, height: int, width: int) -> tuple[AxisMap, AxisMap]:
    """The resampling maps ``(map_y, map_x)`` of :func:`fit_frames` (centre crop, then resize)."""
    x0, y0, cw, ch = crop_box(src_height, src_width, height, width)
    return (ch / height, y0), (cw / width, x0)


def _scales(src_height: int, src_width: int, height: int, width: int) -> tuple[float, float]:
    # computed like Intrinsics.scaled (w / W) so that a pure resize gives bit-identical intrinsics
    if src_width * height > src_height * width:
        return height / src_height, height / src_height
    if src_width * height < src_height * width:
        return width / src_width, width / src_width
    return width / src_width, height / src_height


def map_intrinsics(K: np.ndarray, map_y: AxisMap, map_x: AxisMap) -> np.ndarray:
    """The 3x3 intrinsics of the image that ``map_y``/``map_x`` resample from a camera ``K``."""
    K = np.asarray(K, dtype=np.float64)
    (ay, by), (ax, bx) = map_y, map_x
    out = K.copy()
    out[0, 0], out[1, 1] = K[0, 0] / ax, K[1, 1] / ay
    out[0, 1] = K[0, 1] / ax
    out[0, 2], out[1, 2] = (K[0, 2] + 0.5 - bx) / ax - 0.5, (K[1, 2] + 0.5 - by) / ay - 0.5
    return out


def fit_intrinsics(K, src_height: int, src_width: int, height: int, width: int):
    """The intrinsics after :func:`fit_frames`: an :class:`~pewm.geometry.Intrinsics` for an
    ``Intrinsics`` (which must be for ``src_width`` x ``src_height``), else a 3x3 float64 matrix."""
    x0, y0, _, _ = crop_box(src_height, src_width, height, width)
    sx, sy = _scales(src_height, src_width, height, width)
    if isinstance(K, Intrinsics):
        if (K.height, K.width) != (src_height, src_width):
            raise ValueError(f"intrinsics are for {K.width}x{K.height} images, the frames are "
                             f"{src_width}x{src_height}")
        return Intrinsics(K.fx * sx, K.fy * sy, (K.cx + 0.5 - x0) * sx - 0.5, (K.cy + 0.5 - y0) * sy - 0.5,
                          int(width), int(height))
    M = _matrix(K)
    out = M.copy()
    out[0, 0], out[1, 1], out[0, 1] = M[0, 0] * sx, M[1, 1] * sy, M[0, 1] * sx
    out[0, 2], out[1, 2] = (M[0, 2] + 0.5 - x0) * sx - 0.5, (M[1, 2] + 0.5 - y0) * sy - 0.5
    return out


def fov_deg(K, height: int, width: int) -> tuple[float, float]:
    """Horizontal and vertical field of view in degrees of a ``width`` x ``height`` image with
    intrinsics ``K`` (``Intrinsics`` or 3x3), measured between the image edges (exact also for an
    off-centre principal point; equals ``Intrinsics.fov_x_deg``/``fov_y_deg`` for a centred one)."""
    M = K.matrix if isinstance(K, Intrinsics) else _matrix(K)
    fx, fy, cx, cy = M[0, 0], M[1, 1], M[0, 2], M[1, 2]
    fovx = math.atan((cx + 0.5) / fx) + math.atan((width - 0.5 - cx) / fx)
    fovy = math.atan((cy + 0.5) / fy) + math.atan((height - 0.5 - cy) / fy)
    return math.degrees(fovx), math.degrees(fovy)


def fit_frames(rgb, depth, K, height: int, width: int):
    """Centre-crop RGB-D frames to the aspect ratio of ``width`` x ``height`` and resize them to it.

    ``rgb``: uint8 ``(N, H, W, 3)`` or ``(H, W, 3)`` (or ``None``); ``depth``: metric z-depth
    ``(N, H, W)`` or ``(H, W)`` (or ``None``), where 0, negative and non-finite values are
    "no measurement"; ``K``: the source intrinsics as :class:`~pewm.geometry.Intrinsics` or a
    3x3 matrix (pixel-centre convention). Returns ``(rgb, depth, K)``: uint8 ``(..., height, width,
    3)`` (area average), float32 ``(..., height, width)`` (nearest valid sample, 0 = no
    measurement, always finite) and the new intrinsics, of the type ``K`` was given in (an
    ``Intrinsics`` sized ``width`` x ``height``, or a 3x3 float64 matrix). ``None`` in gives
    ``None`` out. Meant for downscaling; upscaling works (area = nearest with blended seams) but
    adds no detail.
    """
    if rgb is None and depth is None:
        raise ValueError("fit_frames: give rgb, depth or both")
    shapes = []
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
            raise ValueError(f"fit_frames: rgb must be uint8 (N, H, W, 3) or (H, W, 3), got {rgb.dtype} {rgb.shape}")
        shapes.append(rgb.shape[:-1])
    if depth is not None:
        depth = np.asarray(depth)
        if depth.dtype.kind != "f" or depth.ndim not in (2, 3):
            raise ValueError(f"fit_frames: depth must be float (N, H, W) or (H, W), got {depth.dtype} {depth.shape}")
        shapes.append(depth.shape)
    if len(shapes) == 2 and shapes[0] != shapes[1]:
        raise ValueError(f"fit_frames: rgb frames {shapes[0]} and depth frames {shapes[1]} differ in shape")
    H, W = shapes[0][-2:]
    map_y, map_x = fit_maps(H, W, height, width)
    K_out = fit_intrinsics(K, H, W, height, width)
    rgb_out = None if rgb is None else resample_rgb(rgb, map_y, map_x, height, width)
    depth_out = None if depth is None else resample_depth(depth, map_y, map_x, height, width)
    return rgb_out, depth_out, K_out


# ------------------------------------------------------------------------------------ resampling
def _identity(n_in: int, n_out: int, m: AxisMap) -> bool:
    return n_in == n_out and m[0] == 1.0 and m[1] == 0.0


@lru_cache(maxsize=64)
def _area_matrix(n_in: int, n_out: int, a: float, b: float):
    """Sparse ``(n_out, n_in)`` float32 matrix: row ``j`` averages source ``[a*j+b, a*(j+1)+b)``."""
    from scipy.sparse import csr_matrix

    j = np.arange(n_out, dtype=np.float64)
    lo = np.clip(a * j + b, 0.0, n_in)
    hi = np.clip(a * (j + 1) + b, 0.0, n_in)
    start = np.minimum(np.floor(lo), n_in - 1).astype(np.int64)
    taps = int(np.max(np.ceil(hi) - start, initial=1)) + 1
    idx = start[:, None] + np.arange(taps)
    w = np.clip(np.minimum(hi[:, None], idx + 1) - np.maximum(lo[:, None], idx), 0.0, None)
    w[idx >= n_in] = 0.0
    empty = w.sum(1) <= 0  # the interval lies outside the source: repeat the edge pixel
    w[empty] = 0.0
    w[empty, 0] = 1.0
    w /= w.sum(1, keepdims=True)
    idx = np.minimum(idx, n_in - 1)
    keep = w > 0
    rows = np.broadcast_to(np.arange(n_out)[:, None], idx.shape)
    return csr_matrix((w[keep].astype(np.float32), (rows[keep], idx[keep])), shape=(n_out, n_in))


def resample_rgb(rgb: np.ndarray, map_y: AxisMap, map_x: AxisMap, height: int, width: int) -> np.ndarray:
    """Area-average uint8 frames ``(..., H, W, C)`` onto a ``width`` x ``height`` grid (maps: see
    :data:`AxisMap`); sources outside the image repeat its edge."""
    *lead, H, W, C = rgb.shape
    same_y, same_x = _identity(H, height, map_y), _identity(W, width, map_x)
    if same_y and same_x:
        return np.array(rgb, dtype=np.uint8, copy=True)
    Wy = None if same_y else _area_matrix(H, height, float(map_y[0]), float(map_y[1]))
    Wx = None if same_x else _area_matrix(W, width, float(map_x[0]), float(map_x[1]))
    frames = rgb.reshape(-1, H, W, C)
    out = np.empty((frames.shape[0], height, width, C), np.uint8)
    for n, fr in enumerate(frames):
        x = fr.reshape(H, W * C).astype(np.float32)
        if Wy is not None:
            x = Wy @ x  # (height, W*C)
        x = x.reshape(height, W, C)
        if Wx is not None:
            x = (Wx @ x.transpose(1, 0, 2).reshape(W, height * C)).reshape(width, height, C).transpose(1, 0, 2)
        np.clip(np.rint(x), 0, 255, out=x)
        out[n] = x
    return out.reshape(*lead, height, width, C)


@lru_cache(maxsize=64)
def _nearest_taps(n_in: int, n_out: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``(n_out, K)`` in each output pixel's footprint and their distance to the
    output pixel's centre (``inf`` for padding), for nearest-valid sampling."""
    j = np.arange(n_out, dtype=np.float64)
    lo, hi = a * j + b, a * (j + 1) + b
    centre = (lo + hi) / 2.0 - 0.5  # in source pixel-centre coordinates
    start = np.minimum(np.floor(np.clip(lo, 0.0, n_in)), n_in - 1).astype(np.int64)
    end = np.maximum(np.minimum(np.ceil(hi), n_in).astype(np.int64), start + 1)
    taps = int(np.max(end - start))
    idx = start[:, None] + np.arange(taps)
    dist = np.abs(idx - centre[:, None])
    dist[idx >= end[:, None]] = np.inf
    return np.minimum(idx, n_in - 1), dist


def resample_depth(depth: np.ndarray, map_y: AxisMap, map_x: AxisMap, height: int, width: int) -> np.ndarray:
    """Nearest-valid resampling of depth ``(..., H, W)`` onto a ``width`` x ``height`` grid (maps:
    see :data:`AxisMap`). Returns float32 with 0 where the footprint holds no valid depth (valid:
    finite and > 0); ties in distance go to the upper-left sample."""
    *lead, H, W = depth.shape
    d = np.asarray(depth, dtype=np.float32).reshape(-1, H, W)
    if _identity(H, height, map_y) and _identity(W, width, map_x):
        return np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0)).reshape(*lead, height, width)
    iy, dy = _nearest_taps(H, height, float(map_y[0]), float(map_y[1]))
    ix, dx = _nearest_taps(W, width, float(map_x[0]), float(map_x[1]))
    # the sample nearest each output centre (first of equals: upper-left); a full search of the
    # footprint only where that one is invalid
    ny = iy[np.arange(height), np.argmin(dy, axis=1)]
    nx = ix[np.arange(width), np.argmin(dx, axis=1)]
    out = d[:, ny[:, None], nx[None, :]]
    bad = ~(np.isfinite(out) & (out > 0))
    n, p, q = np.nonzero(bad)
    if len(n):
        cand = d[n[:, None, None], iy[p][:, :, None], ix[q][:, None, :]].reshape(len(n), -1)
        cost = (dy[p][:, :, None] ** 2 + dx[q][:, None, :] ** 2).reshape(len(n), -1)
        ok = np.isfinite(cand) & (cand > 0)
        k = np.argmin(np.where(ok, cost, np.inf), axis=1)
        r = np.arange(len(n))
        out[n, p, q] = np.where(ok[r, k], cand[r, k], np.float32(0.0))
    return out.reshape(*lead, height, width)


def _matrix(K) -> np.ndarray:
    M = np.asarray(K, dtype=np.float64)
    if M.shape != (3, 3) or not np.isfinite(M).all() or M[0, 0] <= 0 or M[1, 1] <= 0:
        raise ValueError(f"intrinsics must be a finite 3x3 matrix with positive focal lengths, got {M.tolist()}")
    return M


def _check_size(h: int, w: int, what: str) -> None:
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"{what} size must be positive whole pixels, got {w}x{h}")
