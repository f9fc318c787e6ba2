"""How good is the map's render alone on the benchmark's revisit frames? (a ceiling for voxel-render)

For the episodes ``pewm eval`` would use (same split, cuts and revisit labels), the surface map is
built from the ground-truth history before the cut and rendered at every revisit frame's pose with
no model at all. Reported per render setting: the fraction of pixels the render covers, RGB PSNR
on covered pixels, PSNR of the whole frame with uncovered pixels filled from the render itself
(the mean colour of the view's covered pixels: the rule of ``pewm eval --memory render-only``,
:func:`pewm.eval.baselines.fill_from_render`; never from the target frame, issue #12), and depth
AbsRel on covered pixels. (Before issue #12 the fill was the *target's* mean colour over the covered
pixels: a peek at the ground truth, reported as ``psnr_full_mean_fill``.)

    python benchmarks/render_ceiling.py --data houses160 [--split val] [--max-episodes 16]
        [--out benchmarks/results/render_ceiling.json]
"""

from __future__ import annotations

import argparse
import platform

from _results import write_results

import numpy as np
import torch
import torch.nn.functional as F

from pewm.eval.baselines import fill_from_render
from pewm.eval.benchmark import BenchmarkConfig, load_episodes
from pewm.memory import VoxelMap, VoxelMapConfig
from pewm.model.frame_ops import scale_intrinsics


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (a - b) ** 2
    mse = d.mean() if mask is None else d[mask].mean()
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))


def measure(episodes, voxel: float, supersample: int, splat_scale: float, res: int) -> dict:
    rows = []
    for e in episodes:
        c = e.cut
        vm = VoxelMap(VoxelMapConfig.surface(voxel, max_depth=10.0, splat_scale=splat_scale))
        vm.integrate(e.frames_rgb[:c + 1], e.frames_depth[:c + 1], e.K.astype(np.float32),
                     e.poses[:c + 1].astype(np.float32))
        idx = [c + 1 + i for i, r in enumerate(e.revisit) if r]
        if not idx:
            continue
        s = supersample
        K = scale_intrinsics(e.K, (res, res), (res * s, res * s))
        r = vm.render(K, torch.from_numpy(e.poses[idx]).float(), res * s, res * s)
        img, dep, cov = r.image.float(), r.depth.float(), r.mask.float()
        if s > 1:  # as pewm.model.readers.voxel_render.rendered_input (colour and coverage)
            frac = F.avg_pool2d(cov[:, None], s)
            img = F.avg_pool2d(img * cov[:, None], s) / frac.clamp_min(1e-6)
            dep = (F.avg_pool2d((dep * cov)[:, None], s) / frac.clamp_min(1e-6))[:, 0]
            cov = frac[:, 0] >= 0.5
        else:
            cov = cov > 0.5
        covf = cov.float()
        filled, _ = fill_from_render(torch.cat([img * covf[:, None], (dep * covf)[:, None], covf[:, None]], 1),
                                     e.frames_depth[:c + 1])
        for j, t in enumerate(idx):
            gt = e.frames_rgb[t].astype(np.float32) / 255.0
            im = img[j].permute(1, 2, 0).numpy().clip(0, 1)
            m = cov[j].numpy()
            fill = filled[j].astype(np.float32) / 255.0
            gd, rd = e.frames_depth[t], dep[j].numpy()
            ok = m & (gd > 0)
            rows.append((m.mean(), _psnr(im, gt, m) if m.any() else np.nan, _psnr(fill, gt),
                         float(np.mean(np.abs(rd[ok] - gd[ok]) / gd[ok])) if ok.any() else np.nan))
    a = np.asarray(rows, dtype=np.float64)
    return {"frames": len(a), "coverage": float(np.nanmean(a[:, 0])), "psnr_covered": float(np.nanmean(a[:, 1])),
            "psnr_full_render_fill": float(np.nanmean(a[:, 2])), "absrel_covered": float(np.nanmean(a[:, 3]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset directory (as for pewm eval)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-episodes", type=int, default=16)
    ap.add_argument("--horizon", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/render_ceiling.json")
    args = ap.parse_args()
    cfg = BenchmarkConfig(data=args.data, split=args.split, max_episodes=args.max_episodes, horizon=args.horizon)
    episodes = load_episodes(cfg, args.resolution)
    settings = [(0.05, 1, 1.25), (0.05, 2, 1.25), (0.04, 1, 1.25), (0.04, 2, 1.25), (0.05, 1, 1.0), (0.05, 1, 1.5)]
    results = []
    for voxel, ss, splat in settings:
        r = {"surface_voxel": voxel, "render_supersample": ss, "splat_scale": splat,
             **measure(episodes, voxel, ss, splat, args.resolution)}
        results.append(r)
        print(f"voxel {voxel:.2f} m  supersample {ss}  splat {splat:.2f}: {r['frames']} revisit frames, coverage "
              f"{r['coverage']:.3f}, PSNR covered {r['psnr_covered']:.2f} dB, full (render's mean fill) "
              f"{r['psnr_full_render_fill']:.2f} dB, AbsRel covered {r['absrel_covered']:.3f}", flush=True)
    write_results(args.out, {
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "data": args.data, "split": args.split, "episodes": len(episodes), "horizon": args.horizon,
        "settings": results,
    })


if __name__ == "__main__":
    main()
