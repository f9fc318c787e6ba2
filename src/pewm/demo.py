"""``pewm demo``: the persistent memory at work, in one command (paper Fig. 4-5 in miniature).

In a house the model has never seen (a seed stream ``pewm data generate`` never uses), the agent
takes one ground-truth start view (optionally a look-around), then *imagines* a walk: it turns
away and back twice (the paper's Fig. 4), then goes to another place and comes back (Fig. 5). The
same world model rolls the walk out twice (Algorithm 1):

* **with memory**: the start view and every generated chunk are fused into the persistent map,
  which conditions each next chunk;
* **without memory**: the same checkpoint given an empty memory (the paper's no-memory protocol).

On the way back the agent sees the start area again. With the memory, the model re-renders what it
saw (and what it imagined); without it, it invents a new room. ``demo/`` receives ``demo.mp4``
(ground truth | with memory | without memory | top-down view of the growing map),
``summary.json`` and the table printed at the end: PSNR / depth AbsRel against the ground truth on
revisit frames (most of the view observed in the start view) and on novel frames.

With ``--data DATASET --episode N`` the walk is a recorded episode instead (a ``pewm data import``
of your own recording, or a generated one): frame ``--start`` is the start view and the only frame
in the memory, and the model imagines the recorded camera path from there (poses are enough: a
recording needs no actions), with and without memory; same video, summary and table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pewm.assets import load_model, resolve_model_path
from pewm.atomic import atomic_write_text
from pewm.data import open_dataset
from pewm.eval.episode_map import check_episode_index
from pewm.eval.metrics import depth_absrel, psnr
from pewm.eval.revisit import observed_fraction
from pewm.eval.walks import (
    WalkConfig,
    WalkEpisode,
    demo_house_seed,
    ground_truth,
    imagine,
    turn_away_and_back,
    walk_from_episode,
)
from pewm.model import SamplingConfig
from pewm.outputs import check_output_dir
from pewm.rollout import fuse_flags
from pewm.video import fit_into, hstack_panels, label, resize_nearest, write_video


@dataclass
class DemoConfig:
    """``steps``: frames of the imagined walk (None: 128 in a house, the rest of a recorded episode);
    ``look_around``: extra ground-truth turns (15° each) fused with the start view before imagining
    (24 = a full turn; 0 = the start view alone; houses only); ``data``/``episode``/``start``: walk
    a recorded dataset episode from frame ``start`` instead of a house (``episode`` None: the
    dataset's first); ``sampling``: DDIM steps, anchoring, render supersampling (None fields: the
    model's defaults); ``fuse``: generated frames fused ``novel`` (only where the map has nothing
    yet) or ``all``; ``allow_any_fov``: imagine with a camera far from the model's field of view."""

    out: str = "demo"
    seed: int = 0
    steps: int | None = None
    look_around: int = 0
    data: str | None = None
    episode: int | None = None
    start: int = 0
    allow_any_fov: bool = False
    model: str | None = None
    threads: int | None = None
    revisit_threshold: float = 0.5
    fuse: str = "novel"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    overwrite: bool = False  # replace an earlier demo's files in ``out`` (else refused)


DEMO_ARTEFACTS = ("demo.mp4", "summary.json")
MAX_STEPS = 10000  # an imagined walk longer than this is a typo (128 steps take ~30 s on a CPU)
HOUSE_STEPS = 128  # the house walk's default length


def _video(path: Path, ep: WalkEpisode, with_mem, without_mem, maps, chunk_of, revisit) -> Path:
    size = 192
    frames = []
    for t in range(len(ep.rgb)):
        tag = "start" if t == 0 else f"t={t}" + (" revisit" if revisit[t] else "")
        top = maps[min(chunk_of[t], len(maps) - 1)] if maps else ep.topdown
        panels = [
            label(resize_nearest(ep.rgb[t], size), f"ground truth {tag}"),
            label(resize_nearest(with_mem[t], size), "with memory"),
            label(resize_nearest(without_mem[t], size), "without memory"),
            label(fit_into(top, size, size), "memory map (top)" if maps else ep.topdown_label),
        ]
        frames.append(hstack_panels(panels))
    return write_video(path, frames, fps=6)


def _recorded_episode(cfg: DemoConfig):
    """``(description, episode)`` of ``--data``/``--episode`` (the dataset's first when not given)."""
    ds = open_dataset(cfg.data)
    have = ds.episode_indices()
    index = check_episode_index(ds, have[0] if cfg.episode is None and have else cfg.episode)
    return f"{ds.root} episode {index}", ds.read(index)


def run_demo(cfg: DemoConfig, console=None) -> dict:
    """Run the demo end to end; writes ``cfg.out`` and returns the summary dictionary."""
    console = console or Console(stderr=True)
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {cfg.threads}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.steps is not None and not 1 <= cfg.steps <= MAX_STEPS:
        raise ValueError(f"--steps must be in 1..{MAX_STEPS}, got {cfg.steps}")
    fuse_flags(cfg.fuse)  # a clear error for an unknown --fuse
    if cfg.look_around < 0:
        raise ValueError(f"--look-around must be >= 0, got {cfg.look_around}")
    if cfg.data is None and (cfg.episode is not None or cfg.start != 0):
        raise ValueError(f"{'--episode' if cfg.episode is not None else '--start'} needs --data DATASET "
                         "(it picks the recorded walk)")
    if cfg.data is not None and cfg.look_around:
        raise ValueError("--look-around: not available with --data (a recording has no look-around views; the memory "
                         "starts from the --start frame)")
    t_start = time.perf_counter()
    out = Path(cfg.out)
    check_output_dir(out, DEMO_ARTEFACTS, cfg.overwrite, remove=False)  # (both files are replaced atomically)
    episode = _recorded_episode(cfg) if cfg.data is not None else None  # a bad --data fails before the model loads
    if episode is not None:  # as is a bad --start / --steps (the walk is rebuilt at the model's resolution below)
        walk_from_episode(episode[1], episode[1].rgb.shape[1], cfg.start, cfg.steps, source=episode[0])
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_path(cfg.model)
    model = load_model(model_dir)
    res = model.config.image_height
    console.print(f"model: {model_dir} (reader {model.config.reader}, {res}x{res}, H={model.config.frames})")
    if episode is None:
        with console.status("building an unseen house and its ground truth"):
            walk = WalkConfig(cfg.seed, HOUSE_STEPS if cfg.steps is None else cfg.steps, cfg.look_around)
            ep = ground_truth(walk, res)
        console.print(f"house seed {ep.house_seed}: look-around of {len(ep.memory_rgb)} frame{'s' if len(ep.memory_rgb) != 1 else ''}, walk of {len(ep.actions)} actions")
    else:
        ep = walk_from_episode(episode[1], res, cfg.start, cfg.steps, source=episode[0])
        console.print(f"{ep.source}: walk of {ep.steps} recorded camera poses, the start view in the memory")
    T = ep.steps
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        ta = progress.add_task("imagining with memory   ", total=T)
        with_mem, with_depth, maps, chunk_of = imagine(model, ep, True, cfg.sampling, cfg.seed, cfg.fuse, progress, ta,
                                                       cfg.allow_any_fov)
        tb = progress.add_task("imagining without memory", total=T)
        without_mem, without_depth, _, _ = imagine(model, ep, False, cfg.sampling, cfg.seed, cfg.fuse, progress, tb,
                                                   cfg.allow_any_fov)
    frac = observed_fraction(ep.depth, ep.poses, ep.K, ep.memory_depth, ep.memory_poses, ep.K)
    revisit = np.asarray(frac) >= cfg.revisit_threshold
    rows = {}
    sel = {"revisit": revisit.copy(), "novel": ~revisit}
    for k in sel:
        sel[k][0] = False  # the start frame is given, not generated
    for name, rgb, dep in (("with memory", with_mem, with_depth), ("without memory", without_mem, without_depth)):
        p, a = psnr(rgb, ep.rgb), depth_absrel(dep, ep.depth)
        rows[name] = {
            k: {"frames": int(m.sum()), "psnr": float(np.mean(p[m])) if m.any() else None,
                "absrel": float(np.nanmean(a[m])) if m.any() and np.isfinite(a[m]).any() else None}
            for k, m in sel.items()
        }
    video = _video(out / "demo.mp4", ep, with_mem, without_mem, maps, chunk_of, revisit)
    summary = {
        "model": str(model_dir), "house_seed": ep.house_seed if episode is None else None, "walk": ep.source,
        "config": asdict(cfg),
        "frames": T + 1, "revisit_frames": int(sel["revisit"].sum()), "novel_frames": int(sel["novel"].sum()),
        "results": rows, "seconds": time.perf_counter() - t_start, "video": str(video),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    table = Table(title="Imagined walk vs. ground truth (PSNR dB higher is better, depth AbsRel lower is better)")
    table.add_column("memory")
    for k in ("revisit", "novel"):
        table.add_column(f"{k} PSNR ({sel[k].sum()} frames)", justify="right")
        table.add_column(f"{k} AbsRel", justify="right")
    for name, r in rows.items():
        cells = []
        for k in ("revisit", "novel"):
            cells += ["-" if r[k]["psnr"] is None else f"{r[k]['psnr']:.1f}",
                      "-" if r[k]["absrel"] is None else f"{r[k]['absrel']:.3f}"]
        table.add_row(name, *cells)
    console.print(table)
    console.print(f"wrote {video} and {out / 'summary.json'} in {summary['seconds']:.0f} s")
    return summary


__all__ = ["DEMO_ARTEFACTS", "DemoConfig", "demo_house_seed", "ground_truth", "imagine", "run_demo", "turn_away_and_back"]
