"""Where does the world model add to its map? Errors split by the map render's coverage (issue #12).

``render-only`` (no model) scores within 0.4 dB of the shipped model on revisits. This script asks
where the two differ: it rolls the model out on ``pewm eval``'s episodes (same cuts, same noise as
``pewm eval``'s seed 0) and renders the history's map into the same target views, then splits every
target frame's pixels into those the render covers and those it does not, and reports for each class
of frame (novel / revisit) and each part: the share of pixels, the PSNR of the pooled MSE of the model
and of ``render-only``, and the depth AbsRel and delta1 of both and of ``render-layout``
(``render-only`` with the holes' depth from a box layout, :mod:`pewm.eval.layout`), over pixels with
valid ground truth. ``layout-oracle`` is a diagnostic, not a baseline: the same layout with one wall
distance per image column read from the **ground truth** (:func:`pewm.eval.layout.oracle_wall_distances`),
how much of the depth a box layout can explain once the walls are known. ``model-layout`` is the
model's frames with the uncovered pixels' depth made into that box with the walls read from the
**model's** depth (:func:`pewm.geometry.layout.column_wall_distances`): does the imagined depth know
where the walls are, once its per-pixel noise is removed? ``--layout-walls`` lists
the wall distances whose ``render-layout`` frame metrics are reported too (how ``BaselineConfig.
layout_wall_m`` was chosen: the lowest novel-frame AbsRel on the val explore cuts).

It also scores ``composite``: the render where it covers and the model's frame elsewhere, with
``pewm eval``'s per-frame metrics (PSNR mean of frames, AbsRel, delta1). A composite that beats
the model says the model degrades what its map already shows (the autoencoder caps RGB near
27 dB); one that beats ``render-only`` says the model fills holes better than the mean colour.
Differences have 95 % bootstrap intervals over episodes.

    python benchmarks/coverage_split.py --data houses160 --split val --cuts revisit
        [--max-episodes 16] [--min-history 64] [--model DIR] [--layout-walls 1.5,2,2.5,3,3.5,4]
        [--out benchmarks/results/coverage_split.json]
"""

from __future__ import annotations

import argparse
import platform
import time

from _results import write_results

import numpy as np
import torch

from pewm.assets import load_model, resolve_model_path
from pewm.eval.baselines import BaselineConfig, render_builder, render_layout
from pewm.eval.layout import column_wall_distances, layout_depth, oracle_wall_distances
from pewm.eval.benchmark import BenchmarkConfig, future_poses, load_episodes, rollout_mode
from pewm.eval.metrics import depth_absrel, depth_delta1, psnr

CLASSES = ("novel", "revisit")
PARTS = ("covered", "uncovered")
SOURCES = ("model", "model-layout", "render-only", "render-layout", "layout-oracle")
FRAME_MODES = ("model", "model-layout", "render-only", "render-layout", "composite")


def pixel_sums(pred_rgb, pred_depth, gt_rgb, gt_depth, cover) -> dict[str, np.ndarray]:
    """Per-frame sums over the covered and the uncovered pixels ``{key: (T, 2)}``: pixel count
    ``n``, squared RGB error ``se`` (mean over channels, RGB in [0, 1]), valid-depth count ``nd``,
    AbsRel sum ``ar`` and delta1 count ``d1`` (predicted depth <= 0 counts as wrong)."""
    p = np.asarray(pred_rgb, np.float64) / 255.0
    g = np.asarray(gt_rgb, np.float64) / 255.0
    se = ((p - g) ** 2).mean(-1)
    pd, gd = np.asarray(pred_depth, np.float64), np.asarray(gt_depth, np.float64)
    ok = np.isfinite(gd) & (gd > 0)
    pok = np.isfinite(pd) & (pd > 0)
    ps, gs = np.where(pok, pd, 1e-6), np.where(ok, gd, 1.0)
    ar = np.where(ok, np.abs(ps - gs) / gs, 0.0)
    d1 = ok & pok & (np.maximum(ps / gs, gs / ps) < 1.25)
    out = {k: np.zeros((len(p), 2)) for k in ("n", "se", "nd", "ar", "d1")}
    for j, m in enumerate((cover, ~cover)):
        out["n"][:, j] = m.sum((1, 2))
        out["se"][:, j] = (se * m).sum((1, 2))
        out["nd"][:, j] = (ok & m).sum((1, 2))
        out["ar"][:, j] = (ar * m).sum((1, 2))
        out["d1"][:, j] = (d1 & m).sum((1, 2))
    return out


def composite(model_frames: dict, render: dict) -> dict:
    """The render where it covers, the model's frame elsewhere."""
    c = render["coverage"]
    return {"rgb": np.where(c[..., None], render["rgb"], model_frames["rgb"]),
            "depth": np.where(c, render["depth"], model_frames["depth"]).astype(np.float32)}


def frame_scores(frames: dict, gt_rgb, gt_depth) -> dict[str, np.ndarray]:
    """``pewm eval``'s per-frame PSNR, AbsRel and delta1."""
    return {"psnr": psnr(frames["rgb"], gt_rgb), "absrel": depth_absrel(frames["depth"], gt_depth),
            "delta1": depth_delta1(frames["depth"], gt_depth)}


def bootstrap(per_episode: np.ndarray, counts: np.ndarray, draws: int, seed: int = 0) -> list[float]:
    """95 % interval of ``sum(values) / sum(counts)`` over episodes resampled with replacement."""
    E = len(counts)
    W = np.random.default_rng(seed).multinomial(E, np.full(E, 1.0 / E), size=draws).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (W @ per_episode) / (W @ counts)
    v = v[np.isfinite(v)]
    return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] if v.size else [float("nan")] * 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--cuts", default="revisit")
    ap.add_argument("--model", default=None, help="model directory (a voxel-render model) [the shipped model]")
    ap.add_argument("--max-episodes", type=int, default=16)
    ap.add_argument("--horizon", type=int, default=32)
    ap.add_argument("--min-history", type=int, default=64)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--layout-walls", default="1.5,2,2.5,3,3.5,4",
                    help="comma-separated wall distances (m) of render-layout to report")
    ap.add_argument("--out", default="benchmarks/results/coverage_split.json")
    a = ap.parse_args()
    try:
        walls = [float(v) for v in a.layout_walls.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--layout-walls {a.layout_walls!r}: expected comma-separated numbers of metres")
    if not walls or not all(np.isfinite(w) and w > 0 for w in walls):
        ap.error(f"--layout-walls {a.layout_walls!r}: expected positive numbers of metres")
    model = load_model(a.model).eval()
    if model.config.reader != "voxel-render":
        ap.error(f"--model: the coverage split needs a voxel-render model, got reader {model.config.reader!r}")
    cfg = BenchmarkConfig(data=a.data, model=a.model, modes=("voxel-render",), split=a.split, horizon=a.horizon,
                          max_episodes=a.max_episodes, cuts=a.cuts, seeds=1,
                          min_history=a.min_history).validate()
    episodes = load_episodes(cfg, model.config.image_height)
    t0 = time.perf_counter()
    generated = rollout_mode(model, "voxel-render", episodes, cfg, seed=0)
    builder = render_builder(model, cfg.sampling.render_supersample)
    E = len(episodes)
    pix = {s: {k: np.zeros((E, 2, 2)) for k in ("n", "se", "nd", "ar", "d1")} for s in SOURCES}
    frame = {m: {k: np.zeros((E, 2)) for k in ("n", "psnr", "nd", "absrel", "delta1")} for m in FRAME_MODES}
    sweep = {wall: {k: np.zeros(2) for k in ("nd", "absrel", "delta1")} for wall in walls}
    for i, (e, g) in enumerate(zip(episodes, generated)):
        c, n = e.cut, len(g["rgb"])
        lay = render_layout(builder, e.frames_rgb[:c + 1], e.frames_depth[:c + 1], e.poses[:c + 1], e.K,
                            future_poses(e, n), BaselineConfig().layout_wall_m, e.z_up)
        r = {**lay, "depth": lay["render_depth"]}
        targets, h, w = future_poses(e, n), lay["depth"].shape[1], lay["depth"].shape[2]
        plane = layout_depth(targets, e.K, h, w, lay["planes"], 1e3)
        gt_d = e.frames_depth[c + 1:c + 1 + n]
        oracle = {"rgb": lay["rgb"], "depth": np.where(lay["coverage"], lay["render_depth"], layout_depth(
            targets, e.K, h, w, lay["planes"], oracle_wall_distances(gt_d, plane)))}
        model_walls = column_wall_distances(g["depth"], plane, fallback=BaselineConfig().layout_wall_m)
        structured = {"rgb": g["rgb"], "depth": np.where(lay["coverage"], lay["render_depth"], layout_depth(
            targets, e.K, h, w, lay["planes"], model_walls))}
        gt_rgb, gt_depth = e.frames_rgb[c + 1:c + 1 + n], e.frames_depth[c + 1:c + 1 + n]
        rev = np.asarray(e.revisit[:n], bool)
        for wall in walls:
            d = np.where(lay["coverage"], lay["render_depth"], layout_depth(targets, e.K, h, w, lay["planes"], wall))
            sc = frame_scores({"rgb": lay["rgb"], "depth": d}, gt_rgb, gt_depth)
            okd = np.isfinite(sc["absrel"]) & np.isfinite(sc["delta1"])
            for j, sel in enumerate((~rev, rev)):
                sweep[wall]["nd"][j] += (sel & okd).sum()
                sweep[wall]["absrel"][j] += sc["absrel"][sel & okd].sum()
                sweep[wall]["delta1"][j] += sc["delta1"][sel & okd].sum()
        for s, f in (("model", g), ("model-layout", structured), ("render-only", r), ("render-layout", lay), ("layout-oracle", oracle)):
            sums = pixel_sums(f["rgb"], f["depth"], gt_rgb, gt_depth, r["coverage"])
            for k, v in sums.items():
                for j, sel in enumerate((~rev, rev)):
                    pix[s][k][i, j] += v[sel].sum(0)
        for m, f in (("model", g), ("model-layout", structured), ("render-only", r), ("render-layout", lay), ("composite", composite(g, r))):
            sc = frame_scores(f, gt_rgb, gt_depth)
            okd = np.isfinite(sc["absrel"]) & np.isfinite(sc["delta1"])
            for j, sel in enumerate((~rev, rev)):
                frame[m]["n"][i, j] += sel.sum()
                frame[m]["psnr"][i, j] += sc["psnr"][sel].sum()
                frame[m]["nd"][i, j] += (sel & okd).sum()
                frame[m]["absrel"][i, j] += sc["absrel"][sel & okd].sum()
                frame[m]["delta1"][i, j] += sc["delta1"][sel & okd].sum()
    res = {"pixels": {}, "frames": {}, "layout_walls": {}}
    print(f"\n{a.split} split, {E} episodes, {a.cuts} cuts, seed 0 ({time.perf_counter() - t0:.0f} s)")
    for j, cls in enumerate(CLASSES):
        nf = int(frame["model"]["n"][:, j].sum())
        print(f"{cls} frames: {nf}")
        if nf == 0:
            continue
        res["pixels"][cls], res["frames"][cls] = {}, {}
        total = pix["model"]["n"][:, j].sum()
        for q, part in enumerate(PARTS):
            n = pix["model"]["n"][:, j, q].sum()
            row = {"pixel_share": float(n / total)}
            for s in SOURCES:
                P = pix[s]
                nd = P["nd"][:, j, q].sum()
                row[s] = {"psnr_mse": float(10 * np.log10(n / P["se"][:, j, q].sum())) if n else None,
                          "absrel": float(P["ar"][:, j, q].sum() / nd) if nd else None,
                          "delta1": float(P["d1"][:, j, q].sum() / nd) if nd else None}
            res["pixels"][cls][part] = row
            cells = "  ".join(
                f"{s}: " + ("" if s in ("model-layout", "render-layout", "layout-oracle") else f"PSNR(MSE) {row[s]['psnr_mse']:.2f} ")
                + f"AbsRel {row[s]['absrel']:.3f} δ1 {row[s]['delta1']:.3f}"
                for s in SOURCES if row[s]["psnr_mse"] is not None and row[s]["absrel"] is not None)
            print(f"  {part:9s} {100 * row['pixel_share']:5.1f} % of pixels  {cells}")
        for m in FRAME_MODES:
            F = frame[m]
            row = {"psnr": float(F["psnr"][:, j].sum() / F["n"][:, j].sum()),
                   "absrel": float(F["absrel"][:, j].sum() / F["nd"][:, j].sum()),
                   "delta1": float(F["delta1"][:, j].sum() / F["nd"][:, j].sum())}
            if m != "model":
                for ref in ("model", "render-only"):
                    if ref == m or (m, ref) in (("render-layout", "render-only"), ("model-layout", "model")):  # same RGB
                        continue
                    diff = F["psnr"][:, j] - frame[ref]["psnr"][:, j]
                    row[f"psnr_minus_{ref}"] = {"mean": float(diff.sum() / F["n"][:, j].sum()),
                                                "ci95": bootstrap(diff, F["n"][:, j], a.bootstrap)}
            res["frames"][cls][m] = row
            extra = "  ".join(f"{k[5:]} {v['mean']:+.2f} [{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}]"
                              for k, v in row.items() if k.startswith("psnr_minus_"))
            print(f"  {m:12s} PSNR {row['psnr']:.2f}  AbsRel {row['absrel']:.3f}  δ1 {row['delta1']:.3f}  {extra}")
        res["layout_walls"][cls] = {f"{wall:g}": {"absrel": float(v["absrel"][j] / v["nd"][j]),
                                                  "delta1": float(v["delta1"][j] / v["nd"][j])}
                                    for wall, v in sweep.items() if v["nd"][j]}
        print("  render-layout by wall distance: " + "  ".join(
            f"{k} m AbsRel {v['absrel']:.3f} δ1 {v['delta1']:.3f}" for k, v in res["layout_walls"][cls].items()))
    write_results(a.out, {"data": a.data, "split": a.split, "cuts": a.cuts, "episodes": E, "horizon": a.horizon,
                          "model": str(resolve_model_path(a.model)), "seconds": time.perf_counter() - t0,
                          "machine": platform.processor() or platform.machine(), **res})


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
