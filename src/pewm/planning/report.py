"""The planning table (``pewm plan``'s printout and ``docs/results.md``), as Markdown."""

from __future__ import annotations

import math

COLUMNS = (("success", "success %", 1), ("spl", "SPL", 3), ("final_dist_m", "final dist m", 2), ("ate_m", "ATE m", 2),
           ("rpe_m", "RPE m", 3), ("sim", "SIM", 1), ("seconds_per_decision", "s / decision", 1))


def _cell(v: dict, digits: int) -> str:
    m, s = v.get("mean", math.nan), v.get("std", math.nan)
    if m is None or not math.isfinite(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s is not None and math.isfinite(s) else f"{m:.{digits}f}"


def plan_table(summary: dict) -> str:
    """One row per planner × world: mean ± std over seeds, the success rate's 95 % bootstrap
    interval over episodes, and (the ``map`` cost) how often the goal was registered in the memory."""
    head = ["row", *[c[1] for c in COLUMNS], "success 95% CI (episodes)", "goal found in memory %", "episodes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in summary["rows"].items():
        lo, hi = r.get("success_ci95_over_episodes", (math.nan, math.nan))
        ci = f"{lo:.0f}–{hi:.0f}" if math.isfinite(lo) else "–"
        cells = [_cell(r[k], d) for k, _, d in COLUMNS]
        found = r.get("goal_found_pct")  # the map cost only
        found = "–" if found is None else f"{found:.0f}"
        lines.append("| " + " | ".join([name, *cells, ci, found, str(sum(r["episodes_per_seed"]))]) + " |")
    return "\n".join(lines)


__all__ = ["plan_table"]
