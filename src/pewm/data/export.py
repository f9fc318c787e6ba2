"""Write a pewm episode as a TUM RGB-D, ScanNet or folder recording (the layouts the importers read).

The inverse of :func:`~pewm.data.import_tum`, :func:`~pewm.data.import_scannet` and
:func:`~pewm.data.import_folder`: export an episode, import it back and you get the same poses,
depth (within the layout's depth quantisation) and pixels (exact for PNG). Used by the round-trip
tests, and by users to see what a layout must look like (CLI: ``pewm data export``). Each file is
written atomically (:mod:`pewm.atomic`); the destination must be a new or empty directory.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pewm.atomic import TEMP_SUFFIX, atomic_write_bytes, atomic_write_text
from pewm.data.episode import Episode
from pewm.data.folder import AXES, POSE_CONVENTIONS, to_convention
from pewm.data.io import read_episode
from pewm.geometry import Intrinsics, matrix_to_quaternion
from pewm.outputs import OVERWRITE_OPTION, check_output_dir

LAYOUTS = ("tum", "scannet", "folder")
# what each exporter writes in its directory (``overwrite`` replaces these and nothing else)
EXPORT_ARTEFACTS = {
    "tum": ("rgb", "depth", "rgb.txt", "depth.txt", "groundtruth.txt"),
    "scannet": ("color", "depth", "pose", "intrinsic"),
    "folder": ("rgb", "depth", "poses.txt", "intrinsics.txt"),
}


def _episode(ep: Episode | str | Path) -> Episode:
    return ep if isinstance(ep, Episode) else read_episode(ep)


def _new_dir(dst: str | Path) -> Path:
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst}: exists and is not an empty directory; choose a new or empty directory to export "
                         f"to (CLI: pass {OVERWRITE_OPTION} to replace an earlier export)")
    dst.mkdir(parents=True, exist_ok=True)
    return dst


def _num(x: float) -> str:
    return repr(float(x))  # shortest text that reads back as the same float64


def _image_bytes(arr: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _depth_u16(depth: np.ndarray, scale: float, frame: int, what: str) -> np.ndarray:
    raw = np.rint(depth.astype(np.float64) * scale)
    if raw.max(initial=0) > 65535:
        raise ValueError(f"frame {frame}: depth {float(depth.max()):.3f} m does not fit a 16-bit {what} PNG "
                         f"(at most {65535 / scale:.3f} m at {scale:g} values per metre)")
    return raw.astype(np.uint16)


def _matrix_text(M: np.ndarray) -> str:
    return "\n".join(" ".join(_num(v) for v in row) for row in M) + "\n"


def export_tum(ep: Episode | str | Path, dst: str | Path, *, depth_scale: float = 5000.0, fps: float = 30.0) -> Path:
    """Write ``ep`` as a TUM RGB-D sequence: ``rgb.txt``, ``depth.txt``, ``groundtruth.txt`` (rgb,
    depth and pose of frame ``k`` share the timestamp ``1000 + k / fps``), ``rgb/*.png`` and
    16-bit ``depth/*.png`` (``value = round(metres * depth_scale)``). TUM stores no intrinsics:
    import with the episode's (``pewm data info``). Returns ``dst``."""
    ep, dst = _episode(ep), _new_dir(dst)
    (dst / "rgb").mkdir()
    (dst / "depth").mkdir()
    rgb_lines, depth_lines = ["# timestamp filename"], ["# timestamp filename"]
    gt_lines = ["# timestamp tx ty tz qx qy qz qw"]
    for k in range(ep.num_frames):
        ts = f"{1000.0 + k / fps:.6f}"
        atomic_write_bytes(dst / "rgb" / f"{ts}.png", _image_bytes(ep.rgb[k], "PNG"))
        atomic_write_bytes(dst / "depth" / f"{ts}.png", _image_bytes(_depth_u16(ep.depth[k], depth_scale, k, "TUM"),
                                                                     "PNG"))
        rgb_lines.append(f"{ts} rgb/{ts}.png")
        depth_lines.append(f"{ts} depth/{ts}.png")
        T = ep.poses[k]
        gt_lines.append(" ".join([ts, *map(_num, T[:3, 3]), *map(_num, matrix_to_quaternion(T[:3, :3]))]))
    atomic_write_text(dst / "rgb.txt", "\n".join(rgb_lines) + "\n")
    atomic_write_text(dst / "depth.txt", "\n".join(depth_lines) + "\n")
    atomic_write_text(dst / "groundtruth.txt", "\n".join(gt_lines) + "\n")
    return dst


def export_scannet(ep: Episode | str | Path, dst: str | Path, *, color_scale: int = 1,
                   jpeg_quality: int = 95, color_format: str = "jpg") -> Path:
    """Write ``ep`` as a ScanNet scene export: ``color/<i>.jpg``, ``depth/<i>.png`` (16-bit
    millimetres), ``pose/<i>.txt`` (camera-to-world 4x4), ``intrinsic/intrinsic_color.txt`` and
    ``intrinsic_depth.txt`` (4x4) and identity ``extrinsic_color.txt``/``extrinsic_depth.txt``.
    ``color_scale`` > 1 writes the colour images that many times larger (pixels repeated, the
    colour intrinsics scaled), like ScanNet's 1296x968 colour beside 640x480 depth.
    ``color_format="png"`` writes lossless ``color/<i>.png`` instead (ScanNet itself uses JPEG).
    Returns ``dst``."""
    _check_choice("color_format", color_format, ("jpg", "png"))
    ep, dst = _episode(ep), _new_dir(dst)
    if int(color_scale) != color_scale or color_scale < 1:
        raise ValueError(f"color_scale must be a whole number >= 1, got {color_scale}")
    for d in ("color", "depth", "pose", "intrinsic"):
        (dst / d).mkdir()
    K = ep.intrinsics
    Kc = K.scaled(K.width * color_scale, K.height * color_scale)
    for name, k in (("intrinsic_color.txt", Kc), ("intrinsic_depth.txt", K)):
        M = np.eye(4)
        M[:3, :3] = k.matrix
        atomic_write_text(dst / "intrinsic" / name, _matrix_text(M))
    for name in ("extrinsic_color.txt", "extrinsic_depth.txt"):
        atomic_write_text(dst / "intrinsic" / name, _matrix_text(np.eye(4)))
    for k in range(ep.num_frames):
        rgb = ep.rgb[k]
        if color_scale > 1:
            rgb = np.repeat(np.repeat(rgb, color_scale, axis=0), color_scale, axis=1)
        data = _image_bytes(rgb, "JPEG", quality=jpeg_quality) if color_format == "jpg" else _image_bytes(rgb, "PNG")
        atomic_write_bytes(dst / "color" / f"{k}.{color_format}", data)
        atomic_write_bytes(dst / "depth" / f"{k}.png", _image_bytes(_depth_u16(ep.depth[k], 1000.0, k, "ScanNet"),
                                                                    "PNG"))
        atomic_write_text(dst / "pose" / f"{k}.txt", _matrix_text(ep.poses[k]))
    return dst


def export_folder(ep: Episode | str | Path, dst: str | Path, *, pose_convention: str = "c2w",
                  axes: str = "opencv", depth_format: str = "png", depth_scale: float | None = None,
                  rgb_format: str = "png") -> Path:
    """Write ``ep`` in the generic folder layout (``docs/data-format.md``): ``rgb/<k>.png`` (or
    ``.jpg``), ``depth/<k>.png`` (16-bit, ``depth_scale`` values per metre, default 1000) or
    ``depth/<k>.npy`` (float32, ``depth_scale`` default 1: metres), ``poses.txt`` (one row-major
    4x4 per line in ``pose_convention``/``axes``) and ``intrinsics.txt`` (``fx fy cx cy width
    height``). Returns ``dst``."""
    _check_choice("pose_convention", pose_convention, POSE_CONVENTIONS)
    _check_choice("axes", axes, AXES)
    _check_choice("depth_format", depth_format, ("png", "npy"))
    _check_choice("rgb_format", rgb_format, ("png", "jpg"))
    ep, dst = _episode(ep), _new_dir(dst)
    scale = float(depth_scale if depth_scale is not None else (1000.0 if depth_format == "png" else 1.0))
    (dst / "rgb").mkdir()
    (dst / "depth").mkdir()
    width = len(str(ep.num_frames - 1))
    lines = ["# one camera pose per line: row-major 4x4 "
             f"({'camera-to-world' if pose_convention == 'c2w' else 'world-to-camera'}, {axes} camera axes)"]
    for k in range(ep.num_frames):
        name = f"{k:0{max(6, width)}d}"
        fmt = ("PNG", {}) if rgb_format == "png" else ("JPEG", {"quality": 95})
        atomic_write_bytes(dst / "rgb" / f"{name}.{rgb_format}", _image_bytes(ep.rgb[k], fmt[0], **fmt[1]))
        if depth_format == "png":
            data = _image_bytes(_depth_u16(ep.depth[k], scale, k, "depth"), "PNG")
        else:
            buf = io.BytesIO()
            np.save(buf, (ep.depth[k].astype(np.float64) * scale).astype(np.float32))
            data = buf.getvalue()
        atomic_write_bytes(dst / "depth" / f"{name}.{depth_format}", data)
        lines.append(" ".join(map(_num, to_convention(ep.poses[k], pose_convention, axes).reshape(-1))))
    atomic_write_text(dst / "poses.txt", "\n".join(lines) + "\n")
    K: Intrinsics = ep.intrinsics
    atomic_write_text(dst / "intrinsics.txt", "# fx fy cx cy width height (pixels; pixel centres at integers)\n"
                      + " ".join([*map(_num, (K.fx, K.fy, K.cx, K.cy)), str(K.width), str(K.height)]) + "\n")
    return dst


def export_episode(ep: Episode | str | Path, dst: str | Path, layout: str, *, overwrite: bool = False,
                   **options) -> Path:
    """Export in ``layout`` (``tum``, ``scannet`` or ``folder``) with that exporter's ``options``.

    ``dst`` must be new or empty; with ``overwrite`` it may also hold an earlier export (of any
    layout: the files and directories in :data:`EXPORT_ARTEFACTS` and temporary files), which is
    removed first. Anything else in ``dst`` is refused (``ValueError`` naming ``--out``)."""
    _check_choice("--format", layout, LAYOUTS)
    clear_export_dir(dst, overwrite)
    return {"tum": export_tum, "scannet": export_scannet, "folder": export_folder}[layout](ep, dst, **options)


def clear_export_dir(dst: str | Path, overwrite: bool = False, remove: bool = True) -> None:
    """Refuse ``dst`` unless it is new, empty or (with ``overwrite``) holds only an earlier export,
    which is then removed (if ``remove``). Nothing is removed when anything else is there."""
    dst = Path(dst)
    if str(dst) == "" or not dst.is_dir():
        check_output_dir(dst, (), option="--out")  # empty path, a file, a path under a file
        return
    ours = {n for names in EXPORT_ARTEFACTS.values() for n in names}
    other = sorted(p.name for p in dst.iterdir() if p.name not in ours and not p.name.endswith(TEMP_SUFFIX))
    if other:
        raise ValueError(f"--out {dst}: holds {other[0]!r}, which is not part of an export; "
                         "choose a new or empty directory to export to")
    temps = [p.name for p in dst.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    check_output_dir(dst, sorted(ours) + temps, overwrite=overwrite, option="--out", remove=remove)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
