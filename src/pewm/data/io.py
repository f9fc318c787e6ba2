"""Episode files: one compressed ``.npz`` (a zip of ``.npy`` members) per episode.

Members, in file order (see ``docs/data-format.md``)::

    meta.npy      0-d unicode string: JSON metadata (format version, ids, intrinsics, extras)
    poses.npy     float64 (T, 4, 4)   camera-to-world
    actions.npy   int64   (T-1,)      or (0,) with meta["has_actions"] = false
    collided.npy  bool    (T-1,)      or (0,) with meta["has_collided"] = false
    depth.npy     float16 (T, H, W)   metres, 0 = no measurement (read back as float32)
    rgb.npy       uint8   (T, H, W, 3)
    frame_crc32.npy uint32 (T, 2)     CRC-32 of each stored rgb frame and float16 depth frame

The file is a plain ``numpy.load``-able npz. Writes are atomic (:mod:`pewm.atomic`: temp file in
the same directory, fsync, ``os.replace``), and every way a file can be damaged is reported as an
:class:`EpisodeError` naming the file and the problem.

This module holds the public readers and writers; the format's schema and metadata live in
:mod:`~pewm.data.episode_format`, the zip plumbing in :mod:`~pewm.data.npz_container`.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from pewm.atomic import TEMP_SUFFIX, atomic_write
from pewm.data.episode import Episode, EpisodeError
from pewm.data.episode_format import (
    _DTYPES,
    DEPTH_ENCODING,
    FORMAT,
    FORMAT_VERSION,
    MEMBERS,
    EpisodeInfo,
    _expected_shapes,
    _meta_dict,
)
from pewm.data.npz_container import _check_header, _guard, _open_zip, _read_meta, _write_npz

__all__ = [
    "DEPTH_ENCODING",
    "FORMAT",
    "FORMAT_VERSION",
    "MEMBERS",
    "TEMP_SUFFIX",
    "EpisodeInfo",
    "atomic_write",
    "check_episode_file",
    "read_episode",
    "read_episode_info",
    "write_episode",
    "write_episode_frames",
]

_CHUNK = 1 << 22


# ---------------------------------------------------------------------------------------- writing
def _frames(arr: np.ndarray, dtype: np.dtype, crcs: list[int] | None = None) -> Iterator[np.ndarray]:
    """Yield ``arr`` converted to ``dtype`` in slabs of about ``_CHUNK`` bytes along axis 0,
    appending each frame's CRC-32 to ``crcs``."""
    n = max(1, _CHUNK // max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * dtype.itemsize))
    for i in range(0, arr.shape[0], n):
        slab = np.ascontiguousarray(arr[i : i + n], dtype=dtype)
        if crcs is not None:
            crcs.extend(zlib.crc32(fr) for fr in slab)
        yield slab


def _crc_member(rgb_crcs: list[int], depth_crcs: list[int]) -> Iterator[np.ndarray]:
    """Lazily (after rgb and depth were written) yield the (T, 2) per-frame checksum table."""
    yield np.stack([np.asarray(rgb_crcs, "<u4"), np.asarray(depth_crcs, "<u4")], axis=1)



def write_episode(path: str | Path, episode: Episode, *, compresslevel: int = 6) -> Path:
    """Validate ``episode`` and write it atomically to ``path`` (a ``.npz`` file). Returns the path.

    Depth is stored as float16 metres (relative precision ~0.05%, max 65504 m). ``compresslevel``
    is the zlib level (1 fastest .. 9 smallest; 0 stores uncompressed).
    """
    path = Path(path)
    episode.validate(path)
    T = episode.num_frames
    empty_b = np.zeros(0, np.bool_)
    acts = episode.actions if episode.actions is not None else np.zeros(0, np.int64)
    coll = episode.collided if episode.collided is not None else empty_b
    rcrc: list[int] = []
    dcrc: list[int] = []
    members = [
        ("poses", _DTYPES["poses"], (T, 4, 4), [episode.poses.astype("<f8")]),
        ("actions", _DTYPES["actions"], acts.shape, [acts.astype("<i8")]),
        ("collided", _DTYPES["collided"], coll.shape, [coll]),
        ("depth", _DTYPES["depth"], episode.depth.shape, _frames(episode.depth, _DTYPES["depth"], dcrc)),
        ("rgb", _DTYPES["rgb"], episode.rgb.shape, _frames(episode.rgb, _DTYPES["rgb"], rcrc)),
        ("frame_crc32", _DTYPES["frame_crc32"], (T, 2), _crc_member(rcrc, dcrc)),
    ]
    return _write_npz(path, _meta_dict(episode), members, compresslevel)


def write_episode_frames(
    path: str | Path,
    header: Episode,
    rgb_frames: Callable[[], Iterable[np.ndarray]],
    depth_frames: Callable[[], Iterable[np.ndarray]],
    *,
    compresslevel: int = 6,
) -> Path:
    """Write an episode whose frames are produced one at a time (bounded memory, for long imports).

    ``header`` is an :class:`Episode` with the real ``poses``, ``actions``, ``collided``, ids,
    intrinsics and ``meta``, and *one-frame* placeholder ``rgb``/``depth`` arrays (only their
    shapes matter); the frame count ``T`` is ``len(header.poses)``. ``rgb_frames()`` must yield ``T`` uint8
    ``(H, W, 3)`` frames and ``depth_frames()`` ``T`` float ``(H, W)`` depth maps in metres; each is
    checked as it is written. Atomic like :func:`write_episode`.
    """
    path = Path(path)
    T = int(header.poses.shape[0])
    H, W = header.height, header.width
    # Validate everything except the pixels using a view with T identical placeholder frames.
    probe = Episode(
        rgb=np.broadcast_to(header.rgb[:1], (T, H, W, 3)), depth=np.broadcast_to(header.depth[:1], (T, H, W)),
        poses=header.poses, actions=header.actions, intrinsics=header.intrinsics, collided=header.collided,
        episode_id=header.episode_id, house_id=header.house_id, split=header.split, kind=header.kind,
        meta=header.meta,
    )  # fmt: skip
    probe.validate(path)
    meta = _meta_dict(probe)

    rcrc: list[int] = []
    dcrc: list[int] = []

    def checked(it: Iterable[np.ndarray], what: str, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
        n = 0
        for fr in it:
            fr = np.asarray(fr)
            if fr.shape != shape:
                raise EpisodeError(f"{what} frame {n}: shape {fr.shape}, expected {shape}", path)
            if what == "rgb":
                if fr.dtype != np.uint8:
                    raise EpisodeError(f"rgb frame {n}: dtype {fr.dtype}, expected uint8", path)
                fr = np.ascontiguousarray(fr)
                rcrc.append(zlib.crc32(fr))
                yield fr[None]
            else:
                fr = fr.astype(np.float32)
                if not np.isfinite(fr).all() or fr.min(initial=0) < 0 or fr.max(initial=0) > 65504:
                    raise EpisodeError(f"depth frame {n}: NaN, inf, negative or >65504 m values", path)
                fr16 = np.ascontiguousarray(fr, dtype="<f2")
                dcrc.append(zlib.crc32(fr16))
                yield fr16[None]
            n += 1
            if n > T:
                raise EpisodeError(f"{what}: more than {T} frames", path)
        if n != T:
            raise EpisodeError(f"{what}: got {n} frames, expected {T}", path)

    acts = header.actions if header.actions is not None else np.zeros(0, np.int64)
    coll = header.collided if header.collided is not None else np.zeros(0, np.bool_)
    members = [
        ("poses", _DTYPES["poses"], (T, 4, 4), [header.poses.astype("<f8")]),
        ("actions", _DTYPES["actions"], acts.shape, [acts.astype("<i8")]),
        ("collided", _DTYPES["collided"], coll.shape, [coll]),
        ("depth", _DTYPES["depth"], (T, H, W), checked(depth_frames(), "depth", (H, W))),
        ("rgb", _DTYPES["rgb"], (T, H, W, 3), checked(rgb_frames(), "rgb", (H, W, 3))),
        ("frame_crc32", _DTYPES["frame_crc32"], (T, 2), _crc_member(rcrc, dcrc)),
    ]
    return _write_npz(path, meta, members, compresslevel)


# ---------------------------------------------------------------------------------------- reading
def _read_array(
    zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], path: Path, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """Read member ``name`` (checking dtype and shape against the metadata), optionally rows [a, b).

    Reading a whole member also checks its CRC-32. A row range stops decompressing after row ``b``.
    """
    dtype = _DTYPES[name]
    with _guard(path, f"{name}.npy"):
        with zf.open(name + ".npy") as f:
            _check_header(f, name, shape, path)
            n = shape[0] if shape else 1
            a, b = rows if rows is not None else (0, n)
            row_shape = tuple(shape[1:])
            row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
            if a:
                f.seek(a * row_bytes, os.SEEK_CUR)
            out = np.empty((b - a,) + row_shape if shape else (), dtype=dtype)
            view = memoryview(out.reshape(-1)).cast("B") if out.size else memoryview(b"")
            pos = 0
            while pos < len(view):
                chunk = f.read(min(_CHUNK, len(view) - pos))
                if not chunk:
                    raise EpisodeError(
                        f"array '{name}': data ends early ({pos} of {len(view)} bytes read); file truncated or damaged",
                        path,
                        code="truncated",
                    )
                view[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
            if b == n and f.read(1):  # reading to the end also makes zipfile check the CRC-32
                raise EpisodeError(f"array '{name}': unexpected trailing data", path, code="inconsistent")
    return out.astype(out.dtype.newbyteorder("="), copy=False)


def _resolve_frames(frames: slice | tuple[int, int] | range | None, T: int) -> tuple[int, int]:
    if frames is None:
        return 0, T
    if isinstance(frames, range):
        frames = slice(frames.start, frames.stop, frames.step)
    if isinstance(frames, tuple):
        if len(frames) != 2:
            raise ValueError(f"frames: expected (start, stop), got {frames!r}")
        frames = slice(*frames)
    if not isinstance(frames, slice):
        raise TypeError(f"frames: expected a slice, (start, stop) or None, got {type(frames).__name__}")
    if frames.step not in (None, 1):
        raise ValueError(f"frames: only contiguous ranges (step 1) can be read, got step {frames.step}")
    a, b, _ = frames.indices(T)
    if b <= a:
        raise ValueError(f"frames: empty range {frames.start}:{frames.stop} of an episode with {T} frames")
    return a, b


def read_episode_info(path: str | Path) -> EpisodeInfo:
    """The episode's metadata (ids, split, kind, size, intrinsics, stats) without reading any pixels.

    Also checks that every array member is present. Raises :class:`EpisodeError`.
    """
    path = Path(path)
    with _open_zip(path) as zf:
        return _read_meta(zf, path)


def check_episode_file(path: str | Path) -> EpisodeInfo:
    """Cheap structural check: the file opens, has every member, valid metadata, and every array's
    dtype, shape and stored size consistent with the metadata. Only the metadata and the small
    ``.npy`` headers are decompressed (no pixels), so CRC errors inside the pixel data are not found:
    use :func:`read_episode` (or ``verify_dataset``) for that.
    """
    path = Path(path)
    with _open_zip(path) as zf:
        info = _read_meta(zf, path)
        for name, shape in _expected_shapes(info).items():
            with _guard(path, f"{name}.npy"):
                zi = zf.getinfo(name + ".npy")
                with zf.open(zi) as f:  # decompresses only the small .npy header
                    _check_header(f, name, shape, path)
                    header_len = f.tell()
            nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[name].itemsize
            if zi.file_size != header_len + nbytes:
                raise EpisodeError(
                    f"array '{name}': stored size {zi.file_size} bytes is inconsistent with shape {shape} "
                    f"({header_len} + {nbytes} expected)",
                    path,
                    code="inconsistent",
                )
        return info


def read_episode(
    path: str | Path, frames: slice | tuple[int, int] | range | None = None, *, validate: bool = True
) -> Episode:
    """Read an episode file, or only the frames ``frames`` (a contiguous ``slice``/``(start, stop)``).

    A sliced read returns frames ``start:stop``, the actions between them (``stop - start - 1``) and
    ``frame_offset = start``; it decompresses only the needed prefix of the rgb/depth arrays. A full
    read checks every member's CRC-32. With ``validate`` the result is also checked with
    :meth:`Episode.validate` (finite rigid poses, non-negative depth, valid action ids).

    Raises :class:`EpisodeError` (naming the file and the problem) for a missing file, a file that
    is not a zip/npz, a truncated or corrupted file, missing arrays, wrong dtypes or shapes,
    inconsistent lengths, bad metadata and unsupported format versions.
    """
    path = Path(path)
    with _open_zip(path) as zf:
        info = _read_meta(zf, path)
        T = info.num_frames
        a, b = _resolve_frames(frames, T)
        shapes = _expected_shapes(info)
        full = (a, b) == (0, T)
        arrays = {}
        for name in ("poses", "actions", "collided", "frame_crc32"):
            arrays[name] = _read_array(zf, name, shapes[name], path)
        for col, name in ((1, "depth"), (0, "rgb")):
            arrays[name] = arr = _read_array(zf, name, shapes[name], path, None if full else (a, b))
            # per-frame checksums: a sliced read never reaches the zip CRC at the end of the member
            want = arrays["frame_crc32"][a:b, col]
            for t in range(b - a):
                if zlib.crc32(arr[t]) != int(want[t]):
                    raise EpisodeError(
                        f"array '{name}': frame {a + t} is corrupted (per-frame checksum mismatch)",
                        path,
                        code="corrupt",
                    )
    ep = Episode(
        rgb=arrays["rgb"],
        depth=arrays["depth"].astype(np.float32),
        poses=arrays["poses"],
        actions=arrays["actions"] if info.has_actions else None,
        intrinsics=info.intrinsics,
        collided=arrays["collided"] if info.has_collided else None,
        episode_id=info.episode_id,
        house_id=info.house_id,
        split=info.split,
        kind=info.kind,
        meta=info.meta,
    )
    if not full:
        ep.poses = ep.poses[a:b]
        if ep.actions is not None:
            ep.actions = ep.actions[a : b - 1]
        if ep.collided is not None:
            ep.collided = ep.collided[a : b - 1]
        ep.frame_offset = a
    if validate:
        ep.validate(path)
    return ep
