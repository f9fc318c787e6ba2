"""Atomic file writes: the one way pewm replaces a file (layer 0: imports nothing from pewm).

Every writer goes to a temporary file beside the target (same directory, so ``os.replace`` is an
atomic rename on POSIX), flushes and fsyncs it, gives it the mode a plain ``open()`` would (the
process umask), renames it onto the target and fsyncs the directory. On any error, including
``KeyboardInterrupt``, the temporary file is removed and the target is left as it was: a reader
sees the old file, no file, or the complete new one, never a torn one.

* :func:`atomic_write` -- a context manager yielding an open file object;
* :func:`atomic_path` -- a context manager yielding a temporary *path*, for libraries that write
  by file name (safetensors, imageio, matplotlib);
* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` -- one call;
* :func:`atomic_write_safetensors` -- torch tensors, with a canonical (byte-reproducible) header.

Temporary files are named ``.<name>.<random>.tmp`` (``.tmp<ext>`` with ``keep_suffix=True``, for
writers that pick the format from the extension), so dataset checks can recognise leftovers.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

TEMP_SUFFIX = ".tmp"


def _umask_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (``mkstemp`` uses 0600)."""
    um = os.umask(0)
    os.umask(um)
    return 0o666 & ~um


def fsync_dir(d: str | Path) -> None:
    """fsync a directory so a rename inside it is durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path, keep_suffix: bool) -> tuple[int, str]:
    suffix = TEMP_SUFFIX + (path.suffix if keep_suffix else "")
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, the file written
    there is fsynced and renamed onto ``path``. ``keep_suffix`` ends the temporary name with
    ``path``'s extension (for writers that choose the format by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_name(path, keep_suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` (``mode`` ``"wb"`` or ``"w"``); when the block ends
    without error it is fsynced and renamed onto ``path`` (:func:`atomic_path`)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2, sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys))


def _canonical_safetensors_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header canonically: ``__metadata__`` first with sorted keys,
    then the tensors in file order (safetensors writes its metadata in hash order, which varies
    between calls, so equal weights gave different bytes). Readers see the same file."""
    with open(path, "rb+") as f:
        n = int.from_bytes(f.read(8), "little")
        head = json.loads(f.read(n))
        meta = head.pop("__metadata__", None)
        canon = {"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}
        canon.update(sorted(head.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])))
        new = json.dumps(canon, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        new += b" " * (-len(new) % 8)  # the data stays 8-byte aligned, as safetensors pads it
        rest = f.read() if len(new) != n else None  # (same length in practice: only the order changes)
        f.seek(0)
        f.write(len(new).to_bytes(8, "little") + new)
        if rest is not None:
            f.write(rest)
            f.truncate()


def atomic_write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write torch ``tensors`` (+ string ``metadata``) to a ``.safetensors`` file atomically and
    deterministically: equal tensors and metadata give byte-identical files, in any process."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        _canonical_safetensors_header(tmp)
    return Path(path)


__all__ = ["TEMP_SUFFIX", "atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_safetensors", "atomic_write_text", "fsync_dir"]
