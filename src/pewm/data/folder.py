"""Import a recording in pewm's generic folder layout (specified in ``docs/data-format.md``).

Layout of ``src``::

    rgb/<name>.png|.jpg      8-bit RGB, one per frame; frames are ordered by name (numbers in
                             names compare as numbers: 2 before 10)
    depth/<name>.png|.npy    the depth of the rgb image with the same <name>, registered to it
                             (same size, pixel-aligned): 16-bit PNG or a 2-D float/integer .npy;
                             metres = value / depth_scale; 0, negative, inf, NaN = no measurement
    poses.txt                one pose per frame, in frame order: 16 numbers (a row-major 4x4)
                             or 12 (its top 3 rows) per line
    intrinsics.txt           one line "fx fy cx cy" or "fx fy cx cy width height" (pixels, pixel
                             centres at integer coordinates, v down)

In ``poses.txt`` and ``intrinsics.txt``, ``#`` starts a comment and blank lines are skipped.
``pose_convention`` says whether the poses are camera-to-world (``c2w``) or world-to-camera
(``w2c``), ``axes`` whether the camera axes are OpenCV (x right, y down, z forward) or OpenGL /
Blender / Habitat (x right, y up, z backward); the importer converts to pewm's camera-to-world
OpenCV poses. A pose with inf/NaN entries (lost tracking) skips its frame (counted in the report).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pewm.data.dataset import DatasetSpec
from pewm.data.episode import Episode
from pewm.data.importing import (
    Fit,
    IMPORT_COMPRESSLEVEL,
    ImportFormatError,
    ImportReport,
    check_options,
    number_lines,
    depth_header,
    existing_dataset_files,
    image_header,
    prefetch,
    progress_steps,
    read_depth,
    select,
    write_import,
)
from pewm.geometry import Intrinsics, check_pose, invert_pose

POSE_CONVENTIONS = ("c2w", "w2c")
AXES = ("opencv", "opengl")
OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplying a camera-to-world pose by this flips its camera axes between OpenCV (x right,
y down, z forward) and OpenGL (x right, y up, z backward); it is its own inverse."""


class FolderFormatError(ImportFormatError):
    """A folder recording is missing a file or has a malformed file/line/image. Names the file (and line)."""


def from_convention(T: np.ndarray, pose_convention: str = "c2w", axes: str = "opencv") -> np.ndarray:
    """Poses ``(..., 4, 4)`` given as ``pose_convention`` (``c2w``: camera-to-world, ``w2c``:
    world-to-camera) with ``axes`` (``opencv``/``opengl`` camera axes) as pewm poses
    (camera-to-world, OpenCV); :func:`to_convention` is the inverse."""
    T = np.asarray(T, dtype=np.float64)
    if pose_convention == "w2c":
        T = invert_pose(T)
    return T @ OPENGL_FROM_OPENCV if axes == "opengl" else T


def to_convention(T_wc: np.ndarray, pose_convention: str = "c2w", axes: str = "opencv") -> np.ndarray:
    """pewm poses (camera-to-world, OpenCV) as ``pose_convention`` with ``axes`` (see :func:`from_convention`)."""
    T = np.asarray(T_wc, dtype=np.float64)
    if axes == "opengl":
        T = T @ OPENGL_FROM_OPENCV
    return invert_pose(T) if pose_convention == "w2c" else T


def _natural_key(name: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def _numbers(path: Path) -> list[tuple[int, list[float]]]:
    return number_lines(path, FolderFormatError)


def read_poses(path: Path) -> np.ndarray:
    """``poses.txt`` as ``(T, 4, 4)`` as written (no convention applied; inf/NaN kept)."""
    rows = _numbers(path)
    if not rows:
        raise FolderFormatError("no poses", path)
    poses = np.empty((len(rows), 4, 4))
    for k, (n, v) in enumerate(rows):
        if len(v) not in (12, 16):
            raise FolderFormatError(f"expected 16 numbers (a row-major 4x4 pose) or 12 (3x4), got {len(v)}", path, n)
        poses[k] = np.vstack([np.reshape(v, (-1, 4)), [[0.0, 0.0, 0.0, 1.0]]])[:4]
        if np.isfinite(v).all():
            try:
                check_pose(poses[k], "pose")
            except ValueError as e:
                raise FolderFormatError(str(e), path, n) from None
    return poses


def read_intrinsics(path: Path, size: tuple[int, int]) -> Intrinsics:
    """``intrinsics.txt`` for images of ``size`` = ``(width, height)`` (checked if the file has one)."""
    rows = _numbers(path)
    if len(rows) != 1 or len(rows[0][1]) not in (4, 6):
        raise FolderFormatError("expected one line 'fx fy cx cy' or 'fx fy cx cy width height'", path,
                                rows[1][0] if len(rows) > 1 else (rows[0][0] if rows else None))
    n, v = rows[0]
    if not np.isfinite(v).all() or v[0] <= 0 or v[1] <= 0:
        raise FolderFormatError("focal lengths must be positive and every value finite", path, n)
    if len(v) == 6 and (v[4], v[5]) != size:
        raise FolderFormatError(f"says the images are {v[4]:g}x{v[5]:g}, but they are {size[0]}x{size[1]}", path, n)
    return Intrinsics(v[0], v[1], v[2], v[3], size[0], size[1])


def _frame_files(src: Path) -> list[tuple[Path, Path]]:
    rdir, ddir = src / "rgb", src / "depth"
    for d in (rdir, ddir):
        if not d.is_dir():
            raise FolderFormatError("directory not found (a folder recording has rgb/ and depth/)", d)
    rgb = [p for p in rdir.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not rgb:
        raise FolderFormatError("no images (expected rgb/<name>.png or .jpg)", rdir)
    stems: dict[str, Path] = {}
    for p in rgb:
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise FolderFormatError("unexpected file: rgb images are .png or .jpg", p)
        if p.stem in stems:
            raise FolderFormatError(f"two rgb images named {p.stem} ({stems[p.stem].name} and {p.name})", p)
        stems[p.stem] = p
    depth: dict[str, Path] = {}
    for p in ddir.iterdir():
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() not in (".png", ".npy"):
            raise FolderFormatError("unexpected file: depth maps are 16-bit .png or .npy", p)
        if p.stem in depth:
            raise FolderFormatError(f"two depth maps named {p.stem} ({depth[p.stem].name} and {p.name})", p)
        if p.stem not in stems:
            raise FolderFormatError(f"depth map without an rgb image rgb/{p.stem}.png|jpg", p)
        depth[p.stem] = p
    names = sorted(stems, key=_natural_key)
    for s in names:
        if s not in depth:
            raise FolderFormatError(f"rgb image without a depth map (expected depth/{s}.png or .npy)", stems[s])
    return [(stems[s], depth[s]) for s in names]


def import_folder(
    src: str | Path,
    out: str | Path,
    *,
    pose_convention: str = "c2w",
    axes: str = "opencv",
    depth_scale: float | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    resolution: int | None = None,
    split: str = "test",
    name: str | None = None,
    compresslevel: int = IMPORT_COMPRESSLEVEL,
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Import the folder recording in ``src`` (layout in the module docstring) as a one-episode
    dataset in ``out``.

    ``depth_scale`` is the depth value per metre: default 1000 (millimetres) for 16-bit PNGs and 1
    (metres) for ``.npy`` maps. Frames with an inf/NaN pose are skipped and counted; then every
    ``stride``-th frame is kept, then the first ``max_frames``; ``resolution`` fits the frames to
    a square (:func:`pewm.data.fit.fit_frames`). The episode has ``kind="folder"``,
    ``actions=None`` and ``meta["world_up"] = "unknown"``. Writes the manifest like
    :func:`pewm.data.import_tum`; ``out`` and ``overwrite`` behave the same.

    Raises :class:`FolderFormatError` naming the file (and line) for missing or malformed files and
    images of the wrong size or mode; :class:`pewm.data.DatasetError` for an occupied ``out``.
    """
    src = Path(src)
    if not src.is_dir():
        raise FolderFormatError("not a directory", src)
    if pose_convention not in POSE_CONVENTIONS:
        raise ValueError(f"--pose-convention must be c2w or w2c, got {pose_convention!r}")
    if axes not in AXES:
        raise ValueError(f"--axes must be opencv or opengl, got {axes!r}")
    check_options(split, stride, max_frames, resolution, depth_scale, compresslevel)
    name = name or src.resolve().name
    out = Path(out)
    old_files = existing_dataset_files(out, overwrite)

    files = _frame_files(src)
    raw_poses = read_poses(src / "poses.txt")
    if len(raw_poses) != len(files):
        raise FolderFormatError(f"has {len(raw_poses)} poses for {len(files)} frames (rgb/ images); "
                                "expected one pose per line per frame", src / "poses.txt")
    finite = np.isfinite(raw_poses).all(axis=(1, 2))
    keep = select(np.flatnonzero(finite), stride, max_frames)
    if len(keep) == 0:
        raise FolderFormatError(f"no frame has a valid pose (all {len(files)} have inf/NaN entries)",
                                src / "poses.txt")
    files = [files[k] for k in keep]
    # headers only, before anything is written: sizes and modes of every kept frame
    mode, size = image_header(files[0][0], FolderFormatError)
    for rp, dp in files:
        m, s = image_header(rp, FolderFormatError)
        if m != "RGB" or s != size:
            raise FolderFormatError(f"rgb image is {m} {s[0]}x{s[1]}, expected RGB {size[0]}x{size[1]} "
                                    "like the first frame", rp)
        ds_ = depth_header(dp, FolderFormatError)
        if ds_ != size:
            raise FolderFormatError(f"depth map is {ds_[0]}x{ds_[1]}, expected {size[0]}x{size[1]} like its rgb "
                                    "image (depth must be registered to the rgb images)", dp)
    fit = Fit.to(read_intrinsics(src / "intrinsics.txt", size), resolution)
    K = fit.K
    poses = from_convention(raw_poses[keep], pose_convention, axes)

    def scale_of(p: Path) -> float:
        return depth_scale if depth_scale is not None else (1.0 if p.suffix.lower() == ".npy" else 1000.0)

    step, done = progress_steps(2 * len(keep), on_progress)

    def rgb_frames() -> Iterator[np.ndarray]:
        load = lambda f: fit.read_rgb(f[0], size, error=FolderFormatError)  # noqa: E731
        for f, frame in zip(files, prefetch(load, files)):
            yield frame
            step(f[0])

    def depth_frames() -> Iterator[np.ndarray]:
        load = lambda f: fit.depth(read_depth(f[1], size, scale_of(f[1]), FolderFormatError))  # noqa: E731
        for f, frame in zip(files, prefetch(load, files)):
            yield frame
            step(f[1])

    meta = {
        "source": "folder", "sequence": name, "world_up": "unknown", "pose_convention": pose_convention,
        "axes": axes, "depth_scale": depth_scale, "stride": stride, "resolution": resolution,
        "frames": [f[0].stem for f in files], "invalid_poses": int((~finite).sum()),
    }  # fmt: skip
    header = Episode(
        rgb=np.zeros((1, K.height, K.width, 3), np.uint8), depth=np.zeros((1, K.height, K.width), np.float32),
        poses=poses, actions=None, intrinsics=K, collided=None, episode_id=name, house_id=name, split=split,
        kind="folder", meta=meta,
    )  # fmt: skip
    spec = DatasetSpec(
        name=name, intrinsics=K, action_config=None,
        description=f"recording {name} (imported from a folder; no discrete actions, world up axis unknown)",
        generator={"source": "folder", "src": str(src.resolve()), "pose_convention": pose_convention, "axes": axes,
                   "depth_scale": depth_scale, "max_frames": max_frames, "stride": stride, "split": split,
                   "resolution": resolution},
    )  # fmt: skip
    ds, path = write_import(out, old_files, spec, header, rgb_frames, depth_frames, compresslevel=compresslevel,
                            done=done)
    return ImportReport(dataset=ds, episode_path=path, layout="folder", num_frames=len(keep),
                        num_source=len(raw_poses), invalid_poses=int((~finite).sum()),
                        skipped=int(finite.sum()) - len(keep))
