"""Small building blocks for videos: depth colouring, panels, labels, atomic mp4 writing."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from pewm.atomic import atomic_path


def colorize_depth(depth: np.ndarray, max_depth: float | None = None, cmap: str = "turbo") -> np.ndarray:
    """uint8 RGB image of a depth map (near = blue/dark end of ``cmap``); invalid depth is black."""
    import matplotlib

    d = np.asarray(depth, dtype=np.float32)
    ok = np.isfinite(d) & (d > 0)
    hi = float(max_depth) if max_depth else (float(np.percentile(d[ok], 99)) if ok.any() else 1.0)
    x = np.clip(np.where(ok, d, 0.0) / max(hi, 1e-6), 0.0, 1.0)
    rgb = (matplotlib.colormaps[cmap](x)[..., :3] * 255).astype(np.uint8)
    rgb[~ok] = 0
    return rgb


def resize_nearest(img: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Nearest-neighbour resize (keeps pixels crisp when upscaling 64x64 frames)."""
    width = width if width is not None else int(round(img.shape[1] * height / img.shape[0]))
    return np.asarray(Image.fromarray(img).resize((width, height), Image.NEAREST))


def fit_into(img: np.ndarray, height: int, width: int, background: int = 255) -> np.ndarray:
    """Scale ``img`` (keeping aspect, bilinear) and centre it on a ``height`` x ``width`` canvas."""
    s = min(height / img.shape[0], width / img.shape[1])
    h, w = max(1, int(img.shape[0] * s)), max(1, int(img.shape[1] * s))
    small = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    canvas = np.full((height, width, 3), background, np.uint8)
    y0, x0 = (height - h) // 2, (width - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = small[..., :3]
    return canvas


def label(img: np.ndarray, text: str, color=(255, 255, 255)) -> np.ndarray:
    """Write ``text`` in the top-left corner on a dark strip."""
    im = Image.fromarray(np.ascontiguousarray(img))
    draw = ImageDraw.Draw(im)
    w = int(draw.textlength(text)) + 6
    draw.rectangle([0, 0, w, 13], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=color)
    return np.asarray(im)


def hstack_panels(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Concatenate same-height panels left to right with white gaps."""
    h = panels[0].shape[0]
    if any(p.shape[0] != h for p in panels):
        raise ValueError(f"panels must share a height, got {[p.shape for p in panels]}")
    sep = np.full((h, gap, 3), 255, np.uint8)
    out = []
    for i, p in enumerate(panels):
        out.append(p[..., :3])
        if i < len(panels) - 1:
            out.append(sep)
    return np.concatenate(out, axis=1)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 10) -> Path:
    """Write an H.264 mp4 (or gif, by extension) atomically (:func:`pewm.atomic.atomic_path`)."""
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):  # before any temporary file is created
        raise ValueError(f"{path}: unsupported video file type {path.suffix or '(no extension)'!r}; use .mp4 or .gif")
    with atomic_path(path, keep_suffix=True) as tmp:
        if path.suffix.lower() == ".gif":
            imageio.mimsave(tmp, [_even(f) for f in frames], duration=1000 / fps, loop=0)
        else:
            with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                    pixelformat="yuv420p") as w:
                for f in frames:
                    w.append_data(_even(f))
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: pad by one white pixel where needed."""
    f = np.asarray(frame, dtype=np.uint8)[..., :3]
    h, w = f.shape[:2]
    if h % 2 or w % 2:
        f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)
    return f
