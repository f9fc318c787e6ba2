"""``pewm data``: generate, import, inspect, verify and view datasets of RGB-D episodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from pewm.cli.common import console, progress, progress_callback, user_errors

# help texts are plain text: "[default: 525]" must not be read as Rich markup
data_app = typer.Typer(help="Datasets of RGB-D navigation episodes (see docs/data-format.md).", no_args_is_help=True,
                       rich_markup_mode=None)


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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset in --out that was made with "
                                   "other arguments (the same arguments resume it without this)."),
) -> None:
    """Render episodes in procedural houses with the MuJoCo simulator.

    Deterministic for the same arguments and resumable: run the same command again after an
    interruption (Ctrl-C, a crash, a kill) and only the missing or damaged episodes are generated;
    the result is byte-identical. An existing --out made with other arguments is refused, or
    replaced with --overwrite.
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
                res = generate_dataset(out, cfg, on_progress=lambda d, n: bar.update(task, completed=d),
                                       overwrite=overwrite)
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
    src: Path = typer.Argument(..., help="Source recording directory."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    format: str = typer.Option("tum", "--format", help="Source layout: tum (TUM RGB-D), scannet (ScanNet export) "
                               "or folder (generic, see docs/data-format.md)."),
    fx: Optional[float] = typer.Option(None, help="tum: focal length x in pixels [default: 525]."),
    fy: Optional[float] = typer.Option(None, help="tum: focal length y in pixels [default: 525]."),
    cx: Optional[float] = typer.Option(None, help="tum: principal point x in pixels [default: 319.5]."),
    cy: Optional[float] = typer.Option(None, help="tum: principal point y in pixels [default: 239.5]."),
    depth_scale: Optional[float] = typer.Option(None, help="Depth value per metre [default: tum 5000, scannet "
                                                "1000, folder 1000 for PNG and 1 for .npy]."),
    max_frames: Optional[int] = typer.Option(None, help="Import at most this many frames."),
    stride: int = typer.Option(1, help="Keep every n-th frame."),
    resolution: Optional[int] = typer.Option(None, help="Centre-crop and resize the frames to N x N pixels "
                                             "(intrinsics updated) [default: keep the size]."),
    max_time_diff: Optional[float] = typer.Option(None, help="tum: largest timestamp gap (s) when associating "
                                                  "rgb, depth and pose [default: 0.02]."),
    pose_convention: Optional[str] = typer.Option(None, help="folder: poses.txt holds c2w (camera-to-world) or "
                                                  "w2c (world-to-camera) poses [default: c2w]."),
    axes: Optional[str] = typer.Option(None, help="folder: camera axes of the poses, opencv (y down, z forward) or "
                                       "opengl (y up, z backward) [default: opencv]."),
    split: str = typer.Option("test", help="Split to record for the imported episode."),
    compresslevel: int = typer.Option(1, "--compresslevel", help="zlib level of the episode file, 0 (store) to 9; "
                                      "1 (the default) imports 640x480 frames ~1.6x faster than 6, into ~1.4x "
                                      "larger files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset in --out if there is one."),
) -> None:
    """Convert a real RGB-D recording into a pewm dataset (one episode, no discrete actions)."""
    from pewm.data import import_folder, import_scannet, import_tum

    with user_errors():
        fmt = format.lower()
        if fmt not in ("tum", "scannet", "folder"):
            raise ValueError(f"--format {format!r} is not supported; supported: tum, scannet, folder")
        only = {"--fx": (fx, "tum"), "--fy": (fy, "tum"), "--cx": (cx, "tum"), "--cy": (cy, "tum"),
                "--max-time-diff": (max_time_diff, "tum"), "--pose-convention": (pose_convention, "folder"),
                "--axes": (axes, "folder")}
        for opt, (value, owner) in only.items():
            if value is not None and fmt != owner:
                raise ValueError(f"{opt} applies to --format {owner} only, not {fmt}")
        if not overwrite and (out / "dataset.json").exists():
            raise ValueError(f"--out {out}: already holds a dataset; pass --overwrite to replace it, "
                             "or choose another --out")
    with user_errors(), progress_callback("importing frames") as on_progress:  # (no user text: not markup)
        common = dict(max_frames=max_frames, stride=stride, split=split, resolution=resolution,
                      on_progress=on_progress, compresslevel=compresslevel, overwrite=overwrite)
        if fmt == "tum":
            res = import_tum(src, out, fx=525.0 if fx is None else fx, fy=525.0 if fy is None else fy,
                             cx=319.5 if cx is None else cx, cy=239.5 if cy is None else cy,
                             depth_scale=5000.0 if depth_scale is None else depth_scale,
                             max_time_diff=0.02 if max_time_diff is None else max_time_diff, **common)
        elif fmt == "scannet":
            res = import_scannet(src, out, depth_scale=1000.0 if depth_scale is None else depth_scale, **common)
        else:
            res = import_folder(src, out, pose_convention=pose_convention or "c2w", axes=axes or "opencv",
                                depth_scale=depth_scale, **common)
    console.print(f"imported {src} -> {out}: {res}")


@data_app.command()
def export(
    path: Path = typer.Argument(..., help="Dataset directory."),
    out: Path = typer.Option(..., "--out", help="Directory to write the recording to (new, empty, or an earlier export with --overwrite)."),
    format: str = typer.Option(..., "--format", help="Layout: tum, scannet or folder (see docs/data-format.md)."),
    episode: int = typer.Option(0, help="Episode index."),
    pose_convention: Optional[str] = typer.Option(None, help="folder: write c2w or w2c poses [default: c2w]."),
    axes: Optional[str] = typer.Option(None, help="folder: write opencv or opengl camera axes [default: opencv]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in --out (anything "
                                   "else there is refused)."),
) -> None:
    """Write one episode as a TUM, ScanNet or folder recording (what `pewm data import` reads)."""
    from pewm.data import LAYOUTS, export_episode, open_dataset
    from pewm.data.export import clear_export_dir
    from pewm.data.folder import AXES, POSE_CONVENTIONS

    with user_errors():
        if format.lower() not in LAYOUTS:
            raise ValueError(f"--format {format!r} is not supported; supported: {', '.join(LAYOUTS)}")
        for opt, value, choices in (("--pose-convention", pose_convention, POSE_CONVENTIONS), ("--axes", axes, AXES)):
            if value is not None and format.lower() != "folder":
                raise ValueError(f"{opt} applies to --format folder only, not {format.lower()}")
            if value is not None and value not in choices:
                raise ValueError(f"{opt} {value!r} is not supported; supported: {', '.join(choices)}")
        clear_export_dir(out, overwrite, remove=False)  # (checked before the dataset is read)
        ds = open_dataset(path)
        if episode not in ds.episode_indices():
            raise ValueError(f"--episode {episode}: {path} has no such episode ({len(ds)} episode files)")
        ep = ds.read(episode)
        opts = ({"pose_convention": pose_convention or "c2w", "axes": axes or "opencv"}
                if format.lower() == "folder" else {})
        export_episode(ep, out, format.lower(), overwrite=overwrite, **opts)
    K = ep.intrinsics
    hint = (f" (import with --fx {K.fx:g} --fy {K.fy:g} --cx {K.cx:g} --cy {K.cy:g}: TUM stores no intrinsics)"
            if format.lower() == "tum" else "")
    console.print(f"wrote episode {episode} ({ep.num_frames} frames) of {path} as a {format.lower()} recording "
                  f"to {out}{hint}")


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
