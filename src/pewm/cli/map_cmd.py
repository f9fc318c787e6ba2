"""``pewm map``: fuse one dataset episode into a persistent 3D map (:func:`pewm.eval.episode_map.build_map`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``map`` command to the ``pewm`` CLI."""

    @app.command("map")
    def map_command(
        dataset_dir: Path = typer.Argument(..., help="dataset directory (pewm.data format)"),
        episode: int = typer.Option(0, "--episode", "-e", help="episode index"),
        out: Path = typer.Option(..., "--out", "-o", help="output directory"),
        voxel_size: float = typer.Option(0.05, help="voxel size (m) of the fine colour map (PLY, top-down)"),
        features: str = typer.Option("rgb", help="feature extractor for the token map: rgb | dinov2"),
        dinov2_weights: Optional[Path] = typer.Option(None, help="local DINOv2 weights dir (save_pretrained layout)"),
        z_max: Optional[float] = typer.Option(
            None, help="ignore voxels above this height in the top-down image (default for simulated houses: "
            "0.3 m below the ceiling)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace the map files of an earlier run in --out"),
    ) -> None:
        """Fuse all frames of one episode into a persistent 3D map; write map.ply, map_topdown.png, map.safetensors."""
        from pewm.cli.common import console, progress_callback, user_errors
        from pewm.eval.episode_map import build_map

        with user_errors(), progress_callback(f"fusing episode {episode}") as on_progress:
            s = build_map(dataset_dir, episode, out, voxel_size, features, dinov2_weights, z_max=z_max,
                          overwrite=overwrite, on_progress=on_progress)
        console.print(
            f"fused {s['frames']} frames: {s['feature_voxels']} feature voxels, {s['surface_voxels']} surface voxels, "
            f"{s['bytes'] / 1e6:.2f} MB\n" + "\n".join(f"  wrote {p}" for p in s["paths"]), markup=False,
            highlight=False)
