"""Candidate action sequences for the planners: uniform random, or a learned goal-free prior.

arXiv 2505.05495 §4.2 (Table 2) ranks N = 8 or 16 action sequences proposed by a goal-free
navigation policy (NoMaD); its policy weights are not available here, so pewm's stand-in is
:class:`ActionPrior`, an order-``m`` Markov chain over the discrete actions (0 forward, 1 turn left,
2 turn right; :class:`~pewm.geometry.Action`) fitted to the training episodes' action sequences with
add-``alpha`` smoothing. It knows nothing of the goal: it proposes the kind of walks the data holds
(mostly forward runs, turns that persist) instead of uniform noise, which mostly turns on the spot.

Sequences are ``(n, k)`` int64 arrays; ``seqs[i, t]`` is the ``t``-th action of candidate ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pewm.data import open_dataset
from pewm.geometry import Action

NUM_ACTIONS = len(Action)
_START = NUM_ACTIONS  # context symbol "no action yet" (the start of a sequence)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                         f"got {type(rng).__name__}")
    return rng


def _check_nk(n, k) -> tuple[int, int]:
    for name, v in (("n", n), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} (number of {'sequences' if name == 'n' else 'actions per sequence'}) "
                             f"must be a positive integer, got {v!r}")
    return int(n), int(k)


def check_sequences(seqs, name: str = "sequences") -> np.ndarray:
    """``seqs`` as an ``(n, k)`` int64 array of valid action ids (``(k,)`` becomes ``(1, k)``)."""
    a = np.asarray(seqs)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must be an (n, k) array of action ids with n, k >= 1, got shape {a.shape}")
    try:
        return Action.check(a)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def uniform_proposals(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``(n, k)`` int64 action sequences, every action uniform over the 3 discrete actions (the
    proposal of CEM's first iteration, §5.1 Fig. 6a, and the simplest ranking proposal)."""
    n, k = _check_nk(n, k)
    return _check_rng(rng).integers(0, NUM_ACTIONS, size=(n, k), dtype=np.int64)


def sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of ``probs`` ``(..., A)`` (each row a distribution): ``(...)`` int64."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1])[..., None] * cdf[..., -1:]
    return np.minimum((u >= cdf).sum(-1), probs.shape[-1] - 1).astype(np.int64)


@dataclass
class ActionPrior:
    """A goal-free prior over action sequences: an order-``order`` Markov chain over the 3 actions.

    ``counts[c_1, ..., c_order, a]`` counts action ``a`` after the context ``c_1 .. c_order`` (the
    previous actions, oldest first; index 3 = "before the sequence started"); probabilities are
    add-``alpha`` smoothed, so every action keeps a non-zero probability. Fit with :meth:`fit`,
    draw with :meth:`sample`, score with :meth:`log_prob`, save with :meth:`to_dict`.
    """

    counts: np.ndarray
    order: int = 2
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.order, bool) or not isinstance(self.order, (int, np.integer)) or self.order < 0:
            raise ValueError(f"ActionPrior.order must be an integer >= 0, got {self.order!r}")
        self.order = int(self.order)
        if not (isinstance(self.alpha, (int, float, np.floating)) and self.alpha > 0):
            raise ValueError(f"ActionPrior.alpha (add-alpha smoothing) must be > 0, got {self.alpha!r}")
        self.alpha = float(self.alpha)
        c = np.asarray(self.counts, dtype=np.float64)
        want = (NUM_ACTIONS + 1,) * self.order + (NUM_ACTIONS,)
        if c.shape != want:
            raise ValueError(f"ActionPrior.counts has shape {c.shape}, expected {want} for order {self.order}")
        if not np.all(np.isfinite(c)) or (c < 0).any():
            raise ValueError("ActionPrior.counts must be finite and non-negative")
        self.counts = c

    # -- fit --------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, sequences, order: int = 2, alpha: float = 1.0) -> "ActionPrior":
        """Count the transitions of ``sequences`` (a list of 1-D action arrays of any lengths;
        empty ones are skipped). Raises ``ValueError`` when there is no action at all."""
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
            raise ValueError(f"order must be an integer >= 0, got {order!r}")
        counts = np.zeros((NUM_ACTIONS + 1,) * int(order) + (NUM_ACTIONS,))
        total = 0
        for i, seq in enumerate(sequences):
            a = np.asarray(seq)
            if a.ndim != 1:
                raise ValueError(f"sequences[{i}] must be a 1-D array of action ids, got shape {a.shape}")
            if a.size == 0:
                continue
            try:
                a = Action.check(a)
            except ValueError as e:
                raise ValueError(f"sequences[{i}]: {e}") from None
            padded = np.concatenate([np.full(order, _START, np.int64), a])
            ctx = [padded[j : j + len(a)] for j in range(order)]
            np.add.at(counts, (*ctx, a), 1.0)
            total += a.size
        if total == 0:
            raise ValueError("ActionPrior.fit: no actions to fit (every sequence is empty, or none given)")
        return cls(counts, int(order), alpha)

    # -- probabilities ------------------------------------------------------------------------------
    @property
    def probs(self) -> np.ndarray:
        """``P(a | context)`` with add-``alpha`` smoothing, same shape as ``counts``."""
        c = self.counts + self.alpha
        return c / c.sum(-1, keepdims=True)

    def _contexts(self, history, n: int) -> np.ndarray:
        """``(n, order)`` start contexts: the last ``order`` actions of ``history`` (padded with the
        start symbol when shorter), the same for every row."""
        h = np.zeros(0, np.int64) if history is None else Action.check(np.asarray(history).reshape(-1))
        ctx = np.concatenate([np.full(self.order, _START, np.int64), h])[len(h):] if self.order else h[:0]
        return np.broadcast_to(ctx, (n, self.order)).copy()

    def sample(self, rng: np.random.Generator, n: int, k: int, history=None) -> np.ndarray:
        """``(n, k)`` int64 sequences drawn from the chain; ``history``: actions already executed
        (their last ``order`` condition the first draws; default: a fresh start)."""
        n, k = _check_nk(n, k)
        rng = _check_rng(rng)
        p = self.probs
        ctx = self._contexts(history, n)
        out = np.empty((n, k), np.int64)
        for t in range(k):
            out[:, t] = sample_rows(rng, np.broadcast_to(p[tuple(ctx.T)], (n, NUM_ACTIONS)))
            if self.order:
                ctx = np.concatenate([ctx[:, 1:], out[:, t : t + 1]], axis=1)
        return out

    def log_prob(self, seqs, history=None) -> np.ndarray:
        """``(n,)`` log-probability of each sequence of ``seqs`` ``(n, k)`` (or ``(k,)``) under the chain."""
        s = check_sequences(seqs, "seqs")
        n, k = s.shape
        logp = np.log(self.probs)
        full = np.concatenate([self._contexts(history, n), s], axis=1)
        out = np.zeros(n)
        for t in range(k):
            out += logp[(*full[:, t : t + self.order].T, s[:, t])]
        return out

    # -- save ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"order": self.order, "alpha": self.alpha, "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ActionPrior":
        if not isinstance(d, dict):
            raise ValueError(f"ActionPrior.from_dict needs a dict, got {type(d).__name__}")
        unknown, missing = sorted(set(d) - {"order", "alpha", "counts"}), sorted({"order", "counts"} - set(d))
        if unknown or missing:
            raise ValueError(f"ActionPrior.from_dict: unknown key(s) {unknown}, missing key(s) {missing}")
        return cls(np.asarray(d["counts"], dtype=np.float64), d["order"], d.get("alpha", 1.0))


def episode_actions(path) -> np.ndarray | None:
    """The action array of one episode file (only that member is decompressed: an episode file is a
    plain ``numpy.load``-able npz, ``docs/data-format.md``); None for a recording without actions."""
    with np.load(Path(path), allow_pickle=False) as z:
        a = z["actions"] if "actions" in z.files else np.zeros(0, np.int64)
    return Action.check(a) if a.size else None


def fit_prior_from_dataset(dataset_dir, split: str = "train", max_episodes: int | None = None,
                           order: int = 2, alpha: float = 1.0) -> ActionPrior:
    """:meth:`ActionPrior.fit` on the action sequences of the ``split`` episodes of a dataset (the
    first ``max_episodes`` by index, all by default); episodes without actions are skipped."""
    if max_episodes is not None and (isinstance(max_episodes, bool) or not isinstance(max_episodes, int)
                                     or max_episodes < 1):
        raise ValueError(f"max_episodes must be a positive integer or None, got {max_episodes!r}")
    ds = open_dataset(dataset_dir)
    paths = ds.episode_paths(split)
    if max_episodes is not None:
        paths = paths[:max_episodes]
    seqs = [a for a in (episode_actions(p) for p in paths) if a is not None]
    if not seqs:
        raise ValueError(f"{ds.root}: no {split!r} episode with actions to fit an action prior to "
                         f"({len(paths)} episode(s) read)")
    return ActionPrior.fit(seqs, order=order, alpha=alpha)


__all__ = [
    "NUM_ACTIONS",
    "ActionPrior",
    "check_sequences",
    "episode_actions",
    "fit_prior_from_dataset",
    "sample_rows",
    "uniform_proposals",
]
