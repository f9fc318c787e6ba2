"""Paired comparisons of planning rows over the same tasks (issue #13's targets), with a bootstrap
over tasks: success-rate differences in points and the ratio to the oracle.

Reads the per-episode JSON of one or more ``pewm plan --out`` directories (rows may come from
different runs of the same tasks), pairs episodes by task and seed, and resamples tasks with
replacement (``--draws``, seed 0) for 95 % percentile intervals.

    python benchmarks/plan_compare.py OUT1 [OUT2 ...] \\
        [--pair cem/voxel-render:cem/none ...] [--ratio cem/voxel-render:cem/oracle ...] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _results import write_results


def load_success(outs: list[str]) -> dict[str, dict[tuple[str, int], float]]:
    """``row -> {(task_id, seed): success}`` from ``OUT/episodes/<row>/*.json``."""
    rows: dict[str, dict[tuple[str, int], float]] = {}
    for out in outs:
        eps = Path(out) / "episodes"
        if not eps.is_dir():
            raise SystemExit(f"{out}: no episodes/ folder (not a pewm plan --out directory)")
        for f in sorted(eps.glob("*/*.json")):
            e = json.loads(f.read_text())
            rows.setdefault(e["row"], {})[(e["task_id"], int(e["seed"]))] = float(e["success"])
    return rows


def paired(rows, a: str, b: str, draws: int, ratio: bool, rng: np.random.Generator) -> dict:
    for r in (a, b):
        if r not in rows:
            raise SystemExit(f"row {r!r} not found; rows: {sorted(rows)}")
    keys = sorted(set(rows[a]) & set(rows[b]))
    if not keys:
        raise SystemExit(f"rows {a!r} and {b!r} share no (task, seed)")
    x = np.array([rows[a][k] for k in keys])
    y = np.array([rows[b][k] for k in keys])
    idx = rng.integers(0, len(keys), (draws, len(keys)))
    xs, ys = x[idx].mean(1), y[idx].mean(1)
    if ratio:
        ok = ys > 0
        value = float(x.mean() / y.mean()) if y.mean() > 0 else float("nan")
        lo, hi = np.percentile(xs[ok] / ys[ok], [2.5, 97.5]) if ok.any() else (float("nan"),) * 2
    else:
        value = float(100 * (x.mean() - y.mean()))
        lo, hi = np.percentile(100 * (xs - ys), [2.5, 97.5])
    return {"a": a, "b": b, "kind": "ratio" if ratio else "points", "value": value, "ci95": [float(lo), float(hi)],
            "episodes": len(keys)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outs", nargs="+", help="pewm plan --out directories")
    ap.add_argument("--pair", action="append", default=[], help="A:B, success of A minus B in points")
    ap.add_argument("--ratio", action="append", default=[], help="A:B, success of A over B")
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--out", default="benchmarks/results/plan_compare.json")
    args = ap.parse_args()
    pairs = args.pair or ["cem/voxel-render:cem/none", "rank/voxel-render:rank/none",
                          "cem/voxel-render:rank/voxel-render", "cem/voxel-render:cem/map-only",
                          "cem/oracle:cem/map-only"]
    ratios = args.ratio or ["cem/voxel-render:cem/oracle"]
    rows = load_success(args.outs)
    rng = np.random.default_rng(0)
    results = []
    for spec, ratio in [(p, False) for p in pairs] + [(r, True) for r in ratios]:
        if spec.count(":") != 1:
            raise SystemExit(f"--pair/--ratio {spec!r}: expected A:B")
        a, b = spec.split(":")
        if a not in rows or b not in rows:
            print(f"{spec}: skipped (rows present: {sorted(rows)})")
            continue
        r = paired(rows, a, b, args.draws, ratio, rng)
        results.append(r)
        unit = "x" if ratio else " points"
        print(f"{a} vs {b}: {r['value']:+.2f}{unit} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] ({r['episodes']} episodes)")
    write_results(args.out, {"outs": args.outs, "draws": args.draws, "comparisons": results})


if __name__ == "__main__":
    main()
