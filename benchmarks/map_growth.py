"""Why does the surface map keep growing inside rooms it has already seen? (issue #3's size target)

For room-restricted walks (a 24-turn look-around, then ``plan_actions("loop")`` on the start room's
free space, as ``memory_throughput.py``), the 5 cm surface map is fused from the frames as they
are, and from the same frames upsampled ``s`` times (bilinear, except across depth edges where the
nearest source sample is kept) so that each frame covers its surfaces densely. If the growth after
the look-around came from sparse sampling of far surfaces (each new viewpoint filling other voxels
of an already seen surface), denser frames would shrink the final / look-around ratio; if it stays,
the growth is surfaces the look-around did not see (floor near the start, behind furniture, ...).

    python benchmarks/map_growth.py [--seeds 0 1 2] [--steps 500] [--out benchmarks/results/map_growth.json]
"""

from __future__ import annotations

import argparse

from _results import write_results
from memory_throughput import collect_in_room

import numpy as np
import torch
import torch.nn.functional as F

from pewm.memory import VoxelMap, VoxelMapConfig
from pewm.model.frame_ops import scale_intrinsics


def upsample(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, s: int, rel: float = 0.05):
    """Frames ``s`` times larger: bilinear RGB-D, nearest where a 3x3 neighbourhood spans a depth edge."""
    h, w = depth.shape[-2:]
    d = torch.as_tensor(depth, dtype=torch.float32)[:, None]
    x = torch.as_tensor(rgb).permute(0, 3, 1, 2).float()
    size = (h * s, w * s)
    valid = d > 0
    lo = -F.max_pool2d(-torch.where(valid, d, torch.full_like(d, 1e9)), 3, 1, 1)
    hi = F.max_pool2d(d, 3, 1, 1)
    edge = F.interpolate(((hi - lo) > rel * lo).float(), size=size, mode="nearest") > 0
    du = torch.where(edge, F.interpolate(d, size=size, mode="nearest"),
                     F.interpolate(d, size=size, mode="bilinear", align_corners=False))
    xu = torch.where(edge, F.interpolate(x, size=size, mode="nearest"),
                     F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    Ku = scale_intrinsics(K, (h, w), size).numpy()
    return xu.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), du[:, 0].numpy(), Ku


def growth(rgb, depth, poses, K, s: int, look: int = 24, batch: int = 8) -> dict:
    vm = VoxelMap(VoxelMapConfig.surface(0.05, max_depth=10.0))

    def add(a: int, b: int) -> None:
        r, d, Kf = rgb[a:b], depth[a:b], K
        if s > 1:
            r, d, Kf = upsample(r, d, K, s)
        vm.integrate(r, d, np.asarray(Kf, np.float32), poses[a:b].astype(np.float32))

    add(0, look)
    n0 = len(vm)
    for i in range(look, len(poses), batch):
        add(i, i + batch)
    return {"upsample": s, "lookaround_voxels": n0, "final_voxels": len(vm), "ratio": len(vm) / n0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/map_growth.json")
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        rgb, depth, poses, K, room, rooms = collect_in_room(args.steps, seed)
        rows = [growth(rgb, depth, poses, K, s) for s in (1, 2, 3)]
        runs.append({"seed": seed, "start_room": room, "rooms_visited": rooms, "surface_map": rows})
        print(f"seed {seed} (rooms {rooms}): " + ", ".join(
            f"x{r['upsample']}: {r['lookaround_voxels']} -> {r['final_voxels']} voxels (ratio {r['ratio']:.2f})"
            for r in rows), flush=True)
    write_results(args.out, {"steps": args.steps, "runs": runs})


if __name__ == "__main__":
    main()
