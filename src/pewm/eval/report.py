"""Aggregating per-frame metrics into the Table-1 results, and writing them (JSON, Markdown, plots, videos).

Data flow of the benchmark (paper Table 1: memory modes x metrics, 3 seeds): for each seed and
memory mode, :mod:`pewm.eval.metrics` gives per-frame arrays ``{metric: (N,)}`` (NaN = no value)
and :mod:`pewm.eval.revisit` a per-frame revisit mask ``(N,)``; :func:`aggregate` turns them into

``{mode: {"revisit" | "novel" | "all": {metric: {"mean", "std", "frames", "seeds"}}}}``

which :func:`write_results_json` and :func:`write_results_md` write. All writers are atomic
(:mod:`pewm.atomic`), so an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pewm.atomic import atomic_write_bytes
from pewm.eval.metrics import METRICS
from pewm.video import colorize_depth, hstack_panels, label, resize_nearest, write_video

CLASSES = ("revisit", "novel", "all")
META_KEY = "_meta"

_HEADERS = {"psnr": "PSNR↑", "ssim": "SSIM↑", "absrel": "AbsRel↓", "delta1": "δ1↑", "src": "SRC↑"}
_DIGITS = {"psnr": 2, "ssim": 3, "absrel": 3, "delta1": 3, "src": 3}


# --------------------------------------------------------------------------------------------
# aggregation


def _class_masks(revisit: np.ndarray) -> dict[str, np.ndarray]:
    return {"revisit": revisit, "novel": ~revisit, "all": np.ones_like(revisit)}


def aggregate(
    per_seed: Sequence[Mapping[str, Mapping[str, Any]]],
    revisit: Sequence[Any],
    metrics: Sequence[str] = METRICS,
    ddof: int = 1,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Table-1 statistics over seeds, per memory mode and frame class.

    ``per_seed[i]`` is seed ``i``'s ``{mode: {metric: per-frame array (N_i,)}}`` (frames of all of
    that seed's evaluated episodes concatenated; NaN = no value for that frame, e.g. SRC on a frame
    without a first visit); every seed must have the same modes. ``revisit[i]`` is seed ``i``'s
    boolean mask ``(N_i,)`` (True = revisit; from :func:`pewm.eval.revisit.classify`), shared by
    all modes, or a ``{mode: mask}`` mapping when modes were evaluated on different frames.

    For each mode, class (``revisit``, ``novel``, ``all``) and metric: the **per-seed value** is the
    mean over that seed's frames of the class, skipping NaN; seeds with no such frame are left out.
    ``mean`` and ``std`` (``ddof``, default 1 = sample std; 0.0 for a single seed) are over the
    remaining seeds, ``frames`` is their total number of frames with a value and ``seeds`` their
    count. With no frame at all, ``mean`` and ``std`` are ``None``. A metric missing from a mode's
    dict counts as all-NaN. Modes keep the order of the first seed.
    """
    if len(per_seed) == 0:
        raise ValueError("per_seed is empty: need at least one seed")
    if len(revisit) != len(per_seed):
        raise ValueError(f"revisit has {len(revisit)} entries but per_seed has {len(per_seed)} seeds")
    modes = list(per_seed[0])
    for i, s in enumerate(per_seed):
        if set(s) != set(modes):
            raise ValueError(f"per_seed[{i}] has modes {sorted(s)}, expected {sorted(modes)} (as per_seed[0])")
    if META_KEY in modes:
        raise ValueError(f"{META_KEY!r} is reserved for metadata and cannot be a mode name")

    # per-seed values: seed_vals[mode][cls][metric] -> list of (value, n_frames)
    seed_vals = {m: {c: {k: [] for k in metrics} for c in CLASSES} for m in modes}
    for i, (s, rv) in enumerate(zip(per_seed, revisit)):
        for m in modes:
            mask = rv[m] if isinstance(rv, Mapping) else rv
            mask = np.asarray(mask)
            if mask.ndim != 1 or mask.dtype != bool:
                raise ValueError(f"revisit[{i}] for mode {m!r} must be a 1-D bool array, got {mask.dtype} {mask.shape}")
            classes = _class_masks(mask)
            for k in metrics:
                v = s[m].get(k)
                v = np.full(mask.shape, np.nan) if v is None else np.asarray(v, dtype=np.float64)
                if v.shape != mask.shape:
                    raise ValueError(
                        f"per_seed[{i}][{m!r}][{k!r}] has shape {v.shape} but revisit[{i}] has {mask.shape}"
                    )
                for c, cm in classes.items():
                    x = v[cm]
                    x = x[~np.isnan(x)]
                    if x.size:
                        seed_vals[m][c][k].append((float(x.mean()), int(x.size)))

    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for m in modes:
        out[m] = {}
        for c in CLASSES:
            out[m][c] = {}
            for k in metrics:
                vals = seed_vals[m][c][k]
                if not vals:
                    out[m][c][k] = {"mean": None, "std": None, "frames": 0, "seeds": 0}
                    continue
                a = np.array([v for v, _ in vals])
                std = float(a.std(ddof=ddof)) if len(a) > ddof else 0.0
                out[m][c][k] = {"mean": float(a.mean()), "std": std, "frames": sum(n for _, n in vals),
                                "seeds": len(a)}
    return out


# --------------------------------------------------------------------------------------------
# writers


def _jsonable(x):
    """NumPy scalars/arrays to Python; NaN and inf to ``None`` (strict JSON has neither)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_results_json(path: str | Path, results: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write ``{"_meta": meta, mode: {class: {metric: {...}}}, ...}`` atomically as strict JSON.

    ``results`` is :func:`aggregate`'s output (top-level keys are the memory modes as given);
    ``meta`` holds e.g. ``dataset``, ``split``, ``seeds``, ``feature_extractor``. NaN/inf become
    ``null``.
    """
    if META_KEY in results:
        raise ValueError(f"results must not contain the reserved key {META_KEY!r}")
    doc = {META_KEY: _jsonable(dict(meta)), **_jsonable(dict(results))}
    text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return atomic_write_bytes(Path(path), text.encode("utf-8"))


def _fmt(stat: Mapping[str, Any] | None, metric: str) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    d = _DIGITS.get(metric, 3)
    std = stat.get("std")
    return f"{stat['mean']:.{d}f} ± {std:.{d}f}" if std is not None else f"{stat['mean']:.{d}f}"


def results_markdown(results: Mapping[str, Any], meta: Mapping[str, Any], metrics: Sequence[str] = METRICS) -> str:
    """The Markdown text written by :func:`write_results_md`."""
    modes = [m for m in results if m != META_KEY]
    lines = ["# Generation benchmark (paper Table 1)", ""]
    for key, name in (("dataset", "dataset"), ("split", "split"), ("seeds", "seeds"),
                      ("feature_extractor", "SRC feature extractor")):
        if key in meta:
            v = meta[key]
            lines.append(f"- {name}: {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}")
    if modes:
        first = results[modes[0]]
        counts = []
        for c in CLASSES:
            stats = first.get(c, {})
            n = max((int(s.get("frames", 0)) for s in stats.values()), default=0)
            counts.append(f"{c} {n}")
        lines.append(f"- frames (over all seeds, `{modes[0]}`): " + ", ".join(counts))
    for k, v in meta.items():
        if k not in ("dataset", "split", "seeds", "feature_extractor"):
            lines.append(f"- {k}: {v}")
    lines += [
        "",
        "Each cell is mean ± std over seeds of the per-seed mean over that class's frames (NaN skipped). "
        "Revisit = most of the frame's view was observed before the cut; SRC = cosine similarity of global "
        "image features between a frame and the first visit of the same place (the paper reports it x 100).",
        "",
    ]
    head = ["memory"] + [f"{_HEADERS.get(k, k)} {c}" for c in CLASSES for k in metrics]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for m in modes:
        cells = [f"`{m}`"] + [_fmt(results[m].get(c, {}).get(k), k) for c in CLASSES for k in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if any("psnr_mse" in results[m].get(c, {}) for m in modes for c in CLASSES):
        lines += ["", *honest_markdown(results, meta)]
    return "\n".join(lines) + "\n"


def _ci(stat: Mapping[str, Any] | None, digits: int = 2, signed: bool = False) -> str:
    """``mean [lo, hi]`` of a statistic with a bootstrap interval ("–" without a value)."""
    if not stat or stat.get("mean") is None:
        return "–"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    ci = stat.get("ci95")
    return f.format(stat["mean"]) + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci else "")


def honest_markdown(results: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    """The lines of the report's issue-#12 section: PSNR as mean of per-frame PSNR and as PSNR of the
    mean MSE with bootstrap intervals over episodes, each mode's paired gain over ``none`` and
    ``render-only``, and the imagination metrics (depth, sharpness ratio) of novel frames
    (:mod:`pewm.eval.aggregate`)."""
    modes = [m for m in results if m != META_KEY]
    boot = meta.get("bootstrap") or {}
    level = f"{100 * boot.get('level', 0.95):g} %"
    draws = boot.get("draws")
    lines = [
        "## Against copying and blur (issue #12)", "",
        f"PSNR = Table 1's mean of per-frame PSNR; PSNR(MSE) = PSNR of the mean MSE over the class's frames (a "
        f"pixel-identical frame cannot dominate it). `[lo, hi]`: {level} bootstrap interval over episodes "
        f"({draws} draws{'' if draws else ': none'}); gains are paired (both modes on the same draws). Sharpness = mean "
        "image-gradient magnitude of the generated RGB over the ground truth's (< 1: blurrier). `render-only`, "
        "`nearest-frame` and `render-layout` use no model: the history's map rendered (holes filled from the render), "
        "the history frame closest in pose, and `render-only` with the holes' depth from a box layout (the history's "
        "floor and ceiling, walls at 2 m).", "",
    ]

    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
                *("| " + " | ".join(r) + " |" for r in rows), ""]

    lines += table(["memory"] + [f"{k} {c}" for c in CLASSES for k in ("PSNR↑", "PSNR(MSE)↑")],
                   [[f"`{m}`"] + [_ci(results[m].get(c, {}).get(k)) for c in CLASSES for k in ("psnr", "psnr_mse")]
                    for m in modes])
    for b in ("none", "render-only"):
        key = f"gain_over_{b}"
        rows = [[f"`{m}`"] + [_ci(results[m].get(c, {}).get(key, {}).get(k), signed=True)
                              for c in CLASSES for k in ("psnr", "psnr_mse")]
                for m in modes if any(key in results[m].get(c, {}) for c in CLASSES)]
        if rows:
            lines += table([f"gain over `{b}`"] + [f"Δ{k} {c}" for c in CLASSES for k in ("PSNR", "PSNR(MSE)")], rows)
    lines += table(["memory", "AbsRel↓ novel", "δ1↑ novel", "sharpness novel", "sharpness revisit", "sharpness all"],
                   [[f"`{m}`", _fmt(results[m].get("novel", {}).get("absrel"), "absrel"),
                     _fmt(results[m].get("novel", {}).get("delta1"), "delta1")]
                    + [_ci(results[m].get(c, {}).get("sharpness"), digits=3) for c in ("novel", "revisit", "all")]
                    for m in modes])
    return lines


def write_results_md(path: str | Path, results: Mapping[str, Any], meta: Mapping[str, Any],
                     metrics: Sequence[str] = METRICS) -> Path:
    """Write a Table-1-style Markdown report atomically.

    A header (dataset, split, seeds, frame counts per class, SRC feature extractor and any other
    ``meta`` entries), then one table: rows = memory modes, column groups revisit / novel / all,
    each with PSNR↑ SSIM↑ AbsRel↓ δ1↑ SRC↑ as ``mean ± std`` ("–" where a class has no frames).
    """
    return atomic_write_bytes(Path(path), results_markdown(results, meta, metrics).encode("utf-8"))


def plot_psnr_vs_step(path: str | Path, curves: Mapping[str, tuple], title: str = "PSNR vs. generation step",
                      xlabel: str = "step") -> Path:
    """PNG of mean PSNR (band: ± std) against the generation step, one line per memory mode.

    ``curves[mode] = (steps (S,), mean (S,), std (S,) or None)``. Uses matplotlib's Agg canvas
    directly (no pyplot state, no display); written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("curves is empty: need at least one mode")
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for mode, curve in curves.items():
        if len(curve) not in (2, 3):
            raise ValueError(f"curves[{mode!r}] must be (steps, mean[, std]), got {len(curve)} items")
        steps = np.asarray(curve[0], dtype=np.float64)
        mean = np.asarray(curve[1], dtype=np.float64)
        std = None if len(curve) < 3 or curve[2] is None else np.asarray(curve[2], dtype=np.float64)
        if steps.ndim != 1 or mean.shape != steps.shape or (std is not None and std.shape != steps.shape):
            raise ValueError(f"curves[{mode!r}]: steps, mean and std must be 1-D of equal length, got "
                             f"{steps.shape}, {mean.shape}, {None if std is None else std.shape}")
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=str(mode))
        if std is not None:
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue())


# --------------------------------------------------------------------------------------------
# videos


def _uint8_frames(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (T, h, w, 3), got {a.shape}")
    if a.dtype == np.uint8:
        return a
    return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def side_by_side_video(
    path: str | Path,
    gt_rgb,
    preds: Mapping[str, Any],
    depths: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    frame_tags: Sequence[str] | None = None,
    fps: int = 5,
    panel_height: int | None = None,
    max_depth: float | None = None,
) -> Path:
    """mp4 (or gif) with ground truth and each memory mode's prediction side by side.

    ``gt_rgb`` and every ``preds[mode]`` are ``(T, h, w, 3)`` (uint8, or float in [0, 1]).
    ``depths`` (optional) maps ``"gt"`` and/or mode names to ``(T, h, w)`` depth, drawn (colourised,
    one shared range: ``max_depth`` or the ground truth's 99th percentile) below the matching RGB
    panel; panels without depth get a blank one. ``labels`` renames panels (keys ``"gt"`` and mode
    names); ``frame_tags[t]`` (e.g. ``"revisit"``) is appended to the ground truth's label. Panels
    are upscaled (nearest) to ``panel_height`` (default ``max(h, 128)``). Written atomically by
    :func:`pewm.video.write_video`.
    """

    gt = _uint8_frames(gt_rgb, "gt_rgb")
    T, h, w, _ = gt.shape
    if T == 0:
        raise ValueError("gt_rgb has no frames")
    names = ["gt"] + list(preds)
    rgbs = {"gt": gt}
    for m, p in preds.items():
        rgbs[m] = _uint8_frames(p, f"preds[{m!r}]")
        if rgbs[m].shape != gt.shape:
            raise ValueError(f"preds[{m!r}] has shape {rgbs[m].shape}, expected {gt.shape} like gt_rgb")
    dep = {}
    for k, d in (depths or {}).items():
        if k not in rgbs:
            raise ValueError(f"depths key {k!r} is neither 'gt' nor a mode of preds {list(preds)}")
        a = np.asarray(d.detach().cpu() if hasattr(d, "detach") else d, dtype=np.float32)
        if a.shape != (T, h, w):
            raise ValueError(f"depths[{k!r}] must have shape {(T, h, w)}, got {a.shape}")
        dep[k] = a
    if frame_tags is not None and len(frame_tags) != T:
        raise ValueError(f"frame_tags has {len(frame_tags)} entries for {T} frames")
    hi = max_depth
    if dep and hi is None:
        ref = dep.get("gt", next(iter(dep.values())))
        ok = np.isfinite(ref) & (ref > 0)
        hi = float(np.percentile(ref[ok], 99)) if ok.any() else 1.0
    H = panel_height or max(h, 128)
    names_shown = {n: (labels or {}).get(n, "ground truth" if n == "gt" else n) for n in names}

    def frame(t: int) -> np.ndarray:
        cols = []
        for n in names:
            text = names_shown[n] + (f" t={t} {frame_tags[t]}" if n == "gt" and frame_tags is not None else "")
            top = label(resize_nearest(rgbs[n][t], H), text)
            if dep:
                bottom = (resize_nearest(colorize_depth(dep[n][t], max_depth=hi), H, top.shape[1]) if n in dep
                          else np.full_like(top, 255))
                top = np.concatenate([top, np.full((4, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
            cols.append(top)
        return hstack_panels(cols)

    return write_video(path, (frame(t) for t in range(T)), fps=fps)
