"""The zip container of an episode file: deterministic writing of ``.npy`` members, and guarded
opening and header checks on reading, every failure turned into an :class:`EpisodeError`."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from pewm.atomic import atomic_write
from pewm.data.episode import EpisodeError
from pewm.data.episode_format import _DTYPES, MEMBERS, EpisodeInfo, _info_from_meta

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that the same episode always gives the same bytes


# ---------------------------------------------------------------------------------------- writing
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
