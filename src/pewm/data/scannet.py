"""Import a ScanNet scene export (the ``SensReader`` output of https://github.com/ScanNet/ScanNet).

Expected layout of ``src``::

    color/<i>.jpg                     8-bit RGB (JPEG; PNG also read), e.g. 1296x968
    depth/<i>.png                     16-bit, millimetres, 0 = no measurement, e.g. 640x480
    pose/<i>.txt                      camera-to-world 4x4 (OpenCV camera axes); inf/NaN = lost tracking
    intrinsic/intrinsic_color.txt     4x4 (or 3x3) intrinsics of the colour images
    intrinsic/intrinsic_depth.txt     4x4 (or 3x3) intrinsics of the depth images
    intrinsic/extrinsic_*.txt         optional; must be the identity

``<i>`` is the frame number (``0, 1, 2, ...``); frames are taken in numeric order.

**Registration.** Colour and depth may differ in size and intrinsics; ScanNet's cameras share the
optical centre and orientation (its extrinsics are the identity), so a colour pixel and a depth
pixel see the same point when their rays agree, whatever the depth. The importer keeps the
**depth camera**: depth is used as measured (no resampling of the geometry), and each output
pixel's colour is the area average of the colour-image region its footprint covers (via the
intrinsics: ``u_c = fx_c / fx_d * (u_d - cx_d) + cx_c``). The colour camera is the larger one,
so nothing the depth camera sees is lost, and the output is the smaller, cheaper size. With
``resolution`` the same crop-and-resize as :func:`pewm.data.fit.fit_frames` is composed into the
colour resampling (colour is resampled once) and applied to depth (nearest valid sample).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pewm.data.dataset import DatasetSpec
from pewm.data.episode import Episode
from pewm.data.importing import (
    IDENTITY,
    IMPORT_COMPRESSLEVEL,
    AxisMap,
    Fit,
    ImportFormatError,
    ImportReport,
    check_options,
    number_lines,
    compose,
    depth_header,
    existing_dataset_files,
    image_header,
    prefetch,
    progress_steps,
    read_depth,
    select,
    write_import,
)
from pewm.geometry import Intrinsics, check_pose


class ScanNetFormatError(ImportFormatError):
    """A ScanNet export is missing a file or has a malformed file. Names the file (and line)."""


def read_matrix(path: Path, shapes: tuple[tuple[int, int], ...] = ((4, 4),), error=ScanNetFormatError) -> np.ndarray:
    """A whitespace-separated matrix text file (``#`` comments and blank lines skipped)."""
    rows = []
    for n, row in number_lines(path, error):
        rows.append(row)
        if len(row) != len(rows[0]):
            raise error(f"expected {len(rows[0])} numbers like the first row, got {len(row)}", path, n)
    M = np.array(rows, dtype=np.float64)
    if M.shape not in shapes:
        want = " or ".join(f"{a}x{b}" for a, b in shapes)
        raise error(f"expected a {want} matrix, got {'x'.join(map(str, M.shape)) if rows else 'no numbers'}", path)
    return M


def _intrinsics(path: Path, size: tuple[int, int]) -> Intrinsics:
    M = read_matrix(path, ((4, 4), (3, 3)))
    if not np.isfinite(M).all() or M[0, 0] <= 0 or M[1, 1] <= 0:
        raise ScanNetFormatError("intrinsics need finite values and positive focal lengths", path)
    return Intrinsics(float(M[0, 0]), float(M[1, 1]), float(M[0, 2]), float(M[1, 2]), size[0], size[1])


def _frame_files(src: Path) -> list[tuple[int, Path]]:
    cdir = src / "color"
    if not cdir.is_dir():
        raise ScanNetFormatError("colour directory not found (expected color/<frame>.jpg)", cdir)
    frames = []
    for p in cdir.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png") or not p.stem.isdigit():
            raise ScanNetFormatError("unexpected file: colour images are named <frame number>.jpg", p)
        frames.append((int(p.stem), p))
    if not frames:
        raise ScanNetFormatError("no colour images (expected color/<frame>.jpg)", cdir)
    frames.sort()
    for (a, pa), (b, pb) in zip(frames, frames[1:]):
        if a == b:
            raise ScanNetFormatError(f"frame {a} has two colour images ({pa.name} and {pb.name})", pb)
    return frames


def registration_maps(K_color: Intrinsics, K_depth: Intrinsics) -> tuple[AxisMap, AxisMap]:
    """Maps (depth-image edge coordinate -> colour-image edge coordinate, per axis) of two cameras
    that share the optical centre and orientation."""
    maps = []
    for fc, cc, fd, cd in ((K_color.fy, K_color.cy, K_depth.fy, K_depth.cy),
                           (K_color.fx, K_color.cx, K_depth.fx, K_depth.cx)):
        a = fc / fd
        b = (cc + 0.5) - a * (cd + 0.5)
        maps.append(IDENTITY if abs(a - 1.0) < 1e-12 and abs(b) < 1e-9 else (a, b))
    return maps[0], maps[1]


def import_scannet(
    src: str | Path,
    out: str | Path,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    resolution: int | None = None,
    depth_scale: float = 1000.0,
    split: str = "test",
    name: str | None = None,
    compresslevel: int = IMPORT_COMPRESSLEVEL,
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Import the ScanNet scene export in ``src`` as a one-episode dataset in ``out``.

    Frames whose pose has inf/NaN entries (ScanNet's "tracking lost") are skipped and counted;
    then every ``stride``-th frame is kept, then the first ``max_frames``. Depth is ``value /
    depth_scale`` metres (ScanNet: 1000). The episode is in the depth camera (see the module
    docstring), or fitted to ``resolution`` x ``resolution``; ``kind="scannet"``, ``actions=None``,
    ``meta["world_up"] = "unknown"`` (ScanNet's raw world frame is not z-up), ``meta["frames"]`` the
    source frame numbers. Writes the manifest like :func:`pewm.data.import_tum`; ``out`` and
    ``overwrite`` behave the same.

    Raises :class:`ScanNetFormatError` naming the file (and line) for missing or malformed files
    and images of the wrong size or mode; :class:`pewm.data.DatasetError` for an occupied ``out``.
    """
    src = Path(src)
    if not src.is_dir():
        raise ScanNetFormatError("not a directory", src)
    check_options(split, stride, max_frames, resolution, depth_scale, compresslevel)
    name = name or src.resolve().name
    out = Path(out)
    old_files = existing_dataset_files(out, overwrite)

    frames = _frame_files(src)
    poses = np.empty((len(frames), 4, 4))
    for k, (i, _) in enumerate(frames):
        poses[k] = read_matrix(src / "pose" / f"{i}.txt")
    finite = np.isfinite(poses).all(axis=(1, 2))
    keep = select(np.flatnonzero(finite), stride, max_frames)
    if len(keep) == 0:
        raise ScanNetFormatError(f"no frame has a valid pose (all {len(frames)} have inf/NaN entries)", src / "pose")
    for k in keep:
        try:
            check_pose(poses[k], "camera-to-world pose")
        except ValueError as e:
            raise ScanNetFormatError(str(e), src / "pose" / f"{frames[k][0]}.txt") from None
    for p in (src / "intrinsic" / "extrinsic_color.txt", src / "intrinsic" / "extrinsic_depth.txt"):
        if p.is_file() and not np.allclose(read_matrix(p), np.eye(4), atol=1e-6):
            raise ScanNetFormatError("only identity extrinsics (colour and depth sharing the camera pose) are "
                                     "supported", p)

    color_files = [frames[k][1] for k in keep]
    depth_files = [src / "depth" / f"{frames[k][0]}.png" for k in keep]
    # headers only, before anything is written: sizes and modes of every kept frame
    c_mode, c_size = image_header(color_files[0], ScanNetFormatError)
    d_size = depth_header(depth_files[0], ScanNetFormatError)
    for p in color_files:
        mode, size = image_header(p, ScanNetFormatError)
        if mode != "RGB" or size != c_size:
            raise ScanNetFormatError(f"colour image is {mode} {size[0]}x{size[1]}, expected RGB "
                                     f"{c_size[0]}x{c_size[1]} like the first frame", p)
    for p in depth_files:
        if p.suffix != ".png" or depth_header(p, ScanNetFormatError) != d_size:
            raise ScanNetFormatError(f"depth image size differs from the first frame's {d_size[0]}x{d_size[1]}", p)
    K_color = _intrinsics(src / "intrinsic" / "intrinsic_color.txt", c_size)
    K_depth = _intrinsics(src / "intrinsic" / "intrinsic_depth.txt", d_size)
    fit = Fit.to(K_depth, resolution)
    reg_y, reg_x = registration_maps(K_color, K_depth)
    color_y, color_x = compose(reg_y, fit.map_y), compose(reg_x, fit.map_x)
    K = fit.K

    step, done = progress_steps(2 * len(keep), on_progress)

    def rgb_frames() -> Iterator[np.ndarray]:
        load = lambda p: fit.read_rgb(p, c_size, color_y, color_x, ScanNetFormatError)  # noqa: E731
        for p, frame in zip(color_files, prefetch(load, color_files)):
            yield frame
            step(p)

    def depth_frames() -> Iterator[np.ndarray]:
        load = lambda p: fit.depth(read_depth(p, d_size, depth_scale, ScanNetFormatError))  # noqa: E731
        for p, frame in zip(depth_files, prefetch(load, depth_files)):
            yield frame
            step(p)

    meta = {
        "source": "scannet", "scene": name, "world_up": "unknown", "depth_scale": depth_scale, "stride": stride,
        "resolution": resolution, "frames": [frames[k][0] for k in keep], "invalid_poses": int((~finite).sum()),
        "color_intrinsics": K_color.to_dict(), "depth_intrinsics": K_depth.to_dict(),
    }  # fmt: skip
    header = Episode(
        rgb=np.zeros((1, K.height, K.width, 3), np.uint8), depth=np.zeros((1, K.height, K.width), np.float32),
        poses=poses[keep], actions=None, intrinsics=K, collided=None, episode_id=name, house_id=name, split=split,
        kind="scannet", meta=meta,
    )  # fmt: skip
    spec = DatasetSpec(
        name=name, intrinsics=K, action_config=None,
        description=f"ScanNet scene {name} (imported; no discrete actions, world up axis unknown)",
        generator={"source": "scannet", "src": str(src.resolve()), "depth_scale": depth_scale,
                   "max_frames": max_frames, "stride": stride, "split": split, "resolution": resolution},
    )  # fmt: skip
    ds, path = write_import(out, old_files, spec, header, rgb_frames, depth_frames, compresslevel=compresslevel,
                            done=done)
    return ImportReport(dataset=ds, episode_path=path, layout="ScanNet", num_frames=len(keep),
                        num_source=len(frames), invalid_poses=meta["invalid_poses"],
                        skipped=int(finite.sum()) - len(keep))
