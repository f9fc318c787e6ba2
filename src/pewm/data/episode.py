"""One recorded trajectory: RGB-D frames, camera poses and the actions between them.

Conventions (see ``docs/data-format.md``):

* ``rgb``: uint8 ``(T, H, W, 3)``.
* ``depth``: float32 ``(T, H, W)``, metric z-depth in metres along the optical axis, 0 = no measurement.
* ``poses``: float64 ``(T, 4, 4)`` camera-to-world, OpenCV camera frame (x right, y down, z forward),
  world frame in metres with z up (imported recordings may have an unknown up axis, see ``meta``).
* ``actions``: int64 ``(T - 1,)``: ``actions[t]`` moves the agent from frame ``t`` to frame ``t + 1``;
  ``None`` for recordings without discrete actions (e.g. TUM RGB-D imports).
* ``collided``: bool ``(T - 1,)``: ``collided[t]`` is true when ``actions[t]`` was blocked; or ``None``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pewm.geometry import Action, Intrinsics, check_pose

SPLITS = ("train", "val", "test")
"""Valid values of ``Episode.split``."""

KINDS = ("shortest", "out_and_back", "loop", "look_back", "look_around", "random", "tum", "custom")
"""Trajectory kinds used by pewm itself. Other non-empty strings are allowed too."""

FLOAT16_MAX = 65504.0
"""Largest depth (metres) that the on-disk float16 depth can hold."""


class EpisodeError(ValueError):
    """An episode is invalid, or an episode file cannot be read.

    ``path`` is the file concerned when known (else ``None``); the message names it and the problem.
    ``reason`` is the message without the path, and ``code`` a short machine-readable category:
    ``invalid`` (content fails :meth:`Episode.validate`), ``missing`` (no such file), ``not_zip``,
    ``truncated``, ``corrupt`` (CRC / decompression / header errors), ``missing_array``,
    ``bad_array`` (wrong dtype), ``inconsistent`` (shapes disagree with the metadata),
    ``bad_meta`` and ``version`` (unsupported format version).
    """

    def __init__(self, message: str, path: str | Path | None = None, code: str = "invalid") -> None:
        self.path = Path(path) if path is not None else None
        self.reason = message
        self.code = code
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)

    def __reduce__(self):  # keep path and code across processes (multiprocessing workers)
        return (type(self), (self.reason, self.path, self.code))


@dataclass
class Episode:
    """An RGB-D trajectory with poses and actions. Call :meth:`validate` to check it."""

    rgb: np.ndarray
    depth: np.ndarray
    poses: np.ndarray
    actions: np.ndarray | None
    intrinsics: Intrinsics
    collided: np.ndarray | None = None
    episode_id: str = "episode"
    house_id: str = ""
    split: str = "train"
    kind: str = "custom"
    meta: dict[str, Any] = field(default_factory=dict)
    frame_offset: int = 0
    """Index of ``rgb[0]`` in the stored episode (non-zero only after a sliced read)."""

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def create(
        cls,
        rgb,
        depth,
        poses,
        actions,
        intrinsics: Intrinsics,
        collided=None,
        **kwargs: Any,
    ) -> "Episode":
        """Build an episode from array-likes, converting dtypes *losslessly* only, then validate it.

        ``depth`` may be any float dtype (converted to float32), ``poses`` float32/float64
        (converted to float64), ``actions`` any integer dtype, ``collided`` bool or 0/1 integers.
        ``rgb`` must already be uint8 (a float image in [0, 1] is not silently rescaled).
        """
        rgb = np.ascontiguousarray(rgb)
        depth = np.asarray(depth)
        if not np.issubdtype(depth.dtype, np.floating):
            raise EpisodeError(f"depth: expected a float array in metres, got dtype {depth.dtype}")
        depth = np.ascontiguousarray(depth, dtype=np.float32)
        poses = np.asarray(poses)
        if not np.issubdtype(poses.dtype, np.floating):
            raise EpisodeError(f"poses: expected a float array, got dtype {poses.dtype}")
        poses = np.ascontiguousarray(poses, dtype=np.float64)
        if actions is not None:
            a = np.asarray(actions)
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise EpisodeError(f"actions: expected integer action ids, got dtype {a.dtype}")
            actions = np.ascontiguousarray(a, dtype=np.int64)
        if collided is not None:
            c = np.asarray(collided)
            if c.dtype != np.bool_:
                if c.size and not (np.issubdtype(c.dtype, np.integer) and np.isin(c, (0, 1)).all()):
                    raise EpisodeError(f"collided: expected booleans, got dtype {c.dtype}")
                c = c.astype(np.bool_)
            collided = np.ascontiguousarray(c)
        ep = cls(rgb=rgb, depth=depth, poses=poses, actions=actions, intrinsics=intrinsics, collided=collided, **kwargs)
        ep.validate()
        return ep

    # ------------------------------------------------------------------ shape properties
    @property
    def num_frames(self) -> int:
        return int(np.shape(self.rgb)[0])

    @property
    def height(self) -> int:
        return int(np.shape(self.rgb)[1])

    @property
    def width(self) -> int:
        return int(np.shape(self.rgb)[2])

    @property
    def has_actions(self) -> bool:
        return self.actions is not None

    def __len__(self) -> int:
        return self.num_frames

    # ------------------------------------------------------------------ validation
    def validate(self, path: str | Path | None = None, *, check_content: bool = True) -> "Episode":
        """Raise :class:`EpisodeError` naming the field and the problem, or return ``self``.

        Checks types, dtypes and shapes, the ``T - 1`` actions rule, intrinsics against the frame
        shape, and (``check_content``) finite rigid poses, finite non-negative depth and valid action ids.
        """

        def fail(msg: str) -> None:
            raise EpisodeError(msg, path)

        for name in ("rgb", "depth", "poses"):
            if not isinstance(getattr(self, name), np.ndarray):
                fail(f"{name}: expected a numpy array, got {type(getattr(self, name)).__name__}")
        rgb, depth, poses = self.rgb, self.depth, self.poses
        if rgb.dtype != np.uint8:
            fail(f"rgb: expected dtype uint8, got {rgb.dtype}")
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            fail(f"rgb: expected shape (T, H, W, 3), got {rgb.shape}")
        T, H, W = rgb.shape[:3]
        if T < 1:
            fail("rgb: an episode needs at least one frame, got T=0")
        if H < 1 or W < 1:
            fail(f"rgb: empty image size {H}x{W}")
        if depth.dtype != np.float32:
            fail(f"depth: expected dtype float32 (metres), got {depth.dtype}")
        if depth.shape != (T, H, W):
            fail(f"depth: expected shape (T, H, W) = {(T, H, W)} to match rgb, got {depth.shape}")
        if poses.dtype != np.float64:
            fail(f"poses: expected dtype float64, got {poses.dtype}")
        if poses.shape != (T, 4, 4):
            fail(f"poses: expected shape (T, 4, 4) = {(T, 4, 4)}, got {poses.shape}")
        for name in ("actions", "collided"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if not isinstance(arr, np.ndarray):
                fail(f"{name}: expected a numpy array or None, got {type(arr).__name__}")
            want = np.int64 if name == "actions" else np.bool_
            if arr.dtype != want:
                fail(f"{name}: expected dtype {np.dtype(want)}, got {arr.dtype}")
            if arr.shape != (T - 1,):
                fail(
                    f"{name}: expected shape (T-1,) = ({T - 1},) for T={T} frames "
                    f"({name}[t] belongs to the step from frame t to frame t+1), got {arr.shape}"
                )
        if self.collided is not None and self.actions is None:
            fail("collided: given without actions")
        if not isinstance(self.intrinsics, Intrinsics):
            fail(f"intrinsics: expected pewm.geometry.Intrinsics, got {type(self.intrinsics).__name__}")
        if (self.intrinsics.height, self.intrinsics.width) != (H, W):
            fail(
                f"intrinsics: {self.intrinsics.width}x{self.intrinsics.height} (WxH) does not match the "
                f"frames' {W}x{H}"
            )
        k = self.intrinsics
        if not all(math.isfinite(v) for v in (k.fx, k.fy, k.cx, k.cy)):
            fail(f"intrinsics: non-finite value in {k}")
        for name in ("episode_id", "house_id", "kind"):
            if not isinstance(getattr(self, name), str):
                fail(f"{name}: expected a string, got {type(getattr(self, name)).__name__}")
        if not self.episode_id:
            fail("episode_id: must not be empty")
        if not self.kind:
            fail("kind: must not be empty")
        if self.split not in SPLITS:
            fail(f"split: expected one of {SPLITS}, got {self.split!r}")
        if not isinstance(self.meta, dict):
            fail(f"meta: expected a dict, got {type(self.meta).__name__}")
        try:
            json.dumps(self.meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            fail(f"meta: not JSON-serialisable ({e})")
        if not isinstance(self.frame_offset, int) or self.frame_offset < 0:
            fail(f"frame_offset: expected a non-negative int, got {self.frame_offset!r}")

        if check_content:
            if not np.all(np.isfinite(poses)):
                bad = int(np.flatnonzero(~np.isfinite(poses).all(axis=(1, 2)))[0])
                fail(f"poses: frame {bad} contains NaN or inf")
            try:
                check_pose(poses, what="poses")  # batched; on failure find the first bad frame
            except ValueError:
                for t in range(T):
                    try:
                        check_pose(poses[t], what=f"pose of frame {t}")
                    except ValueError as e:
                        fail(f"poses: {e} (poses must be rigid camera-to-world transforms)")
            if depth.size:
                finite = np.isfinite(depth)
                if not finite.all():
                    t = int(np.flatnonzero(~finite.reshape(T, -1).all(axis=1))[0])
                    fail(f"depth: frame {t} contains NaN or inf (use 0 for 'no measurement')")
                if depth.min() < 0:
                    t = int(np.flatnonzero(depth.reshape(T, -1).min(axis=1) < 0)[0])
                    fail(f"depth: frame {t} has negative values (min {float(depth[t].min()):.4g}); use 0 for invalid")
                if depth.max() > FLOAT16_MAX:
                    fail(f"depth: values above {FLOAT16_MAX} m cannot be stored (max {float(depth.max()):.4g})")
            if self.actions is not None:
                try:
                    Action.check(self.actions)
                except ValueError as e:
                    fail(f"actions: {e}")
        return self

    # ------------------------------------------------------------------ slicing
    def slice(self, start: int, stop: int) -> "Episode":
        """Frames ``start:stop`` (and the actions between them) as a new episode (views, no copies)."""
        T = self.num_frames
        start, stop, step = slice(start, stop).indices(T)
        if stop <= start:
            raise ValueError(f"empty frame range {start}:{stop} of an episode with {T} frames")
        a_stop = max(start, stop - 1)
        return Episode(
            rgb=self.rgb[start:stop],
            depth=self.depth[start:stop],
            poses=self.poses[start:stop],
            actions=None if self.actions is None else self.actions[start:a_stop],
            intrinsics=self.intrinsics,
            collided=None if self.collided is None else self.collided[start:a_stop],
            episode_id=self.episode_id,
            house_id=self.house_id,
            split=self.split,
            kind=self.kind,
            meta=self.meta,
            frame_offset=self.frame_offset + start,
        )
