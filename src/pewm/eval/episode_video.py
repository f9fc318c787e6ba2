"""Video of a recorded episode: RGB | depth | top-down map with the path so far."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from pewm.data import open_dataset
from pewm.eval.episode_map import check_episode_index
from pewm.outputs import check_output_file
from pewm.sim.generate import load_house
from pewm.sim.topdown import top_down_image, world_to_topdown_pixel
from pewm.video import colorize_depth, fit_into, hstack_panels, label, resize_nearest, write_video


def _trajectory_canvas(xy: np.ndarray, size: int) -> tuple[np.ndarray, callable]:
    """A blank canvas and a world->pixel map fitting the trajectory (for datasets without a house)."""
    lo, hi = xy.min(0) - 0.5, xy.max(0) + 0.5
    scale = (size - 8) / max(float((hi - lo).max()), 1e-6)
    canvas = np.full((size, size, 3), 235, np.uint8)

    def to_px(x, y):
        return 4 + (np.asarray(x) - lo[0]) * scale, size - 4 - (np.asarray(y) - lo[1]) * scale

    return canvas, to_px


def episode_video_frames(episode, house=None, size: int = 256, px_per_m: float = 24.0) -> Iterator[np.ndarray]:
    """Yield one uint8 frame per episode frame: RGB | depth (turbo) | top-down with path and heading.

    ``house`` (a :class:`pewm.sim.house.House`) gives the floor plan; without it (imported
    recordings) the path is drawn on a blank canvas.
    """
    xy = episode.poses[:, :2, 3]
    fwd = episode.poses[:, :2, 2]
    if house is not None:
        base = top_down_image(house, px_per_m=px_per_m)

        def to_px(x, y):
            return world_to_topdown_pixel(house, x, y, px_per_m)
    else:
        base, to_px = _trajectory_canvas(xy, size)
    cols, rows = to_px(xy[:, 0], xy[:, 1])
    ok = episode.depth[np.isfinite(episode.depth) & (episode.depth > 0)]
    max_depth = float(np.percentile(ok, 99)) if ok.size else 1.0
    for t in range(episode.num_frames):
        im = Image.fromarray(base.copy())
        draw = ImageDraw.Draw(im)
        if t > 0:
            draw.line(list(zip(cols[: t + 1].tolist(), rows[: t + 1].tolist())), fill=(230, 30, 30), width=2)
        c, r = float(cols[t]), float(rows[t])
        f = fwd[t] / max(np.linalg.norm(fwd[t]), 1e-9)
        tip = to_px(xy[t, 0] + 0.45 * f[0], xy[t, 1] + 0.45 * f[1])
        draw.line([(c, r), (float(tip[0]), float(tip[1]))], fill=(255, 255, 255), width=3)
        draw.ellipse([c - 4, r - 4, c + 4, r + 4], fill=(255, 210, 0), outline=(0, 0, 0))
        top = fit_into(np.asarray(im), size, size)
        rgb = resize_nearest(episode.rgb[t], size, size)
        depth = resize_nearest(colorize_depth(episode.depth[t], max_depth), size, size)
        action = ""
        if episode.actions is not None and t < len(episode.actions):
            action = f"  next: {['forward', 'left', 'right'][int(episode.actions[t])]}"
        yield hstack_panels([label(rgb, f"rgb t={t}{action}"), label(depth, f"depth (max {max_depth:.1f} m)"),
                             label(top, f"{episode.house_id or 'trajectory'} ({episode.kind})")])


VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_PANEL = 2048  # pixels: --size beyond this is a typo, not a video


def write_episode_video(dataset_dir, episode: int, out, size: int = 256, fps: int = 8,
                        on_frame: Callable[[int, int], None] | None = None, overwrite: bool = False):
    """Write the video of ``episode`` of the dataset at ``dataset_dir`` to ``out`` (mp4 or gif,
    atomically): RGB | depth | top-down map (the house's floor plan when the dataset has it).
    ``on_frame(done, total)`` after each frame. Returns the episode. Every argument is checked
    before any work; an existing ``out`` is replaced only with ``overwrite``."""
    if not (isinstance(size, int) and 16 <= size <= MAX_PANEL):
        raise ValueError(f"--size must be a panel height of 16..{MAX_PANEL} pixels, got {size}")
    if not (isinstance(fps, int) and 1 <= fps <= 120):
        raise ValueError(f"--fps must be 1..120 frames per second, got {fps}")
    out = check_output_file(out, VIDEO_SUFFIXES, overwrite)
    ds = open_dataset(dataset_dir)
    check_episode_index(ds, episode)
    ep = ds.read(episode)
    house = load_house(dataset_dir, ep.house_id)

    def frames():
        for i, f in enumerate(episode_video_frames(ep, house=house, size=size)):
            if on_frame is not None:
                on_frame(i + 1, ep.num_frames)
            yield f

    write_video(Path(out), frames(), fps=fps)
    return ep

