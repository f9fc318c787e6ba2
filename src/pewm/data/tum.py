"""Import a TUM RGB-D sequence (https://cvg.cit.tum.de/data/datasets/rgbd-dataset) as a dataset.

Expected layout of ``src``::

    rgb.txt            "timestamp filename" lines (e.g. "1305031102.175304 rgb/1305031102.175304.png")
    depth.txt          same for depth images
    groundtruth.txt    "timestamp tx ty tz qx qy qz qw" lines (camera-to-world, optical frame)
    rgb/*.png          8-bit RGB
    depth/*.png        16-bit, metres = value / depth_scale (5000 for TUM), 0 = no measurement

Lines starting with ``#`` and blank lines are ignored. Each rgb frame gets the depth image and the
pose with the nearest timestamp; a frame without both within ``max_time_diff`` seconds is dropped
(and counted). TUM poses are already camera-to-world in the OpenCV optical frame, so they are kept
as they are, but the TUM world frame is *not* z-up: the episode records ``meta["world_up"] =
"unknown"``. TUM recordings have no discrete actions: the episode has ``actions = None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pewm.data.dataset import Dataset, DatasetSpec
from pewm.data.episode import Episode
from pewm.data.importing import (
    DEPTH_PNG_MODES,
    IMPORT_COMPRESSLEVEL,
    Fit,
    ImportFormatError,
    check_options,
    existing_dataset_files,
    prefetch,
    progress_steps,
    write_import,
)
from pewm.geometry import Intrinsics, make_pose, quaternion_to_matrix

TUM_FR1_INTRINSICS = {"fx": 525.0, "fy": 525.0, "cx": 319.5, "cy": 239.5}
"""The default ROS intrinsics TUM recommends for uncalibrated use (640x480)."""


_DEPTH_MODES = DEPTH_PNG_MODES


class TumFormatError(ImportFormatError):
    """A TUM sequence is missing a file or has a malformed line/image. Names the file (and line)."""


@dataclass
class TumImportReport:
    """What :func:`import_tum` did."""

    dataset: Dataset
    episode_path: Path
    num_frames: int
    num_rgb: int
    """rgb frames listed in ``rgb.txt``."""
    dropped_no_depth: int
    """rgb frames without a depth image within ``max_time_diff``."""
    dropped_no_pose: int
    """rgb frames (with depth) without a ground-truth pose within ``max_time_diff``."""
    skipped: int
    """matched frames left out by ``stride`` / ``max_frames``."""
    duration_s: float

    def __str__(self) -> str:
        return (
            f"imported {self.num_frames} frames ({self.duration_s:.1f} s) of {self.num_rgb} listed rgb frames into "
            f"{self.episode_path}; dropped {self.dropped_no_depth} without depth and {self.dropped_no_pose} without "
            f"a pose within max_time_diff, skipped {self.skipped} (stride/max_frames)"
        )


def _read_list(path: Path, ncols: int) -> list[tuple[int, float, list[str]]]:
    """Parse a TUM list file into ``(line number, timestamp, other columns)``."""
    if not path.is_file():
        raise TumFormatError("file not found", path)
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = s.split()
            if len(parts) != ncols:
                raise TumFormatError(f"expected {ncols} columns, got {len(parts)}: {s!r}", path, n)
            try:
                ts = float(parts[0])
            except ValueError:
                raise TumFormatError(f"bad timestamp {parts[0]!r}", path, n) from None
            if not np.isfinite(ts):
                raise TumFormatError(f"bad timestamp {parts[0]!r}", path, n)
            out.append((n, ts, parts[1:]))
    if not out:
        raise TumFormatError("no entries", path)
    return out


def _nearest(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest ``ref`` (sorted) timestamp for each query, and the absolute difference."""
    j = np.clip(np.searchsorted(ref, query), 1, len(ref) - 1) if len(ref) > 1 else np.zeros(len(query), int)
    if len(ref) > 1:
        left = np.abs(query - ref[j - 1]) <= np.abs(ref[j] - query)
        j = np.where(left, j - 1, j)
    return j, np.abs(ref[j] - query)


def import_tum(
    src: str | Path,
    out: str | Path,
    fx: float = 525.0,
    fy: float = 525.0,
    cx: float = 319.5,
    cy: float = 239.5,
    depth_scale: float = 5000.0,
    max_frames: int | None = None,
    max_time_diff: float = 0.02,
    stride: int = 1,
    *,
    split: str = "test",
    name: str | None = None,
    compresslevel: int = IMPORT_COMPRESSLEVEL,
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    resolution: int | None = None,
) -> TumImportReport:
    """Import the TUM RGB-D sequence in ``src`` as a one-episode dataset in ``out``.

    Intrinsics default to TUM's default ROS values (fx = fy = 525, cx = 319.5, cy = 239.5); pass
    the calibrated ones for freiburg1/2/3 if you have them. ``stride`` keeps every n-th matched
    frame, then ``max_frames`` the first n. The episode has ``kind="tum"``, ``actions=None``,
    ``split`` (default "test"), ``episode_id = house_id = name`` (default: the directory name),
    and ``meta`` with the rgb/depth/pose timestamps, ``world_up="unknown"`` and the drop counts.
    Images are streamed, so memory stays bounded for long sequences.

    The dataset's ``manifest.json`` is written before the episode and records it when it is
    complete. ``resolution`` (pixels) centre-crops and resizes the frames to a square of that size
    with :func:`pewm.data.fit.fit_frames` (intrinsics updated). ``out`` must be new or empty; an
    existing dataset there is replaced with ``overwrite`` (after the source was checked; only a
    directory holding nothing but dataset files is removed).

    Raises :class:`TumFormatError` naming the file (and line) for missing files, malformed lines
    and images of the wrong size or mode; :class:`pewm.data.DatasetError` if ``out`` already holds a
    dataset (without ``overwrite``) or other files.
    """
    from PIL import Image

    src = Path(src)
    if not src.is_dir():
        raise TumFormatError("not a directory", src)
    check_options(split, stride, max_frames, resolution, depth_scale, compresslevel)
    name = name or src.resolve().name
    out = Path(out)
    old_files = existing_dataset_files(out, overwrite)

    rgb_list = _read_list(src / "rgb.txt", 2)
    depth_list = sorted(_read_list(src / "depth.txt", 2), key=lambda r: r[1])
    gt_path = src / "groundtruth.txt"
    gt_list = sorted(_read_list(gt_path, 8), key=lambda r: r[1])
    gt = np.empty((len(gt_list), 7))
    for k, (n, _, cols) in enumerate(gt_list):
        try:
            gt[k] = [float(c) for c in cols]
        except ValueError:
            raise TumFormatError(f"bad number in {' '.join(cols)!r}", gt_path, n) from None
        if not np.isfinite(gt[k]).all():
            raise TumFormatError("non-finite value", gt_path, n)
        qn = np.linalg.norm(gt[k, 3:])
        if abs(qn - 1.0) > 1e-2:
            raise TumFormatError(f"quaternion (qx qy qz qw) has norm {qn:.4f}, expected 1", gt_path, n)

    rgb_list = sorted(rgb_list, key=lambda r: r[1])
    rgb_ts = np.array([r[1] for r in rgb_list])
    d_ts = np.array([r[1] for r in depth_list])
    g_ts = np.array([r[1] for r in gt_list])
    dj, ddiff = _nearest(rgb_ts, d_ts)
    gj, gdiff = _nearest(rgb_ts, g_ts)
    has_depth = ddiff <= max_time_diff
    has_pose = gdiff <= max_time_diff
    keep = np.flatnonzero(has_depth & has_pose)
    n_matched = len(keep)
    keep = keep[::stride]
    if max_frames is not None:
        keep = keep[:max_frames]
    if len(keep) == 0:
        raise TumFormatError(
            f"no rgb frame has both a depth image and a pose within max_time_diff={max_time_diff} s "
            f"({int(has_depth.sum())} have depth, {int(has_pose.sum())} have a pose)",
            src,
        )

    q = gt[gj[keep]]
    poses = make_pose(quaternion_to_matrix(q[:, 3:]), q[:, :3])
    rgb_files = [(src / "rgb.txt", rgb_list[i][0], src / rgb_list[i][2][0]) for i in keep]
    depth_files = [(src / "depth.txt", depth_list[dj[i]][0], src / depth_list[dj[i]][2][0]) for i in keep]

    def open_image(listed_in: Path, line: int, p: Path):
        if not p.is_file():
            raise TumFormatError(f"image {p} listed here does not exist", listed_in, line)
        try:
            img = Image.open(p)
            img.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
            raise TumFormatError(f"cannot read image: {e}", p) from None
        return img

    first = open_image(*rgb_files[0])
    W, H = first.size

    def check_header(listed_in: Path, line: int, p: Path, modes: tuple[str, ...], what: str) -> None:
        if not p.is_file():
            raise TumFormatError(f"image {p} listed here does not exist", listed_in, line)
        try:
            with Image.open(p) as img:  # reads the header only
                mode, size = img.mode, img.size
        except Exception as e:  # noqa: BLE001
            raise TumFormatError(f"cannot read image: {e}", p) from None
        if mode not in modes:
            raise TumFormatError(f"{what} image has mode {mode!r}, expected {' or '.join(map(repr, modes))}", p)
        if size != (W, H):
            raise TumFormatError(f"image is {size[0]}x{size[1]}, expected {W}x{H} like the first rgb frame", p)

    # Cheap pre-pass (headers only) so that most errors come before anything is written.
    for f in rgb_files:
        check_header(*f, ("RGB",), "rgb")
    for f in depth_files:
        check_header(*f, _DEPTH_MODES, "depth (16-bit PNG)")
    fit = Fit.to(Intrinsics(float(fx), float(fy), float(cx), float(cy), W, H), resolution)
    K = fit.K

    step, done = progress_steps(2 * len(keep), on_progress)

    def load_rgb(f: tuple[Path, int, Path]) -> np.ndarray:
        listed_in, line, p = f
        img = open_image(listed_in, line, p)
        if img.mode != "RGB":
            raise TumFormatError(f"rgb image has mode {img.mode!r}, expected 'RGB' (8-bit colour)", p)
        if img.size != (W, H):
            raise TumFormatError(f"image is {img.size[0]}x{img.size[1]}, expected {W}x{H} like the first frame", p)
        return fit.rgb(np.asarray(img, dtype=np.uint8))

    def load_depth(f: tuple[Path, int, Path]) -> np.ndarray:
        listed_in, line, p = f
        img = open_image(listed_in, line, p)
        if img.mode not in _DEPTH_MODES:
            raise TumFormatError(f"depth image has mode {img.mode!r}, expected a 16-bit PNG ('I;16' or 'I')", p)
        if img.size != (W, H):
            raise TumFormatError(f"image is {img.size[0]}x{img.size[1]}, expected {W}x{H} like the rgb frames", p)
        raw = np.asarray(img)
        if raw.dtype.kind not in "ui" or (raw.size and (raw.min() < 0 or raw.max() > 65535)):
            raise TumFormatError(f"depth values out of the 16-bit range (dtype {raw.dtype})", p)
        return fit.depth((raw.astype(np.float64) / depth_scale).astype(np.float32))

    def rgb_frames() -> Iterator[np.ndarray]:
        for f, frame in zip(rgb_files, prefetch(load_rgb, rgb_files)):
            yield frame
            step(f[2])

    def depth_frames() -> Iterator[np.ndarray]:
        for f, frame in zip(depth_files, prefetch(load_depth, depth_files)):
            yield frame
            step(f[2])

    meta = {
        "source": "tum_rgbd",
        "sequence": name,
        "world_up": "unknown",
        "depth_scale": depth_scale,
        "max_time_diff": max_time_diff,
        "stride": stride,
        "resolution": resolution,
        "timestamps": [float(t) for t in rgb_ts[keep]],
        "depth_timestamps": [float(t) for t in d_ts[dj[keep]]],
        "pose_timestamps": [float(t) for t in g_ts[gj[keep]]],
        "dropped_no_depth": int((~has_depth).sum()),
        "dropped_no_pose": int((has_depth & ~has_pose).sum()),
    }
    header = Episode(
        rgb=np.zeros((1, K.height, K.width, 3), np.uint8), depth=np.zeros((1, K.height, K.width), np.float32),
        poses=poses, actions=None,
        intrinsics=K, collided=None, episode_id=name, house_id=name, split=split, kind="tum", meta=meta,
    )  # fmt: skip
    spec = DatasetSpec(
        name=name,
        intrinsics=K,
        action_config=None,
        description=f"TUM RGB-D sequence {name} (imported; no discrete actions, world up axis unknown)",
        generator={
            "source": "tum_rgbd", "src": str(src.resolve()), "fx": fx, "fy": fy, "cx": cx, "cy": cy,
            "depth_scale": depth_scale, "max_frames": max_frames, "max_time_diff": max_time_diff,
            "stride": stride, "split": split, "resolution": resolution,
        },
    )  # fmt: skip
    ds, path = write_import(out, old_files, spec, header, rgb_frames, depth_frames, compresslevel=compresslevel,
                            done=done)
    return TumImportReport(
        dataset=ds, episode_path=path, num_frames=len(keep), num_rgb=len(rgb_list),
        dropped_no_depth=meta["dropped_no_depth"], dropped_no_pose=meta["dropped_no_pose"],
        skipped=n_matched - len(keep), duration_s=float(rgb_ts[keep[-1]] - rgb_ts[keep[0]]),
    )  # fmt: skip
