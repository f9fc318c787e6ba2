"""``pewm eval``: the generation benchmark of the paper's Table 1 (see :mod:`pewm.eval.benchmark`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

HELP = """Benchmark memory modes on held-out houses, as in the paper's Table 1.

For every episode of --split, the memory is built from the ground-truth frames before a cut point
(--cuts revisit: chosen so the following frames revisit much of what was seen; explore: so they
show mostly unseen space; uniform: drawn at random, --cut-seed), the model rolls out --horizon
frames with the ground-truth actions (episodes without actions, e.g. your own imported recordings:
along their recorded camera poses), and every frame is scored against the ground truth (PSNR,
SSIM, depth AbsRel and delta<1.25, scene-revisit consistency), separately for revisit frames
(mostly seen before the cut) and novel frames, as mean +- std over --seeds sampling seeds; then
PSNR of the mean MSE, the sharpness ratio (generated over true image gradients), and bootstrap
intervals over episodes of PSNR and of each mode's gain over none and render-only.

Three modes need no model: render-only (the map of the history rendered into each target view,
holes filled from the render), nearest-frame (the history frame closest in pose) and
render-layout (render-only with the holes' depth from a box layout: the history's floor and
ceiling planes, walls at 2 m). A memory reader's claim is its gain over them; imagined depth is
measured against render-layout's.

\b
Writes OUT/results.json, OUT/results.md, OUT/psnr_vs_step.png and OUT/videos/*.mp4.
\b
Examples:
  pewm data generate --out test_houses --houses 40 --episodes-per-house 1 --steps 200 --seed 7
  pewm eval --data test_houses --split all --out eval            # shipped model: voxel-render, none, baselines
  pewm eval --data test_houses --split all --cuts explore --out eval_explore   # imagination: novel frames
  pewm eval --data test_houses --memory voxel-xattn,none --mode-model voxel-xattn=runs/s2_xattn
"""


def register(app: typer.Typer) -> None:
    @app.command("eval", help=HELP, no_args_is_help=True)
    def eval_command(
        data: Path = typer.Option(..., "--data", "-d", help="dataset directory (pewm data format)"),
        out: Path = typer.Option(Path("eval"), "--out", "-o", help="output directory"),
        model: Optional[Path] = typer.Option(None, help="model directory or training run [the shipped model]"),
        memory: str = typer.Option(
            None, help="comma-separated memory modes (the registered readers: voxel-xattn, frames, voxel-render, "
                       "none, ...; no model: render-only, nearest-frame, render-layout) [the model's reader, none, "
                       "render-only, nearest-frame, render-layout]"
        ),
        mode_model: List[str] = typer.Option(
            [], "--mode-model", help="MODE=DIR: a model (stage-2 run) for a memory mode; repeatable"
        ),
        seeds: int = typer.Option(3, help="sampling seeds (mean and std are over seeds)"),
        split: str = typer.Option("test", help="dataset split: test | val | train | all"),
        horizon: int = typer.Option(32, help="frames generated after the cut point"),
        min_history: int = typer.Option(64, help="ground-truth frames before the earliest cut point"),
        max_episodes: Optional[int] = typer.Option(None, help="evaluate only the first N episodes of the split"),
        batch: int = typer.Option(8, help="rollouts generated together"),
        sampling_steps: Optional[int] = typer.Option(None, help="DDIM steps per chunk [model default]"),
        anchor: Optional[str] = typer.Option(
            None, help="voxel-render sampling: latent | pixel | both (keep what the map covers) | none (condition only) "
                       "[model default]"
        ),
        guidance_scale: Optional[float] = typer.Option(None, help="classifier-free guidance on the memory [model default]"),
        render_supersample: Optional[int] = typer.Option(
            None, help="voxel-render: render the map at N times the resolution, averaged down [model default]"
        ),
        dinov2_weights: Optional[Path] = typer.Option(
            None, help="local DINOv2 weights directory for SRC features [fallback: colour-layout features]"
        ),
        videos: int = typer.Option(4, help="side-by-side videos written (first N episodes, seed 0)"),
        long_horizon: int = typer.Option(
            0, help="also run the long-horizon consistency probe (paper Fig. 4-5) in N held-out houses "
            "(pose-only recordings: on the split's first N episodes, along their recorded poses)"
        ),
        long_steps: int = typer.Option(128, help="imagined steps of each long-horizon walk"),
        fuse: str = typer.Option(
            "novel", help="fuse generated frames: novel (only where the map holds nothing yet) | all (literal Algorithm 1) | "
                     "none (never: the map holds only observed frames; imagines but does not remember)"
        ),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
        allow_incomplete: bool = typer.Option(
            False, "--allow-incomplete", help="evaluate on a dataset that fails the completeness check (missing, "
                                              "extra or unfinished files; see pewm data verify)"),
        allow_any_fov: bool = typer.Option(
            False, "--allow-any-fov", help="evaluate episodes whose camera's field of view is far from the model's "
                                           "(90 deg; refused by default)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace the results of an earlier run in --out"),
        cuts: str = typer.Option(
            "revisit", help="cut protocol: revisit (next frames mostly seen before) | explore (mostly unseen) | "
                            "uniform (random, without looking at the future)"),
        cut_seed: int = typer.Option(0, help="seed of --cuts uniform"),
        bootstrap: int = typer.Option(2000, help="bootstrap draws over episodes for the 95% intervals (0: none)"),
    ) -> None:
        from pewm.cli.common import console, parse_key_values, user_errors
        from pewm.eval.aggregate import BootstrapConfig
        from pewm.eval.benchmark import BenchmarkConfig, default_modes, run_benchmark
        from pewm.model import SamplingConfig

        with user_errors():
            modes = default_modes(model) if memory is None else tuple(m.strip() for m in memory.split(",") if m.strip())
            sampling = SamplingConfig(steps=sampling_steps, guidance_scale=guidance_scale, anchor=anchor,
                                      render_supersample=render_supersample)
            cfg = BenchmarkConfig(
                data=str(data), out=str(out), model=str(model) if model else None, modes=modes,
                mode_models=parse_key_values(mode_model, "--mode-model", "MODE=DIR"), seeds=seeds, split=split,
                horizon=horizon, min_history=min_history, max_episodes=max_episodes, batch=batch, sampling=sampling,
                dinov2_weights=str(dinov2_weights) if dinov2_weights else None, videos=videos, threads=threads,
                long_horizon=long_horizon, long_steps=long_steps, fuse=fuse, overwrite=overwrite,
                allow_incomplete=allow_incomplete, allow_any_fov=allow_any_fov, cuts=cuts, cut_seed=cut_seed,
                bootstrap=BootstrapConfig(draws=bootstrap),
            )
            run_benchmark(cfg, console=console)
