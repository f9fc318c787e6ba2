"""Goal-reaching metrics (arXiv 2505.05495 §4.2, Table 2 reports ATE, RPE and SIM; the paper does
not give their formulas, so pewm defines them here, and ``docs/results.md`` repeats them).

For one episode, with the executed path ``P`` (agent positions after every action, start first), the
reference path ``R`` (the free-space shortest path from the start to the goal), the final pose error
``d`` (metres) and ``a`` (degrees) against the goal pose:

* **success**: ``d <= success_dist_m`` and ``a <= success_deg`` (:func:`pewm.planning.tasks.is_success`);
* **SPL** (Anderson et al. 2018): ``success * L(R) / max(L(P), L(R))``;
* **final distance**: ``d``;
* **ATE**: the RMS distance between ``P`` and ``R``, both resampled to :data:`RESAMPLE` points evenly
  spaced along their length (how far the path strays from the shortest one);
* **RPE**: the mean norm of the difference between consecutive displacements of the two resampled
  paths (local direction errors, insensitive to a constant offset);
* **SIM**: ``100 * exp(-d / 1 m) * (1 + cos a) / 2``: 100 at the goal pose, 50 when facing away
  at the goal position, ~37 one metre off facing the right way.
"""

from __future__ import annotations

import math

import numpy as np

RESAMPLE = 32


def path_length(xy) -> float:
    """Length of a polyline ``(n, 2)`` in metres."""
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0


def resample_path(xy, n: int = RESAMPLE) -> np.ndarray:
    """``n`` points evenly spaced along the polyline ``xy`` (a point path repeats its point)."""
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        raise ValueError("resample_path: empty path")
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return np.repeat(p[:1], n, axis=0)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, p[:, 0]), np.interp(t, s, p[:, 1])], axis=1)


def ate(executed_xy, reference_xy, n: int = RESAMPLE) -> float:
    """RMS distance between the two paths resampled by arc length (metres)."""
    a, b = resample_path(executed_xy, n), resample_path(reference_xy, n)
    return float(np.sqrt(((a - b) ** 2).sum(1).mean()))


def rpe(executed_xy, reference_xy, n: int = RESAMPLE) -> float:
    """Mean norm of the difference of consecutive displacements of the resampled paths (metres)."""
    a, b = resample_path(executed_xy, n), resample_path(reference_xy, n)
    return float(np.linalg.norm(np.diff(a, axis=0) - np.diff(b, axis=0), axis=1).mean())


def sim_score(dist_m: float, angle_deg: float) -> float:
    """``100 * exp(-d) * (1 + cos a) / 2`` (see the module doc)."""
    return float(100.0 * math.exp(-max(dist_m, 0.0)) * (1.0 + math.cos(math.radians(angle_deg))) / 2.0)


def spl(success: bool, shortest_m: float, executed_m: float) -> float:
    """Success weighted by (normalised inverse) path length."""
    if not success:
        return 0.0
    return float(shortest_m / max(executed_m, shortest_m, 1e-9))


def episode_metrics(executed_xy, reference_xy, dist_m: float, angle_deg: float, success: bool,
                    shortest_m: float) -> dict:
    """All metrics of one episode (see the module doc)."""
    length = path_length(executed_xy)
    return {
        "success": bool(success),
        "spl": spl(success, shortest_m, length),
        "final_dist_m": float(dist_m),
        "final_angle_deg": float(angle_deg),
        "ate_m": ate(executed_xy, reference_xy),
        "rpe_m": rpe(executed_xy, reference_xy),
        "sim": sim_score(dist_m, angle_deg),
        "path_m": length,
    }


METRICS = ("success", "spl", "final_dist_m", "ate_m", "rpe_m", "sim", "seconds_per_decision")


def summarize(per_seed: dict[int, list[dict]], keys=METRICS) -> dict:
    """Mean over episodes for each seed, then mean and std over seeds (``{key: {mean, std, per_seed}}``;
    success as a rate in %), and the number of episodes per seed."""
    out: dict = {}
    seeds = sorted(per_seed)
    for k in keys:
        vals = []
        for s in seeds:
            xs = [float(e[k]) for e in per_seed[s] if e.get(k) is not None and np.isfinite(float(e[k]))]
            v = float(np.mean(xs)) if xs else float("nan")
            vals.append(100.0 * v if k == "success" else v)
        arr = np.asarray(vals, dtype=np.float64)
        out[k] = {"mean": float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan"),
                  "std": float(np.nanstd(arr)) if np.isfinite(arr).any() else float("nan"),
                  "per_seed": vals}
    out["episodes_per_seed"] = [len(per_seed[s]) for s in seeds]
    return out


def bootstrap_success(successes, iterations: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval (over episodes) of a success rate in %."""
    x = np.asarray(successes, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (iterations, x.size))].mean(1) * 100.0
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


__all__ = ["METRICS", "RESAMPLE", "ate", "bootstrap_success", "episode_metrics", "path_length", "resample_path", "rpe",
           "sim_score", "spl", "summarize"]
