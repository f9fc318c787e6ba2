"""``pewm plan``: the goal-reaching planning benchmark (see :mod:`pewm.planning.benchmark`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Plan toward goal images with the world model, in held-out houses (paper §4.2, Table 2; §5.1).

Each task: the agent has walked an exploration prefix of a recorded episode (its frames fill the
memory); the goal is an RGB-D image of a place it saw, now beyond its view and 1-4 m away; it has
--budget actions to get within 0.5 m and 30 degrees of the goal pose. Planners imagine candidate
action sequences with the world model and score them (--cost map, the default: the goal image is
registered against the memory's 3-D map, and each candidate's last imagined pose is scored by the
free-space distance and turns still to go, with a penalty for poses inside mapped obstacles;
without a memory, or a goal not found in it, the last imagined frame is compared with the goal
image, the paper's rule, which --cost latent|ssim-depth|pixel always uses):
rank (N candidates, execute the best), cem (the cross-entropy method: N = 60, keep the best 30 %,
refit, iterate); both re-plan after every --execute actions (model-predictive control) with the real
frames fused into the memory. Rows: each --method with each --memory (the model's reader, or none:
same weights, empty memory), the same planners with the simulator as the world model (oracle: the
upper bound), the same planners without a world model (map-only: candidates reach the poses their
actions lead to, the memory of the prefix is kept, nothing is imagined), and a random proposal
executed without imagination (the lower bound).

Writes OUT/results.json (per row: success rate, SPL, final distance, ATE, RPE, SIM, seconds per
decision, mean and std over seeds; success by path length and turn; a bootstrap interval over
episodes), OUT/episodes/ (one JSON per episode: an interrupted run continues where it stopped when
run again with the same options) and OUT/videos/TASK/ROW.mp4 (goal | real view | best imagined
candidate | house from above with the path, the candidates' end points and the goal).

\b
Metrics are defined in docs/results.md (planning). Uses the shipped model unless --model is given.
"""


def _csv(text: str, option: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if len(set(items)) != len(items):
        raise ValueError(f"{option} {text!r}: an entry appears twice")
    return items


def _prefix(text: str) -> tuple[int, int]:
    """``--prefix MIN,MAX`` -> ``(MIN, MAX)``: the exploration prefix's length range (frames)."""
    parts = [s.strip() for s in text.split(",")]
    try:
        lo, hi = (int(v) for v in parts)
    except ValueError:
        raise ValueError(f"--prefix {text!r}: expected MIN,MAX (two integers, e.g. 100,200)") from None
    if not 2 <= lo <= hi:
        raise ValueError(f"--prefix {text!r}: need 2 <= MIN <= MAX (the goal is a frame before the start)")
    return lo, hi


def register(app: typer.Typer) -> None:
    @app.command("plan", help=HELP)
    def plan_command(
        data: Path = typer.Option(..., "--data", "-d", help="dataset made by pewm data generate (held-out houses)"),
        out: Path = typer.Option(Path("plan"), "--out", "-o", help="output directory"),
        model: Optional[Path] = typer.Option(None, help="model directory or training run [the shipped model]"),
        split: str = typer.Option("test", help="split the tasks come from (choose settings on val)"),
        tasks: int = typer.Option(30, help="number of tasks"),
        task_seed: int = typer.Option(0, help="which tasks (a deterministic function of the dataset and this seed)"),
        method: str = typer.Option("rank,cem", help="planners: rank, cem (comma-separated)"),
        memory: str = typer.Option("voxel-render,none", help="memories: the model's reader and/or none"),
        baselines: str = typer.Option("oracle,map-only,random", help="baselines in the same run: oracle, map-only, "
                                      "random, or none"),
        seeds: int = typer.Option(2, help="planning seeds per task (proposals, CEM samples, sampling noise)"),
        n_rank: int = typer.Option(16, help="rank: candidates per decision"),
        n_cem: int = typer.Option(60, help="cem: samples per iteration"),
        cem_iterations: int = typer.Option(3, help="cem: iterations per decision"),
        horizon: int = typer.Option(8, help="actions per candidate (8 = one generated chunk)"),
        execute: int = typer.Option(8, help="actions executed per decision before re-planning"),
        budget: int = typer.Option(48, help="actions per episode"),
        prefix: str = typer.Option("100,200", help="MIN,MAX: frames of the exploration prefix that fills the memory "
                                   "(clipped to each episode's length; episodes shorter than MIN are not used)"),
        proposal: str = typer.Option("uniform", help="rank proposals: uniform | prior (fitted to the train split's actions)"),
        cost: str = typer.Option("map", help="goal cost: map (find the goal image in the memory's map, then the "
                                 "free-space distance still to go; without a map: the image cost) | latent (the "
                                 "model's autoencoder) | ssim-depth | pixel"),
        image_cost: str = typer.Option("latent", help="with --cost map: the image cost used without a map "
                                       "(latent | ssim-depth | pixel)"),
        stop_threshold: Optional[float] = typer.Option(None, help="stop when the real view's cost is below this "
                                                      "(with --cost map: metres still to go, path plus turns; e.g. 0.3) [never]"),
        sampling_steps: int = typer.Option(4, help="DDIM steps per imagined chunk"),
        videos: bool = typer.Option(True, "--videos/--no-videos", help="write a video per task and row (first seed)"),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads [$PEWM_THREADS, else 1]"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier run in --out"),
        allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="run on a dataset with missing episodes"),
    ) -> None:
        from pewm.cli.common import console, progress_callback, user_errors
        from pewm.model import SamplingConfig
        from pewm.model.threads import set_threads
        from pewm.planning import CEMConfig, PlanConfig, RankConfig, TaskConfig, run_plan_benchmark
        from pewm.planning.report import plan_table

        with user_errors():
            if threads is not None and threads < 1:
                raise ValueError(f"--threads must be >= 1, got {threads}")
            for option, value in (("--n-rank", n_rank), ("--n-cem", n_cem), ("--cem-iterations", cem_iterations),
                                  ("--horizon", horizon), ("--budget", budget)):
                if value < 1:
                    raise ValueError(f"{option} must be >= 1, got {value}")
            set_threads(threads)
            cfg = PlanConfig(
                data=str(data), out=str(out), model=str(model) if model else None, split=split, tasks=tasks,
                task_seed=task_seed, methods=_csv(method, "--method"), memories=_csv(memory, "--memory"),
                baselines=() if baselines.strip() == "none" else _csv(baselines, "--baselines"), seeds=seeds,
                rank=RankConfig(n=n_rank, horizon=horizon, proposal=proposal),
                cem=CEMConfig(n=n_cem, horizon=horizon, iterations=cem_iterations), execute=execute, cost=cost, image_cost=image_cost,
                stop_threshold=stop_threshold, sampling=SamplingConfig(steps=sampling_steps),
                task_config=TaskConfig(prefix_range=_prefix(prefix), budget=budget), videos=videos, overwrite=overwrite,
                allow_incomplete=allow_incomplete)
            with progress_callback("planning episodes") as update:
                summary = run_plan_benchmark(cfg, on_progress=lambda done, total, what: update(done, total))
            console.print(plan_table(summary), markup=False, highlight=False)
            console.print(f"wrote {Path(out) / 'results.json'}")
