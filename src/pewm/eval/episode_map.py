"""A recorded episode fused into the persistent 3D map and exported (``pewm map``): ``map.ply``
(coloured points), ``map_topdown.png`` and ``map.safetensors`` (the map itself, reloadable)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from PIL import Image

from pewm.data import open_dataset
from pewm.memory import (
    PersistentMap,
    PersistentMapConfig,
    VoxelMapConfig,
    available_extractors,
    make_extractor,
    map_top_down_image,
)
from pewm.outputs import check_output_dir

CEILING_MARGIN = 0.3  # metres below a simulated house's ceiling that the top-down image keeps
MAP_FILES = ("map.ply", "map_topdown.png", "map.safetensors")


def check_episode_index(ds, episode, option: str = "--episode") -> int:
    """``episode`` when the dataset ``ds`` has an episode of that index, else a ``ValueError``
    naming ``option`` and the indices there are."""
    have = ds.episode_indices()
    if isinstance(episode, int) and not isinstance(episode, bool) and episode in have:
        return episode
    if not have:
        raise ValueError(f"{option} {episode}: the dataset {ds.root} has no episodes")
    span = f"{have[0]}..{have[-1]}" if have == list(range(have[0], have[-1] + 1)) else ", ".join(map(str, have[:8]))
    raise ValueError(f"{option} {episode}: the dataset {ds.root} has no such episode (its episodes: {span})")


def view_ceiling(generator_spec: dict) -> float | None:
    """Height above which the top-down view ignores voxels: for simulated houses (the dataset's
    generator spec names the wall height) ``CEILING_MARGIN`` below the ceiling, else None."""
    wall = (generator_spec or {}).get("sim", {}).get("house", {}).get("wall_height")
    return float(wall) - CEILING_MARGIN if wall else None


def build_map(
    dataset_dir,
    episode: int,
    out,
    voxel_size: float = 0.05,
    features: str = "rgb",
    dinov2_weights=None,
    batch: int = 8,
    z_max: float | None = None,
    px_per_m: float = 40.0,
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Fuse every frame of ``episode`` of the dataset at ``dataset_dir`` into a map with a
    ``voxel_size`` surface map and ``features`` feature voxels; write it into ``out``. Returns a
    summary (frames, voxel counts, bytes, paths). ``on_progress(done, total)`` after each batch.
    Every argument is checked before any work; an earlier map in ``out`` is replaced only with
    ``overwrite`` (:func:`pewm.outputs.check_output_dir`)."""
    if not (isinstance(voxel_size, (int, float)) and math.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"--voxel-size must be a number of metres > 0, got {voxel_size}")
    if features not in available_extractors():
        raise ValueError(f"--features {features!r}: unknown feature extractor; choose one of {available_extractors()}")
    if features == "dinov2" and dinov2_weights is None:
        raise ValueError("--features dinov2 needs --dinov2-weights DIR (a local save_pretrained directory)")
    if dinov2_weights is not None and not Path(dinov2_weights).is_dir():
        raise ValueError(f"--dinov2-weights {dinov2_weights}: no such directory")
    if z_max is not None and not math.isfinite(z_max):
        raise ValueError(f"--z-max must be a finite height in metres, got {z_max}")
    ds = open_dataset(dataset_dir)
    check_episode_index(ds, episode)
    check_output_dir(out, MAP_FILES, overwrite, remove=False)
    ep = ds.read(episode)
    if z_max is None:  # simulated houses: look below the ceiling, or the top-down view shows only it
        z_max = view_ceiling(ds.spec.generator)
    extractor = make_extractor(features, **({"weights": dinov2_weights} if features == "dinov2" else {}))
    cfg = PersistentMapConfig(features=VoxelMapConfig.paper(extractor.dim), surface=VoxelMapConfig.surface(voxel_size))
    pm = PersistentMap(cfg, extractor=extractor)
    K, T = ep.intrinsics.matrix, len(ep.rgb)
    for i in range(0, T, batch):
        pm.integrate(ep.rgb[i:i + batch], ep.depth[i:i + batch], K, ep.poses[i:i + batch])
        if on_progress is not None:
            on_progress(min(i + batch, T), T)
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


__all__ = ["CEILING_MARGIN", "MAP_FILES", "build_map", "check_episode_index", "view_ceiling"]
