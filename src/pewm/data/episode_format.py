"""The episode file format's schema: member names, dtypes and shapes, and the JSON metadata.

Builds the metadata written into ``meta.npy`` and checks it when reading (:class:`EpisodeInfo`);
the member table is in :mod:`pewm.data.io` and ``docs/data-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pewm import __version__
from pewm.data.episode import Episode, EpisodeError
from pewm.geometry import Intrinsics

FORMAT = "pewm-episode"
FORMAT_VERSION = 1
"""Version written by this pewm; files with a higher version are refused."""

DEPTH_ENCODING = "float16_m"

MEMBERS = ("meta", "poses", "actions", "collided", "depth", "rgb", "frame_crc32")
_DTYPES = {
    "poses": np.dtype("<f8"),
    "actions": np.dtype("<i8"),
    "collided": np.dtype("|b1"),
    "depth": np.dtype("<f2"),
    "rgb": np.dtype("|u1"),
    "frame_crc32": np.dtype("<u4"),
}


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
