"""``manifest.json``: what a dataset directory should contain.

Written by the generator and the importer *before* the first episode, so a directory whose
writer was interrupted is recognisably incomplete; each entry gets its size and SHA-256 when its
file is complete. The file is a pure function of the finished dataset (sorted keys, no times), so
an interrupted-and-resumed generation ends with the same bytes as an uninterrupted one::

    {
      "format": "pewm-manifest",
      "format_version": 1,
      "episodes": {"ep_000000.npz": {"split": "train", "bytes": 30021, "sha256": "9f2c..."}, ...},
      "houses": {"house_0000.json": {"bytes": 31890, "sha256": "41ab..."}, ...}
    }

An entry with ``"bytes": null, "sha256": null`` is *pending*: the file is expected but was not
recorded as finished. Saved atomically (:mod:`pewm.atomic`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pewm.atomic import atomic_write_text
from pewm.data.dataset_spec import DatasetError
from pewm.data.episode import SPLITS

MANIFEST_JSON = "manifest.json"
MANIFEST_FORMAT = "pewm-manifest"
MANIFEST_FORMAT_VERSION = 1
HOUSES_DIR = "houses"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class FileEntry:
    """One expected file: its size and SHA-256 once recorded (``None`` while pending)."""

    bytes: int | None = None
    sha256: str | None = None
    split: str | None = None
    """Episodes only: the split the episode belongs to."""

    @property
    def recorded(self) -> bool:
        return self.sha256 is not None

    def to_dict(self, with_split: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"bytes": self.bytes, "sha256": self.sha256}
        if with_split:
            d["split"] = self.split
        return d


@dataclass
class Manifest:
    """The expected episode files (``episodes/NAME`` -> entry) and house files (``houses/NAME``)."""

    episodes: dict[str, FileEntry] = field(default_factory=dict)
    houses: dict[str, FileEntry] = field(default_factory=dict)

    @classmethod
    def expecting(cls, episodes: dict[str, str], houses: list[str] = ()) -> "Manifest":
        """A manifest with every file pending: ``episodes`` maps file name -> split."""
        return cls({n: FileEntry(split=s) for n, s in episodes.items()}, {n: FileEntry() for n in houses})

    def pending(self) -> list[str]:
        """``episodes/NAME`` and ``houses/NAME`` of the entries not recorded as finished."""
        return ([f"episodes/{n}" for n, e in sorted(self.episodes.items()) if not e.recorded]
                + [f"houses/{n}" for n, e in sorted(self.houses.items()) if not e.recorded])

    def same_files(self, other: "Manifest") -> bool:
        """Whether both expect the same files (and splits)."""
        return ({n: e.split for n, e in self.episodes.items()} == {n: e.split for n, e in other.episodes.items()}
                and set(self.houses) == set(other.houses))

    @staticmethod
    def record(entry: FileEntry, path: str | Path, sha256: str | None = None) -> None:
        """Fill ``entry`` with the size and checksum of the finished file ``path``."""
        entry.bytes = Path(path).stat().st_size
        entry.sha256 = sha256 or file_sha256(path)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "episodes": {n: e.to_dict(True) for n, e in sorted(self.episodes.items())},
            "houses": {n: e.to_dict(False) for n, e in sorted(self.houses.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write atomically (usually to ``DIR/manifest.json``)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: Any, path: str | Path | None = None) -> "Manifest":
        def bad(fld: str | None, msg: str) -> DatasetError:
            return DatasetError(msg, path, fld)

        if not isinstance(d, dict):
            raise bad(None, f"expected a JSON object, got {type(d).__name__}")
        if d.get("format") != MANIFEST_FORMAT:
            raise bad("format", f"is {d.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        v = d.get("format_version")
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MANIFEST_FORMAT_VERSION:
            raise bad("format_version", f"is {v!r}; this pewm reads 1..{MANIFEST_FORMAT_VERSION}")
        out = cls()
        for section, target, with_split in (("episodes", out.episodes, True), ("houses", out.houses, False)):
            items = d.get(section)
            if not isinstance(items, dict):
                raise bad(section, "missing or not an object")
            for name, e in items.items():
                where = f"{section}.{name}"
                if not isinstance(e, dict):
                    raise bad(where, "expected an object")
                if "/" in name or name in ("", ".", ".."):
                    raise bad(where, "not a plain file name")
                size, sha, split = e.get("bytes"), e.get("sha256"), e.get("split")
                if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                    raise bad(where, f"bytes is {size!r}, expected a non-negative integer or null")
                if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                                        or any(c not in "0123456789abcdef" for c in sha)):
                    raise bad(where, f"sha256 is {sha!r}, expected 64 lower-case hex digits or null")
                if (size is None) != (sha is None):
                    raise bad(where, "bytes and sha256 must both be set or both be null")
                if with_split and split not in SPLITS:
                    raise bad(where, f"split is {split!r}, expected one of {SPLITS}")
                target[name] = FileEntry(size, sha, split if with_split else None)
        return out

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Read ``path``; :class:`~pewm.data.DatasetError` names the file (and field) if it is
        missing or invalid."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError("file not found", path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read: {e}", path) from None
        except json.JSONDecodeError as e:
            raise DatasetError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}", path) from None
        return cls.from_dict(d, path)


__all__ = ["HOUSES_DIR", "MANIFEST_JSON", "FileEntry", "Manifest", "file_sha256"]
