"""Episode files: one compressed ``.npz`` (a zip of ``.npy`` members) per episode.

Members, in file order (see ``docs/data-format.md``)::

    meta.npy      0-d unicode string: JSON metadata (format version, ids, intrinsics, extras)
    poses.npy     float64 (T, 4, 4)   camera-to-world
    actions.npy   int64   (T-1,)      or (0,) with meta["has_actions"] = false
    collided.npy  bool    (T-1,)      or (0,) with meta["has_collided"] = false
    depth.npy     float16 (T, H, W)   metres, 0 = no measurement (read back as float32)
    rgb.npy       uint8   (T, H, W, 3)
    frame_crc32.npy uint32 (T, 2)     CRC-32 of each stored rgb frame and float16 depth frame

The file is a plain ``numpy.load``-able npz. Writes are atomic (temp file in the same directory,
fsync, ``os.replace``), and every way a file can be damaged is reported as an :class:`EpisodeError`
naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from pewm.data.episode import Episode, EpisodeError
from pewm.geometry import Intrinsics

FORMAT = "pewm-episode"
FORMAT_VERSION = 1
"""Version written by this pewm; files with a higher version are refused."""

DEPTH_ENCODING = "float16_m"
TEMP_SUFFIX = ".tmp"
"""Temp files are named ``.<final name>.<random>.tmp`` in the final file's directory."""

MEMBERS = ("meta", "poses", "actions", "collided", "depth", "rgb", "frame_crc32")
_DTYPES = {
    "poses": np.dtype("<f8"),
    "actions": np.dtype("<i8"),
    "collided": np.dtype("|b1"),
    "depth": np.dtype("<f2"),
    "rgb": np.dtype("|u1"),
    "frame_crc32": np.dtype("<u4"),
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that the same episode always gives the same bytes
_CHUNK = 1 << 22


# ---------------------------------------------------------------------------------------- metadata
@dataclass
class EpisodeInfo:
    """The small per-episode metadata, readable without decompressing any pixels."""

    path: Path
    episode_id: str
    house_id: str
    split: str
    kind: str
    num_frames: int
    height: int
    width: int
    intrinsics: Intrinsics
    has_actions: bool
    has_collided: bool
    meta: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    file_size: int = 0


def _episode_stats(ep: Episode) -> dict[str, Any]:
    steps = np.linalg.norm(np.diff(ep.poses[:, :3, 3], axis=0), axis=-1) if ep.num_frames > 1 else np.zeros(0)
    stats: dict[str, Any] = {"path_length_m": float(steps.sum())}
    if ep.actions is not None:
        stats["action_counts"] = [int(c) for c in np.bincount(ep.actions, minlength=3)]
    if ep.collided is not None:
        stats["num_collisions"] = int(ep.collided.sum())
    return stats


def _meta_dict(ep: Episode, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    from pewm import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "writer": f"pewm {__version__}",
        "episode_id": ep.episode_id,
        "house_id": ep.house_id,
        "split": ep.split,
        "kind": ep.kind,
        "num_frames": ep.num_frames,
        "height": ep.height,
        "width": ep.width,
        "intrinsics": ep.intrinsics.to_dict(),
        "has_actions": ep.actions is not None,
        "has_collided": ep.collided is not None,
        "depth_encoding": DEPTH_ENCODING,
        "stats": stats if stats is not None else _episode_stats(ep),
        "meta": ep.meta,
    }


def _info_from_meta(m: Any, path: Path, file_size: int) -> EpisodeInfo:
    def bad(msg: str) -> EpisodeError:
        return EpisodeError(f"bad metadata (meta.npy): {msg}", path, code="bad_meta")

    if not isinstance(m, dict):
        raise bad(f"expected a JSON object, got {type(m).__name__}")
    if m.get("format") != FORMAT:
        raise bad(f"field 'format' is {m.get('format')!r}, expected {FORMAT!r}")
    v = m.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise bad(f"field 'format_version' is {v!r}, expected an integer")
    if v > FORMAT_VERSION or v < 1:
        raise EpisodeError(
            f"unsupported format version {v} (this pewm reads versions 1..{FORMAT_VERSION}; upgrade pewm)",
            path,
            code="version",
        )
    types = {
        "episode_id": str, "house_id": str, "split": str, "kind": str, "num_frames": int, "height": int,
        "width": int, "intrinsics": dict, "has_actions": bool, "has_collided": bool, "depth_encoding": str,
        "meta": dict,
    }  # fmt: skip
    for k, t in types.items():
        if k not in m:
            raise bad(f"missing field {k!r}")
        if not isinstance(m[k], t) or (t is int and isinstance(m[k], bool)):
            raise bad(f"field {k!r} is {m[k]!r}, expected {t.__name__}")
    if m["depth_encoding"] != DEPTH_ENCODING:
        raise bad(f"field 'depth_encoding' is {m['depth_encoding']!r}, expected {DEPTH_ENCODING!r}")
    if m["num_frames"] < 1 or m["height"] < 1 or m["width"] < 1:
        raise bad(f"non-positive size: num_frames={m['num_frames']}, height={m['height']}, width={m['width']}")
    try:
        K = Intrinsics.from_dict(m["intrinsics"])
    except (ValueError, TypeError) as e:
        raise bad(f"field 'intrinsics': {e}") from None
    if (K.height, K.width) != (m["height"], m["width"]):
        raise EpisodeError(
            f"inconsistent: intrinsics are {K.width}x{K.height} (WxH) but the frames are {m['width']}x{m['height']}",
            path,
            code="inconsistent",
        )
    stats = m.get("stats", {})
    return EpisodeInfo(
        path=path, episode_id=m["episode_id"], house_id=m["house_id"], split=m["split"], kind=m["kind"],
        num_frames=m["num_frames"], height=m["height"], width=m["width"], intrinsics=K,
        has_actions=m["has_actions"], has_collided=m["has_collided"], meta=m["meta"],
        stats=stats if isinstance(stats, dict) else {}, format_version=v, file_size=file_size,
    )  # fmt: skip


def _expected_shapes(info: EpisodeInfo) -> dict[str, tuple[int, ...]]:
    T, H, W = info.num_frames, info.height, info.width
    return {
        "poses": (T, 4, 4),
        "actions": (T - 1,) if info.has_actions else (0,),
        "collided": (T - 1,) if info.has_collided else (0,),
        "depth": (T, H, W),
        "rgb": (T, H, W, 3),
        "frame_crc32": (T, 2),
    }


# ---------------------------------------------------------------------------------------- writing
@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    On any error (including ``KeyboardInterrupt``) the temp file is removed and ``path`` is left as
    it was, so a reader sees either the old file, no file, or the complete new file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _zipinfo(name: str, compresslevel: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    zi.compress_type = zipfile.ZIP_DEFLATED if compresslevel > 0 else zipfile.ZIP_STORED
    zi._compresslevel = compresslevel if compresslevel > 0 else None  # type: ignore[attr-defined]
    zi.external_attr = 0o644 << 16
    return zi


def _write_member(
    zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], chunks: Iterable[np.ndarray], level: int
) -> None:
    """Write one ``.npy`` member from ``chunks`` (arrays whose bytes concatenate to the array)."""
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    written = 0
    with zf.open(_zipinfo(name + ".npy", level), "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        for c in chunks:
            c = np.ascontiguousarray(c)
            if c.dtype != dtype:
                raise EpisodeError(f"{name}: chunk has dtype {c.dtype}, expected {dtype}")
            f.write(memoryview(c).cast("B"))
            written += c.nbytes
    if written != want:
        raise EpisodeError(f"{name}: wrote {written} bytes, expected {want} for shape {shape}")


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


def _write_npz(
    path: Path,
    meta: dict[str, Any],
    members: list[tuple[str, np.dtype, tuple[int, ...], Iterable[np.ndarray]]],
    compresslevel: int,
) -> Path:
    text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
    meta_arr = np.array(text)
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", allowZip64=True) as zf:
            _write_member(zf, "meta", meta_arr.dtype, (), [meta_arr], compresslevel)
            for name, dtype, shape, chunks in members:
                _write_member(zf, name, dtype, shape, chunks, compresslevel)
    return path


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
@contextmanager
def _guard(path: Path, what: str, code: str = "corrupt") -> Iterator[None]:
    """Turn any low-level failure (zip, zlib, npy header, ...) into an EpisodeError naming ``what``."""
    try:
        yield
    except EpisodeError:
        raise
    except MemoryError:
        raise EpisodeError(f"{what}: corrupted size field (out of memory)", path, code=code) from None
    except Exception as e:  # noqa: BLE001 - damaged files raise all kinds of errors
        msg = str(e) or type(e).__name__
        if "CRC" in msg:
            msg = f"data corrupted (checksum mismatch: {msg})"
        raise EpisodeError(f"{what}: {msg} [{type(e).__name__}]", path, code=code) from e


@contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    if not path.exists():
        raise EpisodeError("file not found", path, code="missing")
    if not path.is_file():
        raise EpisodeError("not a regular file", path, code="missing")
    try:
        zf = zipfile.ZipFile(path, "r")
    except zipfile.BadZipFile as e:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            raise EpisodeError(
                f"truncated or damaged zip archive (the end-of-archive directory is missing or bad: {e})",
                path,
                code="truncated",
            ) from None
        raise EpisodeError(
            f"not an episode file (not a zip/npz archive; starts with {head!r})", path, code="not_zip"
        ) from None
    except Exception as e:  # noqa: BLE001
        raise EpisodeError(f"cannot open as zip/npz: {e} [{type(e).__name__}]", path, code="corrupt") from e
    try:
        yield zf
    finally:
        zf.close()


def _read_meta(zf: zipfile.ZipFile, path: Path) -> EpisodeInfo:
    names = set(zf.namelist())
    if "meta.npy" not in names:
        raise EpisodeError(
            "missing array 'meta' (not a pewm episode file, or damaged)", path, code="missing_array"
        )
    with _guard(path, "meta.npy", code="bad_meta"):
        with zf.open("meta.npy") as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
    if arr.dtype.kind != "U" or arr.shape != ():
        raise EpisodeError(
            f"bad metadata (meta.npy): expected a 0-d unicode string, got dtype {arr.dtype} shape {arr.shape}",
            path,
            code="bad_meta",
        )
    try:
        m = json.loads(str(arr))
    except json.JSONDecodeError as e:
        raise EpisodeError(f"bad metadata (meta.npy): invalid JSON ({e})", path, code="bad_meta") from None
    info = _info_from_meta(m, path, path.stat().st_size)
    missing = [n for n in MEMBERS if n + ".npy" not in names]
    if missing:
        raise EpisodeError(f"missing array(s) {missing}", path, code="missing_array")
    return info


def _read_header(f: IO[bytes], name: str, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    with _guard(path, f"{name}.npy"):
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
        raise ValueError(f"unsupported npy version {version}")


def _check_header(f: IO[bytes], name: str, shape: tuple[int, ...], path: Path) -> None:
    dtype = _DTYPES[name]
    got_shape, fortran, got_dtype = _read_header(f, name, path)
    if got_dtype != dtype:
        raise EpisodeError(f"array '{name}': wrong dtype {got_dtype}, expected {dtype}", path, code="bad_array")
    if tuple(got_shape) != tuple(shape):
        raise EpisodeError(
            f"array '{name}': shape {tuple(got_shape)} is inconsistent with the metadata (expected {tuple(shape)})",
            path,
            code="inconsistent",
        )
    if fortran:
        raise EpisodeError(f"array '{name}': Fortran order is not supported", path, code="bad_array")


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
