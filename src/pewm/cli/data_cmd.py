"""``pewm data``: generate, import, inspect, verify and view datasets of RGB-D episodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from pewm.cli.common import console, progress, progress_callback, user_errors

data_app = typer.Typer(help="Datasets of RGB-D navigation episodes (see docs/data-format.md).", no_args_is_help=True)


@data_app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="Dataset directory (created, or resumed if it exists)."),
    houses: int = typer.Option(4, help="Number of procedural houses; the last ones are held out as val/test."),
    episodes_per_house: int = typer.Option(2, help="Episodes per house."),
    steps: int = typer.Option(100, help="Actions per episode (an episode has steps + 1 frames), at most 500."),
    resolution: int = typer.Option(64, help="Image width and height in pixels (64, 128 or 256)."),
    seed: int = typer.Option(0, help="Master seed: the same arguments always give the same dataset."),
    workers: int = typer.Option(1, help="Parallel rendering processes."),
    fov: float = typer.Option(90.0, help="Vertical field of view in degrees."),
    camera_height: float = typer.Option(1.25, help="Camera height above the floor in metres."),
) -> None:
    """Render episodes in procedural houses with the MuJoCo simulator.

    Deterministic for the same arguments and resumable: run the same command again after an
    interruption (Ctrl-C, a crash, a kill) and only the missing or damaged episodes are generated;
    the result is byte-identical. An existing --out made with other arguments is refused.
    Houses are split train/val/test.
    """
    from pewm.sim.generate import GenerateConfig, generate_dataset

    try:
        with user_errors():
            cfg = GenerateConfig(houses=houses, episodes_per_house=episodes_per_house, steps=steps,
                                 resolution=resolution, seed=seed, workers=workers, fov_y_deg=fov,
                                 camera_height=camera_height)
            with progress() as bar:
                task = bar.add_task("episodes", total=houses * episodes_per_house)
                res = generate_dataset(out, cfg, on_progress=lambda d, n: bar.update(task, completed=d))
    except KeyboardInterrupt:
        console.print(f"interrupted; rerun the same command to resume ({out} is incomplete)", highlight=False,
                      markup=False)
        raise typer.Exit(130) from None
    fps = res["frames_generated"] / res["seconds"] if res["seconds"] > 0 else 0.0
    console.print(
        f"{out}: {res['episodes']} episodes ({res['generated']} generated, {res['skipped']} already there), "
        f"{res['frames_generated']} frames in {res['seconds']:.1f} s ({fps:.0f} frames/s)"
    )


@data_app.command("import")
def import_(
    src: Path = typer.Argument(..., help="Source sequence directory."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    format: str = typer.Option("tum", "--format", help="Source layout. Supported: tum (TUM RGB-D)."),
    fx: float = typer.Option(525.0, help="Focal length x in pixels (TUM default)."),
    fy: float = typer.Option(525.0, help="Focal length y in pixels."),
    cx: float = typer.Option(319.5, help="Principal point x in pixels."),
    cy: float = typer.Option(239.5, help="Principal point y in pixels."),
    depth_scale: float = typer.Option(5000.0, help="Depth PNG value per metre (TUM: 5000)."),
    max_frames: Optional[int] = typer.Option(None, help="Import at most this many frames."),
    stride: int = typer.Option(1, help="Keep every n-th frame."),
    max_time_diff: float = typer.Option(0.02, help="Largest timestamp gap (s) when associating rgb, depth and pose."),
    split: str = typer.Option("test", help="Split to record for the imported episode."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset in --out if there is one."),
) -> None:
    """Convert a real RGB-D recording into a pewm dataset (one episode, no discrete actions)."""
    from pewm.data import import_tum

    with user_errors():
        if format.lower() != "tum":
            raise ValueError(f"--format {format!r} is not supported; supported: tum")
        if not overwrite and (out / "dataset.json").exists():
            raise ValueError(f"--out {out}: already holds a dataset; pass --overwrite to replace it, "
                             "or choose another --out")
        res = import_tum(src, out, fx=fx, fy=fy, cx=cx, cy=cy, depth_scale=depth_scale, max_frames=max_frames,
                         max_time_diff=max_time_diff, stride=stride, split=split, progress=True, overwrite=overwrite)
    console.print(f"imported {src} -> {out}: {res}")


@data_app.command()
def info(
    path: Path = typer.Argument(..., help="Dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Counts, resolution, intrinsics, splits and frames of a dataset."""
    from pewm.data import open_dataset

    with user_errors():
        summary = open_dataset(path).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    table = Table(title=str(path), show_header=False)
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {b}" for a, b in v.items())
        table.add_row(str(k), str(v))
    console.print(table)


@data_app.command()
def verify(path: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Check a dataset against its manifest.json and read every file (exit 1 on any error).

    Errors: missing, extra, unfinished, truncated, corrupted or changed episode and house files
    (checksums), leftover temp files, stray files, an invalid or missing manifest.json or
    dataset.json. One line per problem: the file and what is wrong.
    """
    from pewm.data import verify_dataset

    with user_errors():
        problems = verify_dataset(path, progress=True)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        console.print(Text(p.severity, style=colour) + Text(f" {p.path}: {p.reason}"), highlight=False)
    if errors:
        console.print(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
        raise typer.Exit(1)
    console.print(Text("ok", style="green") + Text(f": every episode in {path} is readable and consistent"
                  + (f" ({len(problems)} warning(s))" if problems else "")), highlight=False)


@data_app.command()
def view(
    path: Path = typer.Argument(..., help="Dataset directory."),
    episode: int = typer.Option(0, help="Episode index."),
    out: Path = typer.Option(Path("episode.mp4"), "--out", help="Video file (.mp4 or .gif)."),
    size: int = typer.Option(256, help="Panel height in pixels."),
    fps: int = typer.Option(8, help="Frames per second."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Write a video of one episode: RGB | depth | top-down map with the path so far."""
    from pewm.eval.episode_video import write_episode_video

    with user_errors(), progress_callback("frames") as on_frame:
        ep = write_episode_video(path, episode, out, size=size, fps=fps, overwrite=overwrite, on_frame=on_frame)
    console.print(f"wrote {out} ({ep.num_frames} frames, episode {ep.episode_id}, {ep.house_id}, {ep.kind})")
