"""Planners toward a goal image: trajectory ranking, the cross-entropy method, and the random baseline.

arXiv 2505.05495 §4.2 (Table 2): sample ``N`` = 8 or 16 candidate action sequences, imagine each
with the world model, score the last imagined frame against the goal image, execute the best
(:func:`rank`). §5.1 (Fig. 6a), model-predictive control with the cross-entropy method: start from
the uniform distribution over the discrete actions at every step, sample ``N`` = 60 sequences,
imagine them, keep the top 30 %, refit the per-step categorical, iterate (:func:`cem`); the caller
executes the first chunk for real, fuses the real frames into the memory
(:meth:`~pewm.planning.worlds.World.observe`) and re-plans. :func:`random_choice` picks a proposal
without imagination (the lower bound).

Each planner is a function of its inputs only (a :class:`~pewm.planning.worlds.World`, a goal cost
of :mod:`pewm.planning.costs`, the goal RGB-D, and a ``numpy.random.Generator``): no globals. The
world works on imagination (:class:`~pewm.planning.worlds.ModelWorld`) or on the simulator
(:class:`~pewm.planning.worlds.SimulatorWorld`, the oracle) alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from pewm.planning.proposals import NUM_ACTIONS, ActionPrior, check_sequences, sample_rows, uniform_proposals
from pewm.planning.worlds import Imagined

PROPOSALS = ("uniform", "prior")


def _positive_int(owner: str, name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {v!r}")


# -- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Compute allowed per decision: at most ``max_candidates`` imagined sequences and/or
    ``max_seconds`` of planning (checked between CEM iterations: once spent, the CEM stops
    iterating and returns its best so far; ranking imagines its proposals in one call and only
    truncates them to ``max_candidates``). None = no limit."""

    max_candidates: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_candidates is not None:
            _positive_int("Budget", "max_candidates", self.max_candidates)
        if self.max_seconds is not None and not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise ValueError(f"Budget.max_seconds must be a number > 0 or None, got {self.max_seconds!r}")


@dataclass(frozen=True)
class RankConfig:
    """Trajectory ranking (§4.2, Table 2): ``n`` proposals (8 or 16 in the paper) of ``horizon``
    actions each (one chunk = 8 frames), drawn from ``proposal`` (``uniform`` or the learned
    ``prior``, :class:`~pewm.planning.proposals.ActionPrior`)."""

    n: int = 16
    horizon: int = 8
    proposal: str = "uniform"
    budget: Budget = field(default_factory=Budget)

    def __post_init__(self) -> None:
        _positive_int("RankConfig", "n", self.n)
        _positive_int("RankConfig", "horizon", self.horizon)
        if self.proposal not in PROPOSALS:
            raise ValueError(f"RankConfig.proposal must be one of {PROPOSALS}, got {self.proposal!r}")


@dataclass(frozen=True)
class CEMConfig:
    """The cross-entropy method (§5.1, Fig. 6a): ``n`` = 60 sequences of ``horizon`` actions per
    iteration, the best ``elite_frac`` = 30 % refit the per-step categorical, ``iterations`` times.

    ``smoothing``: the refit keeps this share of the previous distribution (0 = the paper's plain
    refit); ``min_prob``: every action keeps at least this probability at every step (the refit is
    mixed with the uniform distribution; 0 lets an action die out)."""

    n: int = 60
    horizon: int = 8
    elite_frac: float = 0.3
    iterations: int = 3
    smoothing: float = 0.0
    min_prob: float = 0.02
    budget: Budget = field(default_factory=Budget)

    def __post_init__(self) -> None:
        for name in ("n", "horizon", "iterations"):
            _positive_int("CEMConfig", name, getattr(self, name))
        if not 0.0 < self.elite_frac <= 1.0:
            raise ValueError(f"CEMConfig.elite_frac must be in (0, 1], got {self.elite_frac!r}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"CEMConfig.smoothing must be in [0, 1), got {self.smoothing!r}")
        if not 0.0 <= self.min_prob <= 1.0 / NUM_ACTIONS:
            raise ValueError(f"CEMConfig.min_prob must be in [0, 1/{NUM_ACTIONS}], got {self.min_prob!r}")

    @property
    def num_elites(self) -> int:
        """Elites kept per iteration: ``round(elite_frac * n)``, at least 1 (18 of 60)."""
        return max(1, int(round(self.elite_frac * self.n)))


@dataclass(frozen=True)
class StopRule:
    """The planner decides it has arrived: the cost of the current real observation against the
    goal is below ``threshold`` (None: never stop early, the step budget ends the episode). With the
    ``map`` cost the threshold is in metres still to go (path plus turns)."""

    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"StopRule.threshold must be a finite number or None, got {self.threshold!r}")

    def check(self, world, cost_fn, goal_rgb, goal_depth) -> tuple[bool, float]:
        """``(stop, cost)`` for the world's current observation (cost NaN when there is no threshold).
        A cost with a ``pose_cost(pose)`` method (the ``map`` cost: metres still to go) is asked
        about the current pose; NaN from it (no map) never stops."""
        if self.threshold is None:
            return False, float("nan")
        cur = world.current
        if hasattr(cost_fn, "pose_cost"):
            c = float(cost_fn.pose_cost(cur.pose))
        else:
            c = float(cost_fn(cur.rgb[None], cur.depth[None], goal_rgb, goal_depth)[0])
        return bool(c < self.threshold), c


# -- the result of one decision -------------------------------------------------------------------------


@dataclass
class Decision:
    """One planning decision.

    ``actions`` ``(k,)``: the sequence to execute (its first chunk, in MPC); ``candidates``
    ``(M, k)`` every sequence scored (over all CEM iterations) and ``costs`` ``(M,)`` their costs
    (NaN for :func:`random_choice`); ``best`` the index of ``actions`` in ``candidates``;
    ``imagined`` the frames of the best candidate (batch of 1; None without imagination);
    ``candidate_poses`` ``(M, k, 4, 4)`` where each candidate was imagined to go (top-down maps);
    ``history`` the best cost so far after each iteration; ``probs`` the final CEM distribution
    ``(k, 3)``; ``seconds`` of planning; ``imagined_count`` = sequences imagined.
    """

    method: str
    actions: np.ndarray
    candidates: np.ndarray
    costs: np.ndarray
    best: int
    imagined: Imagined | None
    seconds: float
    imagined_count: int
    iterations: int = 1
    candidate_poses: np.ndarray | None = None
    history: list[float] = field(default_factory=list)
    probs: np.ndarray | None = None

    @property
    def best_cost(self) -> float:
        return float(self.costs[self.best])


# -- small pure steps ---------------------------------------------------------------------------------


def make_proposals(config: RankConfig, rng: np.random.Generator, prior: ActionPrior | None = None,
                   history=None) -> np.ndarray:
    """``(config.n, config.horizon)`` proposals from ``config.proposal`` (``prior`` needs the fitted
    :class:`ActionPrior`; ``history``: actions already executed, the prior's context)."""
    if config.proposal == "uniform":
        return uniform_proposals(rng, config.n, config.horizon)
    if not isinstance(prior, ActionPrior):
        raise ValueError("RankConfig.proposal='prior' needs a fitted ActionPrior (fit_prior_from_dataset)")
    return prior.sample(rng, config.n, config.horizon, history=history)


def last_frame_costs(imagined: Imagined, cost_fn, goal_rgb, goal_depth) -> np.ndarray:
    """``(N,)`` cost of each candidate's LAST imagined frame against the goal (§4.2); a cost with a
    ``trajectory_costs(imagined)`` method (the ``map`` cost, :mod:`pewm.planning.map_cost`) scores
    the whole imagined candidate instead."""
    if hasattr(cost_fn, "trajectory_costs"):
        c = np.asarray(cost_fn.trajectory_costs(imagined), dtype=np.float64)
    else:
        c = np.asarray(cost_fn(imagined.last_rgb, imagined.last_depth, goal_rgb, goal_depth), dtype=np.float64)
    if c.shape != (len(imagined),):
        name = getattr(cost_fn, "name", cost_fn)
        raise ValueError(f"cost {name!r} returned shape {c.shape}, expected ({len(imagined)},)")
    return np.where(np.isnan(c), np.inf, c)


def uniform_probs(k: int) -> np.ndarray:
    """``(k, 3)``: the uniform distribution over the actions at every step (CEM's start, §5.1)."""
    return np.full((k, NUM_ACTIONS), 1.0 / NUM_ACTIONS)


def sample_sequences(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """``(n, k)`` int64 sequences, step ``t`` drawn independently from ``probs[t]``."""
    return sample_rows(rng, np.broadcast_to(probs, (n, *probs.shape)))


def refit(elites: np.ndarray, previous: np.ndarray, smoothing: float = 0.0, min_prob: float = 0.0) -> np.ndarray:
    """The per-step categorical of the ``elites`` ``(E, k)`` (action frequencies per step), kept
    ``smoothing`` of the way at ``previous`` ``(k, 3)`` and mixed with the uniform distribution so
    that every probability is at least ``min_prob``. Each row sums to 1."""
    freq = np.stack([np.bincount(col, minlength=NUM_ACTIONS) for col in elites.T]).astype(np.float64)
    p = (1.0 - smoothing) * freq / freq.sum(1, keepdims=True) + smoothing * previous
    return min_prob + (1.0 - NUM_ACTIONS * min_prob) * p


def _world_poses(imagined: Imagined) -> np.ndarray:
    return np.asarray(imagined.poses, dtype=np.float64)


# -- the planners -------------------------------------------------------------------------------------


def rank(world, cost_fn, goal_rgb, goal_depth, proposals, budget: Budget | None = None) -> Decision:
    """Trajectory ranking (§4.2, Table 2): imagine all ``proposals`` ``(N, k)`` in one call, cost =
    last imagined frame vs the goal, pick the argmin (the first on ties). ``budget.max_candidates``
    keeps only that many proposals."""
    t0 = time.perf_counter()
    props = check_sequences(proposals, "proposals")
    if budget is not None and budget.max_candidates is not None:
        props = props[: budget.max_candidates]
    im = world.imagine(props)
    costs = last_frame_costs(im, cost_fn, goal_rgb, goal_depth)
    best = int(np.argmin(costs))
    return Decision("rank", props[best].copy(), props, costs, best, im.select(best), time.perf_counter() - t0,
                    len(props), 1, _world_poses(im), [float(costs[best])])


def cem(world, cost_fn, goal_rgb, goal_depth, config: CEMConfig, rng: np.random.Generator,
        init_probs: np.ndarray | None = None) -> Decision:
    """The cross-entropy method (§5.1, Fig. 6a): from ``init_probs`` ``(k, 3)`` (default: uniform at
    every step) sample ``config.n`` sequences, imagine them, keep the ``num_elites`` cheapest,
    refit, repeat ``config.iterations`` times (fewer when ``config.budget`` runs out). Returns the
    best sequence seen in any iteration; ``history`` never increases."""
    if not isinstance(config, CEMConfig):
        raise ValueError(f"cem needs a CEMConfig, got {type(config).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    t0 = time.perf_counter()
    k = config.horizon
    probs = uniform_probs(k) if init_probs is None else np.asarray(init_probs, dtype=np.float64)
    if probs.shape != (k, NUM_ACTIONS) or (probs < 0).any() or not np.allclose(probs.sum(1), 1.0):
        raise ValueError(f"init_probs must be ({k}, {NUM_ACTIONS}) rows of probabilities, got shape {probs.shape}")
    budget = config.budget
    seqs_all, costs_all, poses_all, history = [], [], [], []
    best_cost, best_im, count, it = np.inf, None, 0, 0
    while it < config.iterations:
        if it and budget.max_seconds is not None and time.perf_counter() - t0 >= budget.max_seconds:
            break
        n = config.n if budget.max_candidates is None else min(config.n, budget.max_candidates - count)
        if n < 1:
            break
        seqs = sample_sequences(rng, probs, n)
        im = world.imagine(seqs)
        costs = last_frame_costs(im, cost_fn, goal_rgb, goal_depth)
        i = int(np.argmin(costs))
        if costs[i] < best_cost:
            best_cost, best_im = float(costs[i]), im.select(i)
        seqs_all.append(seqs)
        costs_all.append(costs)
        poses_all.append(_world_poses(im))
        history.append(best_cost)
        count, it = count + n, it + 1
        elites = seqs[np.argsort(costs, kind="stable")[: max(1, int(round(config.elite_frac * n)))]]
        probs = refit(elites, probs, config.smoothing, config.min_prob)
    candidates, costs = np.concatenate(seqs_all), np.concatenate(costs_all)
    best = int(np.argmin(costs))
    return Decision("cem", candidates[best].copy(), candidates, costs, best, best_im, time.perf_counter() - t0,
                    count, it, np.concatenate(poses_all), history, probs)


def random_choice(rng: np.random.Generator, proposals) -> Decision:
    """The lower-bound baseline: one of ``proposals`` ``(N, k)`` picked at random, without imagination."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    t0 = time.perf_counter()
    props = check_sequences(proposals, "proposals")
    best = int(rng.integers(len(props)))
    return Decision("random", props[best].copy(), props, np.full(len(props), np.nan), best, None,
                    time.perf_counter() - t0, 0, 0)


def shift_probs(probs: np.ndarray, executed: int) -> np.ndarray:
    """Warm start for the next MPC decision: drop the ``executed`` steps already carried out and
    append uniform steps (pass as ``init_probs``; the paper restarts from uniform, the default)."""
    k = probs.shape[0]
    e = min(max(int(executed), 0), k)
    return np.concatenate([probs[e:], uniform_probs(e)]) if e else probs.copy()


__all__ = [
    "PROPOSALS",
    "Budget",
    "CEMConfig",
    "Decision",
    "RankConfig",
    "StopRule",
    "cem",
    "last_frame_costs",
    "make_proposals",
    "random_choice",
    "rank",
    "refit",
    "sample_sequences",
    "shift_probs",
    "uniform_probs",
]
