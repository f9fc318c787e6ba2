"""``dataset.json``: the dataset's description (:class:`DatasetSpec`), its errors, and the names of
the files of a dataset directory (see :mod:`pewm.data.dataset` for the layout)."""

from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pewm import __version__
from pewm.atomic import atomic_write
from pewm.geometry import ActionConfig, Intrinsics

DATASET_FORMAT = "pewm-dataset"
DATASET_FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"
EPISODES_DIR = "episodes"
EPISODE_RE = re.compile(r"^ep_(\d{6,})\.npz$")


class DatasetError(ValueError):
    """``dataset.json`` (or the directory) is missing or invalid. Names the file and the field."""

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.field = field
        self.reason = message
        where = f"{self.path}: " if self.path is not None else ""
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}{what}{message}")

    def __reduce__(self):
        return (type(self), (self.reason, self.path, self.field))


# ---------------------------------------------------------------------------------------- spec
@dataclass
class DatasetSpec:
    """The contents of ``dataset.json``."""

    name: str
    intrinsics: Intrinsics
    action_config: ActionConfig | None = field(default_factory=ActionConfig)
    """Step sizes of the discrete actions; ``None`` for datasets without actions (imports)."""
    generator: dict[str, Any] = field(default_factory=dict)
    """Free-form, JSON-able: how the episodes were made (generator arguments, source, seed...)."""
    description: str = ""
    created: dict[str, Any] = field(default_factory=dict)
    """Filled by :func:`create_dataset`: UTC time, pewm/python/numpy versions, platform."""
    format_version: int = DATASET_FORMAT_VERSION

    @property
    def width(self) -> int:
        return self.intrinsics.width

    @property
    def height(self) -> int:
        return self.intrinsics.height

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DATASET_FORMAT,
            "format_version": self.format_version,
            "name": self.name,
            "description": self.description,
            "resolution": {"width": self.intrinsics.width, "height": self.intrinsics.height},
            "intrinsics": self.intrinsics.to_dict(),
            "action_config": None
            if self.action_config is None
            else {"forward_m": self.action_config.forward_m, "turn_deg": self.action_config.turn_deg},
            "generator": self.generator,
            "created": self.created,
        }

    def to_json(self) -> str:
        try:
            return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        except (TypeError, ValueError) as e:
            raise DatasetError(f"not JSON-serialisable ({e})", field="generator") from None

    @classmethod
    def from_dict(cls, d: Any, path: str | Path | None = None) -> "DatasetSpec":
        def bad(fld: str | None, msg: str) -> DatasetError:
            return DatasetError(msg, path, fld)

        if not isinstance(d, dict):
            raise bad(None, f"expected a JSON object, got {type(d).__name__}")
        if d.get("format") != DATASET_FORMAT:
            raise bad("format", f"is {d.get('format')!r}, expected {DATASET_FORMAT!r}")
        v = d.get("format_version")
        if not isinstance(v, int) or isinstance(v, bool):
            raise bad("format_version", f"is {v!r}, expected an integer")
        if not 1 <= v <= DATASET_FORMAT_VERSION:
            raise bad(
                "format_version", f"unsupported version {v} (this pewm reads 1..{DATASET_FORMAT_VERSION}; upgrade pewm)"
            )
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise bad("name", f"is {name!r}, expected a non-empty string")
        if not isinstance(d.get("intrinsics"), dict):
            raise bad("intrinsics", "missing or not an object")
        try:
            K = Intrinsics.from_dict(d["intrinsics"])
        except (ValueError, TypeError) as e:
            raise bad("intrinsics", str(e)) from None
        res = d.get("resolution")
        if res is not None:
            if not isinstance(res, dict) or (res.get("width"), res.get("height")) != (K.width, K.height):
                raise bad("resolution", f"{res!r} does not match the intrinsics' {K.width}x{K.height}")
        ac = d.get("action_config")
        if ac is not None:
            if not isinstance(ac, dict):
                raise bad("action_config", "expected an object or null")
            try:
                ac = ActionConfig(float(ac["forward_m"]), float(ac["turn_deg"]))
            except (KeyError, TypeError, ValueError) as e:
                raise bad("action_config", f"invalid ({type(e).__name__}: {e})") from None
        gen = d.get("generator", {})
        if not isinstance(gen, dict):
            raise bad("generator", "expected an object")
        created = d.get("created", {})
        if not isinstance(created, dict):
            raise bad("created", "expected an object")
        desc = d.get("description", "")
        if not isinstance(desc, str):
            raise bad("description", "expected a string")
        return cls(name=name, intrinsics=K, action_config=ac, generator=gen, description=desc, created=created,
                   format_version=v)  # fmt: skip

    @classmethod
    def from_json(cls, text: str, path: str | Path | None = None) -> "DatasetSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}", path) from None
        return cls.from_dict(d, path)

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (usually ``DIR/dataset.json``)."""
        path = Path(path)
        text = self.to_json()
        with atomic_write(path, "w") as f:
            f.write(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DatasetSpec":
        path = Path(path)
        if not path.is_file():
            raise DatasetError("file not found (not a pewm dataset directory?)", path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read: {e}", path) from None
        return cls.from_json(text, path)


def _creation_info() -> dict[str, Any]:
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pewm_version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
    }
