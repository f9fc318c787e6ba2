"""Split-level statistics that copying or blur cannot win, with uncertainty over episodes (issue #12).

:func:`pewm.eval.report.aggregate` gives Table 1's numbers: per seed the mean over a split's frames
of each per-frame metric, then mean ± std over sampling seeds. Two things it cannot show:

* **A mean of PSNRs is dominated by copies.** A pixel-identical frame scores 100 dB
  (:data:`~pewm.eval.metrics.PSNR_MAX_DB`), so one copied frame among 30 adds 2-3 dB to a split's
  mean. ``psnr_mse`` is the PSNR of the split's **mean MSE**, ``10 log10(1 / mean(mse))``, where that
  frame adds 0 to the mean instead; both are reported.
* **Seeds are not the uncertainty that matters.** The std over sampling seeds says nothing about
  how much the number depends on which 16 episodes were drawn. A **bootstrap over episodes**
  resamples the evaluated episodes with replacement (``draws`` times, seeded), recomputes each
  statistic on every draw (the mean over seeds of the per-seed statistic, as for the point value)
  and reports the central ``level`` percentile interval. Differences between modes ("gain of a mode
  over ``none`` / ``render-only``") are **paired**: both modes are scored on the same draws.

Statistics (:data:`STATS`; each a function of per-episode sums, so a draw costs one matrix product):
``psnr`` (mean of per-frame PSNR: today's number), ``psnr_mse`` and ``sharpness`` (the mean
image-gradient magnitude of the generated frames over the ground truth's,
:func:`~pewm.eval.metrics.sharpness`; a ratio of means, < 1 = blurrier).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pewm.eval.metrics import PSNR_MAX_DB

STATS = ("psnr", "psnr_mse", "sharpness")
GAIN_STATS = ("psnr", "psnr_mse")
GAIN_BASELINES = ("none", "render-only")
"""Every other mode's gain is reported over each of these that the run evaluated."""

_MSE_FLOOR = 10.0 ** (-PSNR_MAX_DB / 10.0)
# per statistic: the per-frame quantities summed per episode (numerator, denominator; "count" =
# number of frames), and how the two totals give the value
_SUMS = {"psnr": ("psnr", "count"), "psnr_mse": ("count", "mse"), "sharpness": ("grad_pred", "grad_gt")}


def _value(stat: str, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if stat == "psnr_mse":  # num = frames, den = summed MSE
            return np.where(num > 0, 10.0 * np.log10(1.0 / np.maximum(den / np.where(num > 0, num, 1), _MSE_FLOOR)),
                            np.nan)
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


@dataclass
class BootstrapConfig:
    """``draws`` resamples of the episodes (0: no intervals), central interval ``level``, ``seed``."""

    draws: int = 2000
    level: float = 0.95
    seed: int = 0

    def validate(self) -> "BootstrapConfig":
        if self.draws < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {self.draws}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"BootstrapConfig.level must be in (0, 1), got {self.level}")
        return self


def _episode_sums(per_seed, masks, episode_of_frame, n_episodes, mode, cls) -> dict[str, dict[str, np.ndarray]]:
    """``{stat: {"num", "den", "frames"}}`` with ``(seeds, episodes)`` sums over the frames of ``cls``."""
    ep = np.asarray(episode_of_frame, dtype=np.int64)
    out = {s: {k: np.zeros((len(per_seed), n_episodes)) for k in ("num", "den", "frames")} for s in STATS}
    for i, (seed, rv) in enumerate(zip(per_seed, masks)):
        rv = np.asarray(rv[mode] if isinstance(rv, Mapping) else rv, dtype=bool)
        sel = {"revisit": rv, "novel": ~rv, "all": np.ones_like(rv)}[cls]
        rec = seed[mode]
        for stat in STATS:
            a, b = _SUMS[stat]
            need = [q for q in (a, b) if q != "count"]
            if any(rec.get(q) is None for q in need):
                continue  # a record without these quantities: the statistic has no frames
            cols = {q: np.asarray(rec[q], np.float64) for q in need}
            ok = sel.copy()
            for v in cols.values():
                ok &= np.isfinite(v)
            for key, q in (("num", a), ("den", b)):
                v = np.ones(ok.sum()) if q == "count" else cols[q][ok]
                out[stat][key][i] = np.bincount(ep[ok], weights=v, minlength=n_episodes)
            out[stat]["frames"][i] = np.bincount(ep[ok], minlength=n_episodes)
    return out


def _seed_mean(stat: str, num: np.ndarray, den: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``(..., seeds)`` totals -> ``(...,)`` mean over the seeds with frames (NaN without any)."""
    v = np.where(frames > 0, _value(stat, num, den), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": a draw without such frames
        return np.nanmean(v, axis=-1)


def _interval(draws: np.ndarray, level: float) -> list | None:
    d = draws[np.isfinite(draws)]
    if d.size == 0:
        return None
    q = (1.0 - level) / 2.0
    return [float(np.quantile(d, q)), float(np.quantile(d, 1.0 - q))]


def honest_stats(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], masks: Sequence[Any], episode_of_frame,
                 n_episodes: int, bootstrap: BootstrapConfig | None = None, ddof: int = 1) -> dict:
    """``{mode: {class: {...}}}`` to merge into :func:`pewm.eval.report.aggregate`'s results:

    * ``psnr``: ``{"ci95": [lo, hi]}`` (the interval of Table 1's mean-of-PSNR; merged beside its
      mean and std),
    * ``psnr_mse``, ``sharpness``: ``{"mean", "std", "frames", "seeds", "ci95"}`` (mean ± std over
      seeds as in Table 1; ``ci95`` over episodes),
    * ``gain_over_none``, ``gain_over_render-only`` (when that mode was run, for every other mode):
      ``{"psnr" | "psnr_mse": {"mean", "ci95"}}``, this mode minus the baseline on the same draws.

    ``per_seed[i][mode]`` holds per-frame arrays ``psnr``, ``mse``, ``grad_pred``, ``grad_gt``
    (:func:`pewm.eval.benchmark.score`); ``masks[i]`` the revisit mask; ``episode_of_frame`` ``(N,)``
    each frame's episode in ``[0, n_episodes)``. ``ci95`` is ``None`` without draws or frames (the key
    keeps its name whatever ``bootstrap.level`` is; the level is in the results' metadata).
    """
    boot = (bootstrap or BootstrapConfig()).validate()
    if not per_seed:
        raise ValueError("per_seed is empty: need at least one seed")
    modes = list(per_seed[0])
    rng = np.random.default_rng(boot.seed)
    # one set of draws for every mode, class and statistic: gains are paired
    W = rng.multinomial(n_episodes, np.full(n_episodes, 1.0 / n_episodes), size=boot.draws).astype(np.float64) \
        if boot.draws and n_episodes else np.zeros((0, n_episodes))
    point, draws, out = {}, {}, {}
    for m in modes:
        out[m] = {}
        for c in ("revisit", "novel", "all"):
            sums = _episode_sums(per_seed, masks, episode_of_frame, n_episodes, m, c)
            out[m][c] = {}
            for stat in STATS:
                s = sums[stat]
                per_seed_tot = {k: s[k].sum(axis=1) for k in s}  # (seeds,)
                per_seed_val = np.where(per_seed_tot["frames"] > 0,
                                        _value(stat, per_seed_tot["num"], per_seed_tot["den"]), np.nan)
                vals = per_seed_val[np.isfinite(per_seed_val)]
                d = _seed_mean(stat, W @ s["num"].T, W @ s["den"].T, W @ s["frames"].T) if len(W) else np.zeros(0)
                point[m, c, stat], draws[m, c, stat] = (float(vals.mean()) if vals.size else None), d
                ci = _interval(d, boot.level)
                if stat == "psnr":
                    out[m][c][stat] = {"ci95": ci}
                else:
                    out[m][c][stat] = {"mean": point[m, c, stat],
                                       "std": (float(vals.std(ddof=ddof)) if len(vals) > ddof else 0.0) if vals.size
                                       else None,
                                       "frames": int(s["frames"].sum()), "seeds": int(vals.size), "ci95": ci}
    for m in modes:
        for b in GAIN_BASELINES:
            if b not in modes or b == m:
                continue
            for c in ("revisit", "novel", "all"):
                g = {}
                for stat in GAIN_STATS:
                    pm, pb = point[m, c, stat], point[b, c, stat]
                    g[stat] = {"mean": None if pm is None or pb is None else pm - pb,
                               "ci95": _interval(draws[m, c, stat] - draws[b, c, stat], boot.level)}
                out[m][c][f"gain_over_{b}"] = g
    return out


def merge_honest(results: dict, honest: Mapping) -> dict:
    """``results`` (:func:`pewm.eval.report.aggregate`) with :func:`honest_stats` merged in place:
    ``psnr`` gains ``ci95``; the other entries are added beside the Table-1 metrics."""
    for m, by_cls in honest.items():
        for c, entries in by_cls.items():
            for k, v in entries.items():
                if k in results[m][c]:
                    results[m][c][k].update(v)
                else:
                    results[m][c][k] = v
    return results


__all__ = ["GAIN_BASELINES", "GAIN_STATS", "STATS", "BootstrapConfig", "honest_stats", "merge_honest"]
