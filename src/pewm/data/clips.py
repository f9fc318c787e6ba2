"""Training clips: (current frame + H future frames) with the ground-truth history before them.

Paper §4 ("Training"): clips are sampled with a frame stride of 1-3, and the 3D map of each clip is
built from the ground-truth observations that come before it. pewm makes the unstated parts
explicit:

* the clip's frames are ``t0, t0 + s, ..., t0 + H*s`` (``s`` the stride); frame ``t0`` is the clean
  *current* frame, the others are the targets;
* the memory is built from at most ``history`` frames of ``[0, t0]`` (evenly spaced, always
  including ``t0``); target frames are never in it;
* clips are sampled with weight ``revisit_floor + share``, where ``share`` is the fraction of target
  pixels whose coarse voxel was already observed in ``[0, t0]`` — so the memory has something to
  remember in most clips, and novel clips still appear. :meth:`ClipSampler.revisit_share_stats`
  reports the share of the clips it samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pewm.data.dataset import open_dataset
from pewm.data.episode import Episode
from pewm.geometry import unproject_depth, valid_depth


@dataclass(frozen=True)
class ClipConfig:
    future_frames: int = 8  # H: frames generated per clip
    strides: tuple[int, ...] = (1, 2, 3)
    history: int = 16  # at most this many ground-truth frames build the memory
    revisit_floor: float = 0.25  # sampling weight = revisit_floor + observed share of target pixels
    share_voxel_m: float = 0.25  # voxel size of the "observed before" test (the paper's map voxel)
    share_pixels: int = 16  # the share is measured on a share_pixels x share_pixels pixel grid

    def __post_init__(self) -> None:
        if self.future_frames < 1:
            raise ValueError(f"ClipConfig.future_frames must be >= 1, got {self.future_frames}")
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"ClipConfig.strides must be positive integers, got {self.strides}")
        if self.history < 1:
            raise ValueError(f"ClipConfig.history must be >= 1, got {self.history}")


@dataclass
class Clip:
    """One training example (numpy arrays; ``to_torch`` converts)."""

    rgb: np.ndarray  # (1 + H, h, w, 3) uint8; index 0 is the current frame
    depth: np.ndarray  # (1 + H, h, w) float32 metres
    poses: np.ndarray  # (1 + H, 4, 4) camera-to-world
    history_rgb: np.ndarray  # (M, h, w, 3) uint8, M <= history; ground truth from [0, t0]
    history_depth: np.ndarray  # (M, h, w)
    history_poses: np.ndarray  # (M, 4, 4)
    K: np.ndarray  # (3, 3)
    revisit_share: float
    episode: int
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class _EpisodeIndex:
    """Per-episode arrays needed to sample clips quickly (kept in memory)."""

    def __init__(self, ep: Episode, cfg: ClipConfig):
        self.ep = ep
        self.first_seen = _first_seen_per_pixel(ep, cfg.share_voxel_m, cfg.share_pixels)


def _first_seen_per_pixel(ep: Episode, voxel: float, n: int) -> np.ndarray:
    """``(T, n*n)``: for a grid of pixels of every frame, the first frame that observed its voxel.

    Pixels with invalid depth get ``T`` (never counted as observed).
    """
    T, H, W = ep.depth.shape
    rows = np.linspace(0, H - 1, n).round().astype(int)
    cols = np.linspace(0, W - 1, n).round().astype(int)
    d = torch.from_numpy(ep.depth.astype(np.float32))
    pts = unproject_depth(d, ep.intrinsics.matrix, torch.from_numpy(ep.poses).float())  # (T, H, W, 3)
    pts = pts[:, rows][:, :, cols].reshape(T, -1, 3)
    ok = valid_depth(d[:, rows][:, :, cols].reshape(T, -1)).numpy()
    keys = np.floor(pts.numpy() / voxel).astype(np.int64)
    keys = (keys[..., 0] * 73856093) ^ (keys[..., 1] * 19349663) ^ (keys[..., 2] * 83492791)
    flat = keys.reshape(-1)
    frame = np.repeat(np.arange(T), keys.shape[1])
    valid = ok.reshape(-1)
    first = {}
    for k, t in zip(flat[valid].tolist(), frame[valid].tolist()):  # frames in order: first wins
        if k not in first:
            first[k] = t
    out = np.full(flat.shape, T, dtype=np.int64)
    out[valid] = [first[k] for k in flat[valid].tolist()]
    return out.reshape(T, -1)


class ClipSampler:
    """Samples :class:`Clip` s from one split of a dataset; the whole split is kept in memory.

    Deterministic: ``sample(rng)`` depends only on the generator's state.
    """

    def __init__(self, root: str | Path, split: str | None = "train", cfg: ClipConfig = ClipConfig(),
                 max_episodes: int | None = None):
        ds = open_dataset(root)
        paths = ds.episode_paths(split)
        if max_episodes is not None:
            paths = paths[:max_episodes]
        if not paths:
            raise ValueError(f"{root}: no episodes in split {split!r}")
        self.cfg = cfg
        self.root = Path(root)
        self.episodes = [_EpisodeIndex(ds.read(p), cfg) for p in paths]
        self.intrinsics = ds.intrinsics
        self._candidates()

    def _candidates(self) -> None:
        """Every valid (episode, t0, stride) with its revisit share and sampling weight."""
        H = self.cfg.future_frames
        rows, shares = [], []
        for e, idx in enumerate(self.episodes):
            T = idx.ep.num_frames
            for s in self.cfg.strides:
                t0 = np.arange(0, T - H * s)
                if t0.size == 0:
                    continue
                targets = t0[:, None] + s * np.arange(1, H + 1)[None]  # (n, H)
                fs = idx.first_seen[targets]  # (n, H, P)
                share = (fs <= t0[:, None, None]).mean(axis=(1, 2))
                rows.append(np.stack([np.full_like(t0, e), t0, np.full_like(t0, s)], 1))
                shares.append(share)
        if not rows:
            raise ValueError(
                f"{self.root}: every episode is shorter than a clip of {H + 1} frames at stride "
                f"{min(self.cfg.strides)}"
            )
        self.candidates = np.concatenate(rows)
        self.shares = np.concatenate(shares)
        w = self.cfg.revisit_floor + self.shares
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return len(self.candidates)

    def revisit_share_stats(self) -> dict:
        """Share of target pixels observed before the clip: over all candidates and as sampled."""
        return {
            "candidates": int(len(self.candidates)),
            "uniform_mean_share": float(self.shares.mean()),
            "sampled_mean_share": float((self.weights * self.shares).sum()),
        }

    def clip(self, e: int, t0: int, stride: int, share: float | None = None) -> Clip:
        ep = self.episodes[e].ep
        H = self.cfg.future_frames
        frames = t0 + stride * np.arange(H + 1)
        hist = np.unique(np.linspace(0, t0, min(self.cfg.history, t0 + 1)).round().astype(np.int64))
        if share is None:
            share = float((self.episodes[e].first_seen[frames[1:]] <= t0).mean())
        return Clip(
            rgb=ep.rgb[frames], depth=ep.depth[frames], poses=ep.poses[frames],
            history_rgb=ep.rgb[hist], history_depth=ep.depth[hist], history_poses=ep.poses[hist],
            K=ep.intrinsics.matrix, revisit_share=float(share), episode=e, frame_indices=frames,
        )

    def sample(self, rng: np.random.Generator) -> Clip:
        i = int(rng.choice(len(self.candidates), p=self.weights))
        e, t0, s = (int(v) for v in self.candidates[i])
        return self.clip(e, t0, s, float(self.shares[i]))
