"""``pewm map``: fuse one dataset episode into a persistent 3D map and write PLY / top-down PNG / map file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def build_map(
    dataset_dir: Path,
    episode: int,
    out: Path,
    voxel_size: float = 0.05,
    features: str = "rgb",
    dinov2_weights: Optional[Path] = None,
    batch: int = 8,
    z_max: Optional[float] = None,
    progress: bool = True,
    px_per_m: float = 40.0,
) -> dict:
    """Library form of the command; returns a summary dict (voxels, bytes, paths)."""
    from PIL import Image

    from pewm.data import open_dataset
    from pewm.memory import PersistentMap, PersistentMapConfig, VoxelMapConfig, make_extractor, map_top_down_image

    ds = open_dataset(dataset_dir)
    ep = ds.read(episode)
    if z_max is None:  # simulated houses: look below the ceiling, or the top-down view shows only it
        wall = ds.spec.generator.get("sim", {}).get("house", {}).get("wall_height")
        z_max = float(wall) - 0.3 if wall else None
    kw = {"weights": dinov2_weights} if features == "dinov2" else {}
    if features == "dinov2" and dinov2_weights is None:
        raise typer.BadParameter("--features dinov2 needs --dinov2-weights DIR (a local save_pretrained directory)")
    extractor = make_extractor(features, **kw)
    cfg = PersistentMapConfig(features=VoxelMapConfig.paper(extractor.dim), surface=VoxelMapConfig.surface(voxel_size))
    pm = PersistentMap(cfg, extractor=extractor)
    K = ep.intrinsics.matrix
    T = len(ep.rgb)
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"fusing episode {episode}", total=T)
            for i in range(0, T, batch):
                pm.integrate(ep.rgb[i : i + batch], ep.depth[i : i + batch], K, ep.poses[i : i + batch])
                bar.update(task, advance=min(batch, T - i))
    else:
        for i in range(0, T, batch):
            pm.integrate(ep.rgb[i : i + batch], ep.depth[i : i + batch], K, ep.poses[i : i + batch])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ply = pm.export_ply(out / "map.ply")
    png = out / "map_topdown.png"
    Image.fromarray(map_top_down_image(pm, px_per_m=px_per_m, z_max=z_max)).save(png)
    st = pm.save(out / "map.safetensors")
    return {
        "frames": T,
        "feature_voxels": len(pm.features),
        "surface_voxels": len(pm.surface) if pm.surface is not None else 0,
        "bytes": pm.nbytes,
        "paths": [str(ply), str(png), str(st)],
    }


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
    ) -> None:
        """Fuse all frames of one episode into a persistent 3D map; write map.ply, map_topdown.png, map.safetensors."""
        from rich.console import Console

        s = build_map(dataset_dir, episode, out, voxel_size, features, dinov2_weights, z_max=z_max)
        Console().print(
            f"fused {s['frames']} frames: {s['feature_voxels']} feature voxels, {s['surface_voxels']} surface voxels, "
            f"{s['bytes'] / 1e6:.2f} MB\n" + "\n".join(f"  wrote {p}" for p in s["paths"])
        )
