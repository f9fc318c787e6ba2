"""Cut protocols of the generation benchmark: where in each episode generation starts (issue #12).

The benchmark builds the memory from the ground-truth frames ``[0, t]`` and generates the next
``horizon`` frames from the cut ``t``. Which ``t`` decides what the benchmark measures:

* ``revisit`` (the default; the protocol of every earlier ``pewm eval`` run, bit for bit): the
  candidate whose next ``horizon`` frames were observed most by the history, as the paper's
  revisit-rich trajectories. It reads the future ground truth (depth and poses) to choose, and on
  the Table-1 test run leaves about 21 novel frames per seed: it measures *remembering*.
* ``explore``: the candidate whose next ``horizon`` frames hold the most **novel** frames (the
  benchmark's own revisit / novel classification, :func:`~pewm.eval.revisit.observed_fraction`
  and :func:`~pewm.eval.revisit.classify`, computed exactly as the reported labels are); ties go to
  the lowest mean observed fraction, then to the earliest cut. It also reads the future, on
  purpose: it measures *imagining* the unseen parts of the house (the paper's "unseen parts of the
  world").
* ``uniform``: a candidate drawn uniformly at random, seeded by ``(seed, episode position in the
  split)``, without looking at anything after the cut: a mix of revisits and novel views as an
  agent meets them, and a cut that depends neither on ``--max-episodes`` nor on the model.

Candidates are ``t = min_history, min_history + step, ...`` up to ``T - horizon`` (a full chunk of
history at least, and room for the horizon), the same for every protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pewm.eval.revisit import classify, observed_fraction

CUT_PROTOCOLS = ("revisit", "explore", "uniform")


@dataclass
class CutConfig:
    """How cut points are chosen (``--cuts``, ``--cut-seed``); see the module docstring.

    ``step``: spacing of the candidate cuts; ``seed``: the ``uniform`` draw's seed;
    ``revisit_threshold``: the revisit / novel threshold ``explore`` counts novel frames with (the
    benchmark passes its own ``--revisit-threshold``, so it maximises what is reported)."""

    protocol: str = "revisit"
    step: int = 8
    seed: int = 0
    revisit_threshold: float = 0.5

    def validate(self) -> "CutConfig":
        if self.protocol not in CUT_PROTOCOLS:
            raise ValueError(f"--cuts must be one of {', '.join(CUT_PROTOCOLS)}, got {self.protocol!r}")
        if self.step < 1:
            raise ValueError(f"CutConfig.step must be >= 1, got {self.step}")
        if self.seed < 0:
            raise ValueError(f"--cut-seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.revisit_threshold <= 1.0:
            raise ValueError(f"--revisit-threshold must be in [0, 1], got {self.revisit_threshold}")
        return self


def cut_candidates(n_frames: int, horizon: int, min_history: int, step: int = 8) -> list[int]:
    """The candidate cuts of an episode of ``n_frames`` frames (module docstring)."""
    T = n_frames - 1
    cands = list(range(min_history, T - horizon + 1, step))
    if not cands:
        raise ValueError(f"episode of {T + 1} frames is too short for --min-history {min_history} + "
                         f"--horizon {horizon}")
    return cands


def _coarse_observed(depth, poses, K, t: int, horizon: int) -> np.ndarray:
    """The quick estimate the ``revisit`` protocol ranks cuts by: every second history frame,
    every fourth pixel."""
    return observed_fraction(depth[t + 1:t + 1 + horizon], poses[t + 1:t + 1 + horizon], K,
                             depth[:t + 1:2], poses[:t + 1:2], K, stride=4)


def revisit_cut(depth, poses, K, horizon: int, min_history: int, step: int = 8) -> tuple[int, np.ndarray]:
    """``revisit``: the cut whose next ``horizon`` frames were observed most by frames ``[0, t]``
    (mean of the coarse observed fraction); returns ``(t, coarse observed fraction of those frames)``.
    The protocol of every ``pewm eval`` run before issue #12, unchanged."""
    best = None
    for t in cut_candidates(len(depth), horizon, min_history, step):
        frac = _coarse_observed(depth, poses, K, t, horizon)
        score = float(np.nanmean(frac)) if np.isfinite(frac).any() else -1.0
        if best is None or score > best[0]:
            best = (score, t, frac)
    return best[1], best[2]


def explore_cut(depth, poses, K, horizon: int, min_history: int, step: int = 8,
                threshold: float = 0.5) -> tuple[int, np.ndarray]:
    """``explore``: the cut with the most novel frames among its next ``horizon`` (the reported
    classification: :func:`observed_fraction` with its defaults against all of ``[0, t]``, then
    :func:`classify` at ``threshold``); ties: lowest mean observed fraction, then earliest.
    Returns ``(t, observed fraction of those frames)``."""
    best = None
    for t in cut_candidates(len(depth), horizon, min_history, step):
        frac = observed_fraction(depth[t + 1:t + 1 + horizon], poses[t + 1:t + 1 + horizon], K,
                                 depth[:t + 1], poses[:t + 1], K)
        novel = int((~classify(frac, threshold)).sum())
        mean_obs = float(np.nanmean(frac)) if np.isfinite(frac).any() else 0.0
        key = (novel, -mean_obs)
        if best is None or key > best[0]:
            best = (key, t, frac)
    return best[1], best[2]


def uniform_cut(n_frames: int, horizon: int, min_history: int, step: int = 8, seed: int = 0,
                episode: int = 0) -> int:
    """``uniform``: a candidate cut drawn uniformly with ``numpy.random.default_rng([seed, episode])``
    (``episode``: the episode's position in its split), from nothing but the episode's length."""
    cands = cut_candidates(n_frames, horizon, min_history, step)
    return int(cands[np.random.default_rng([int(seed), int(episode)]).integers(len(cands))])


def choose_cut(depth, poses, K, horizon: int, min_history: int, step: int = 8, protocol: str = "revisit",
               seed: int = 0, episode: int = 0, threshold: float = 0.5) -> tuple[int, np.ndarray]:
    """The cut of one episode under ``protocol`` (``revisit`` | ``explore`` | ``uniform``) and the
    observed fraction of the frames after it (coarse for ``revisit`` and ``uniform``; the benchmark
    recomputes the exact one for its labels). ``depth`` ``(T+1, h, w)``, ``poses`` ``(T+1, 4, 4)``,
    ``K`` ``(3, 3)``; ``seed`` and ``episode`` only matter for ``uniform``, ``threshold`` for ``explore``."""
    CutConfig(protocol=protocol, step=step, seed=seed, revisit_threshold=threshold).validate()
    if protocol == "revisit":
        return revisit_cut(depth, poses, K, horizon, min_history, step)
    if protocol == "explore":
        return explore_cut(depth, poses, K, horizon, min_history, step, threshold)
    t = uniform_cut(len(depth), horizon, min_history, step, seed, episode)
    return t, _coarse_observed(depth, poses, K, t, horizon)


__all__ = ["CUT_PROTOCOLS", "CutConfig", "choose_cut", "cut_candidates", "explore_cut", "revisit_cut", "uniform_cut"]
