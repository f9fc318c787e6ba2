"""What does remembering its own imagination cost or buy? ``pewm eval``'s rollouts under each ``--fuse`` mode, paired.

``pewm eval --fuse MODE`` runs one fusion rule per invocation, so two runs cannot be compared
episode by episode. This script rolls the same episodes (``pewm eval``'s cuts and revisit labels,
the same noise seeds) out once per fuse mode (:data:`pewm.rollout.FUSE_MODES`: ``novel`` = imagined
once then remembered, the default; ``all`` = Algorithm 1 literally; ``none`` = never remembered) and
reports, per class of frame (novel / revisit), PSNR (mean of frames), PSNR of the mean MSE, depth
AbsRel and delta1, each mean over seeds; and for every mode the difference to ``--reference`` with a
95 % bootstrap interval over episodes (paired: both modes on the same resampled episodes).

A mode may name a fusion delay, ``MODE:D`` (``MemoryBuildConfig.imagined_fuse_delay_chunks``: a
generated chunk is fused only after D later chunks; e.g. ``novel:2``), and another model,
``MODEL_DIR@MODE[:D]`` (e.g. two trainings of the same reader, compared on the same episodes and
noise: ``--fuse novel,runs/b/model@novel``); without one it is ``--model``'s; and memory options,
``+KEY=VALUE`` (a ``MemoryBuildConfig`` field, e.g. ``novel:1+imagined_depth=box``).

    python benchmarks/fuse_compare.py --data houses160 --split val --cuts explore [--seeds 1]
        [--fuse novel,none,all,novel:2] [--reference novel] [--max-episodes 16] [--model DIR] [--threads 1]
        [--out benchmarks/results/fuse_compare.json]
"""

from __future__ import annotations

import argparse
import platform
import time

from _results import write_results

import numpy as np
import torch

from pewm.assets import load_model, resolve_model_path
from pewm.eval.benchmark import BenchmarkConfig, load_episodes, rollout_mode, score
from pewm.eval.metrics import ColorLayoutFeatures
from pewm.model import MemoryBuildConfig
from pewm.rollout import FUSE_MODES
from pewm.train.config import memory_options

CLASSES = ("novel", "revisit")
STATS = ("psnr", "psnr_mse", "absrel", "delta1")


def episode_table(episodes, generated) -> dict[str, np.ndarray]:
    """Per-episode, per-class sums ``{key: (episodes, 2)}`` (classes in :data:`CLASSES` order) of
    ``pewm eval``'s per-frame metrics (:func:`pewm.eval.benchmark.score`): frame counts ``n``, the sums
    of per-frame PSNR and MSE, and of AbsRel and delta1 over the ``n_depth`` frames that have them."""
    per, _ = score(episodes, generated, ColorLayoutFeatures())
    E = len(episodes)
    episode = np.concatenate([np.full(len(g["rgb"]), i) for i, g in enumerate(generated)])
    revisit = np.concatenate([np.asarray(e.revisit[:len(g["rgb"])], bool) for e, g in zip(episodes, generated)])
    ok = np.isfinite(per["absrel"]) & np.isfinite(per["delta1"])
    one = np.ones(len(episode))
    values = {"n": (one, False), "psnr": (per["psnr"], False), "mse": (per["mse"], False),
              "n_depth": (one, True), "absrel": (per["absrel"], True), "delta1": (per["delta1"], True)}
    out = {k: np.zeros((E, 2)) for k in values}
    for j, sel in enumerate((~revisit, revisit)):
        for k, (v, needs_depth) in values.items():
            m = sel & ok if needs_depth else sel
            out[k][:, j] = np.bincount(episode[m], weights=v[m], minlength=E)
    return out


def parse_variant(spec: str, default_model: str | None) -> tuple[str | None, str, int | None, dict]:
    """``[MODEL_DIR@]MODE[:DELAY][+KEY=VALUE...]`` -> ``(model directory or default_model, fuse mode,
    delay or None, memory options)``; a memory option is a ``MemoryBuildConfig`` field given as text
    (e.g. ``novel:1+imagined_depth=box``; a value is read as JSON, else as text, so it cannot hold a
    ``+``); a ValueError names a bad spec."""
    where, _, rest = spec.rpartition("@")
    rest, *options = rest.split("+")
    fuse, colon, delay = rest.partition(":")
    if fuse not in FUSE_MODES or (colon and not delay.isdigit()):
        raise ValueError(f"--fuse {spec!r}: expected [MODEL_DIR@]MODE[:DELAY][+KEY=VALUE...] with MODE one of "
                         f"{FUSE_MODES} and DELAY a number of chunks")
    opts = {}
    for o in options:
        key, eq, value = o.partition("=")
        if not eq:
            raise ValueError(f"--fuse {spec!r}: memory option {o!r} is not KEY=VALUE")
        opts[key] = value
    if colon and "imagined_fuse_delay_chunks" in opts:
        raise ValueError(f"--fuse {spec!r}: give the delay once, as :DELAY or as +imagined_fuse_delay_chunks=")
    try:  # checked now, not after earlier variants ran; a value is JSON, else a bare string
        checked = memory_options(MemoryBuildConfig(), opts).to_dict()
    except ValueError as e:
        raise ValueError(f"--fuse {spec!r}: {e}") from None
    opts = {k: checked[k] for k in opts}
    return where or default_model, fuse, int(delay) if colon else None, opts


def statistics(tables: list[dict], weights: np.ndarray) -> dict[str, np.ndarray]:
    """``{stat: (draws, 2)}``: each statistic over the episodes weighted by ``weights`` ``(draws, E)``
    (a bootstrap resample's multiplicities; a row of ones is the point value), mean over seeds."""
    per_seed = []
    for t in tables:
        s = {k: weights @ v for k, v in t.items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            per_seed.append({"psnr": s["psnr"] / s["n"], "psnr_mse": 10 * np.log10(1.0 / (s["mse"] / s["n"])),
                             "absrel": s["absrel"] / s["n_depth"], "delta1": s["delta1"] / s["n_depth"]})
    return {k: np.mean([p[k] for p in per_seed], axis=0) for k in STATS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--cuts", default="explore")
    ap.add_argument("--model", default=None, help="model directory [the shipped model]")
    ap.add_argument("--fuse", default="novel,none,all", help=f"comma-separated fuse modes ({', '.join(FUSE_MODES)})")
    ap.add_argument("--reference", default="novel")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--max-episodes", type=int, default=16)
    ap.add_argument("--horizon", type=int, default=32)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/fuse_compare.json")
    a = ap.parse_args()
    modes = [m.strip() for m in a.fuse.split(",") if m.strip()]
    try:
        variants = {m: parse_variant(m, a.model) for m in modes}
    except ValueError as e:
        ap.error(str(e))
    if a.reference not in modes:
        ap.error(f"--reference {a.reference!r} must be one of --fuse {modes}")
    if a.threads:
        torch.set_num_threads(a.threads)
    models, builds = {}, {}  # per model directory: the model and its saved memory settings
    for where, *_ in variants.values():
        if where not in models:
            models[where] = load_model(where)
            builds[where] = dict(getattr(models[where], "memory_build", None) or {})
    model = models[a.model] if a.model in models else load_model(a.model)
    reader = model.config.reader
    base = BenchmarkConfig(data=a.data, model=a.model, modes=(reader,), split=a.split, horizon=a.horizon,
                           max_episodes=a.max_episodes, cuts=a.cuts, seeds=a.seeds).validate()
    episodes = load_episodes(base, model.config.image_height)
    t0 = time.perf_counter()
    tables = {}
    for m in modes:
        where, fuse, delay, opts = variants[m]
        variant = models[where]
        if variant.config.reader != reader:
            ap.error(f"--fuse {m}: that model's reader is {variant.config.reader!r}, not {reader!r}")
        cfg = BenchmarkConfig(**{**base.__dict__, "fuse": fuse}).validate()
        chunks = builds[where].get("imagined_fuse_delay_chunks", 0) if delay is None else delay
        variant.memory_build = {**builds[where], "imagined_fuse_delay_chunks": int(chunks), **opts}
        tables[m] = [episode_table(episodes, rollout_mode(variant, reader, episodes, cfg, s)) for s in range(a.seeds)]
        print(f"fuse {m}: rolled out {len(episodes)} episodes x {a.seeds} seeds ({time.perf_counter() - t0:.0f} s)")
    E = len(episodes)
    rng = np.random.default_rng(0)
    W = rng.multinomial(E, np.full(E, 1.0 / E), size=a.bootstrap).astype(np.float64)
    ones = np.ones((1, E))
    point = {m: statistics(tables[m], ones) for m in modes}
    draws = {m: statistics(tables[m], W) for m in modes}
    res = {}
    for m in modes:
        res[m] = {}
        for j, c in enumerate(CLASSES):
            row = {}
            for k in STATS:
                v = float(point[m][k][0, j])
                row[k] = v if np.isfinite(v) else None
                if m != a.reference:
                    d = draws[m][k][:, j] - draws[a.reference][k][:, j]
                    d = d[np.isfinite(d)]
                    diff = float(point[m][k][0, j] - point[a.reference][k][0, j])
                    row[f"{k}_minus_{a.reference}"] = {
                        "mean": diff if np.isfinite(diff) else None,
                        "ci95": [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))] if d.size else None}
            row["frames_per_seed"] = int(tables[m][0]["n"][:, j].sum())
            res[m][c] = row
    print(f"\n{a.split} split, {E} episodes, {a.cuts} cuts, {a.seeds} seed(s); differences to fuse={a.reference} "
          "with 95 % bootstrap intervals over episodes")
    for c in CLASSES:
        print(f"{c} frames ({res[modes[0]][c]['frames_per_seed']} per seed)")
        if res[modes[0]][c]["frames_per_seed"] == 0:
            continue
        for m in modes:
            r = res[m][c]
            cells = []
            for k in STATS:
                s = f"{k} {r[k]:.3f}"
                g = r.get(f"{k}_minus_{a.reference}")
                if g is not None and g["ci95"] is not None:
                    s += f" ({g['mean']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}])"
                cells.append(s)
            print(f"  fuse {m} " + "  ".join(cells))
    write_results(a.out, {"data": a.data, "split": a.split, "cuts": a.cuts, "episodes": E, "seeds": a.seeds,
                          "horizon": a.horizon, "model": str(resolve_model_path(a.model)),
                          "models": {k or "": str(resolve_model_path(k)) for k in models}, "reference": a.reference,
                          "seconds": time.perf_counter() - t0, "machine": platform.processor() or platform.machine(),
                          "modes": res})


if __name__ == "__main__":
    main()
