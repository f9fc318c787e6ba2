"""Does a pixel-patch token carry enough to denoise? Same data, width and steps; only the patch changes.

    pewm data generate --out houses40 --houses 40 --episodes-per-house 4 --steps 200 --seed 1
    python benchmarks/token_bottleneck.py --data houses40 --patches 4 8 --steps 400

For each patch size, trains stage 1 of the tiny preset at 32x32 (so patch 4 and patch 8 both
train in minutes), then reports on validation clips: the one-step x0 prediction's RGB PSNR from
ground truth noised to level t, the PSNR of DDIM samples (1 and 10 steps), and copying the current
frame as a baseline. Writes JSON (``--out``). Used for docs/design.md ("First training run").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _results import write_results

import numpy as np
import torch

from pewm.data.clips import ClipConfig, ClipSampler
from pewm.model import WorldModel
from pewm.train import train, train_preset
from pewm.train.data import collate_clips


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of RGB in [-1, 1] (peak-to-peak 2)."""
    return float(10 * torch.log10(4 / ((a - b) ** 2).mean()))


def run(data: str, patch: int, steps: int, size: int, workdir: Path) -> dict:
    out_dir = workdir / f"patch{patch}"
    cfg = train_preset("tiny", data=data, steps=steps, lr=3e-4, warmup_steps=100, sample_every=10**6,
                       checkpoint_every=steps, log_every=10,
                       model_overrides={"image_height": size, "image_width": size, "patch_size": patch})
    train(cfg, out_dir, progress=False)
    m = WorldModel.from_pretrained(out_dir / "model").eval()
    sampler = ClipSampler(data, "val", ClipConfig(future_frames=m.config.frames), max_episodes=4)
    rng = np.random.default_rng(0)
    batch = collate_clips([sampler.sample(rng) for _ in range(8)], m.config, None)
    x0, cond = m.condition(batch)
    sched = m.diffusion.train_scheduler
    res = {"patch": patch, "values_per_token": patch * patch * 4, "width": m.config.width, "steps": steps,
           "copy_current_psnr": psnr(cond.current[:, None, :3].expand_as(x0[:, :, :3]), x0[:, :, :3])}
    for t in (50, 200, 500, 800, 999):
        tt = torch.full((x0.shape[0],), t)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        xt = sched.add_noise(x0, noise, tt)
        with torch.no_grad():
            v = m.denoiser(xt, tt, cond)
        a = sched.alphas_cumprod[t]
        res[f"x0_psnr_t{t}"] = psnr(a.sqrt() * xt[:, :, :3] - (1 - a).sqrt() * v[:, :, :3], x0[:, :, :3])
    with torch.no_grad():
        for n in (1, 10):
            xs = m.diffusion.sample(m.denoiser, cond, steps=n, generator=torch.Generator().manual_seed(0))
            res[f"ddim{n}_psnr"] = psnr(xs[:, :, :3], x0[:, :, :3])
    losses = [json.loads(ln)["loss"] for ln in (out_dir / "metrics.jsonl").read_text().splitlines()]
    res["final_loss"] = float(np.mean(losses[-5:]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset directory with train and val houses")
    ap.add_argument("--patches", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--size", type=int, default=32, help="frame size the models train at")
    ap.add_argument("--workdir", default="runs/token_bottleneck")
    ap.add_argument("--out", default="benchmarks/results/token_bottleneck.json")
    args = ap.parse_args()
    results = [run(args.data, p, args.steps, args.size, Path(args.workdir)) for p in args.patches]
    keys = [k for k in results[0] if k not in ("patch", "width", "steps")]
    print("patch " + " ".join(f"{k:>17}" for k in keys))
    for r in results:
        print(f"{r['patch']:>5} " + " ".join(f"{r[k]:17.3f}" for k in keys))
    write_results(args.out, results)


if __name__ == "__main__":
    main()
