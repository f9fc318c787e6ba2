"""Long-horizon consistency (the paper's Fig. 4-5): do places stay the same when the agent comes back?

In held-out houses (the demo's seed stream, never used by ``pewm data generate``) the model imagines
a walk of ``steps`` actions from one ground-truth start view: turn away and back twice, then to
another place and back (:func:`pewm.eval.walks.ground_truth`). A frame is **returning** when an earlier
frame of the same walk (at least 8 frames before it) had nearly the same camera (within 0.5 m
and 30°, :func:`~pewm.eval.metrics.match_first_visits`). For the returning frames this reports
PSNR / SSIM of the generated frame against the ground truth and against the model's **own**
generated frame of the first visit (self-consistency: the memory should reproduce what it
imagined even where it could not know the truth), with and without the memory.

Given ``episodes`` (``pewm eval`` passes them for a dataset of pose-only recordings, issue #16), the
probe runs on those instead: each is a walk from its first frame along its recorded camera poses
(:func:`pewm.eval.walks.walk_from_episode`), ``steps`` long or to the episode's end; the result's
``source`` says which (``"held-out simulated houses"`` or ``"dataset episodes"``).
"""

from __future__ import annotations

import numpy as np

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pewm.eval.metrics import match_first_visits, psnr, ssim
from pewm.eval.walks import WalkConfig, ground_truth, imagine, walk_from_episode
from pewm.model import SamplingConfig


def long_horizon_consistency(model, houses: int = 4, steps: int = 128, seed: int = 1000,
                             sampling: SamplingConfig | None = None, console=None, fuse: str = "novel",
                             episodes=None, allow_any_fov: bool = False) -> dict:
    """Run the probe in ``houses`` held-out houses; returns ``{mode: {...}}`` with ``mode`` the
    model's reader and ``none`` (the same model with an empty memory). ``episodes``: instead, an
    iterable of ``houses`` ``(name, pewm.data.Episode)`` pairs (read lazily) whose recorded walks are
    imagined along their poses (noise seeded ``seed + i``); ``allow_any_fov`` is for those only."""
    if houses < 1 or steps < 16:
        raise ValueError(f"long-horizon probe: need houses >= 1 and steps >= 16, got {houses}, {steps}")
    res = model.config.image_height
    modes = {model.config.reader: True, "none": False}
    per = {m: {"gt_psnr": [], "gt_ssim": [], "self_psnr": [], "self_ssim": []} for m in modes}
    frames = 0
    it = iter(episodes) if episodes is not None else None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("long-horizon probe", total=houses * len(modes))
        for i in range(houses):
            cfg = WalkConfig(seed=seed + i, steps=steps)
            if it is None:
                ep, any_fov = ground_truth(cfg, res), False
            else:
                name, recorded = next(it)
                ep = walk_from_episode(recorded, res, 0, min(steps, len(recorded.poses) - 1), source=name)
                any_fov = allow_any_fov
            match = match_first_visits(ep.poses, None)
            ret = np.nonzero(match >= 0)[0]
            frames += len(ret)
            for mode, use in modes.items():
                rgb, _, _, _ = imagine(model, ep, use, sampling, cfg.seed, fuse, allow_any_fov=any_fov)
                if len(ret):
                    per[mode]["gt_psnr"].append(float(np.mean(psnr(rgb[ret], ep.rgb[ret]))))
                    per[mode]["gt_ssim"].append(float(np.mean(ssim(rgb[ret], ep.rgb[ret]))))
                    per[mode]["self_psnr"].append(float(np.mean(psnr(rgb[ret], rgb[match[ret]]))))
                    per[mode]["self_ssim"].append(float(np.mean(ssim(rgb[ret], rgb[match[ret]]))))
                progress.advance(task)
    out = {"houses": houses, "steps": steps, "returning_frames": frames,
           "source": "held-out simulated houses" if episodes is None else "dataset episodes", "modes": {}}
    for mode, d in per.items():
        out["modes"][mode] = {
            k: ({"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0} if v else None)
            for k, v in d.items()
        }
    return out


def long_horizon_markdown(r: dict) -> str:
    held_out = r.get("source", "held-out simulated houses") == "held-out simulated houses"
    where = f"{r['houses']} held-out houses" if held_out else f"{r['houses']} dataset episodes along their recorded poses"
    lines = [
        f"## Long-horizon consistency ({where}, {r['steps']} imagined steps, "
        f"{r['returning_frames']} returning frames)",
        "",
        f"Mean ± std over {'houses' if held_out else 'episodes'}. *vs ground truth*: the returning frame against the true view; *vs own "
        "first visit*: against the model's own generated frame of the first visit.",
        "",
        "| memory | PSNR↑ vs ground truth | SSIM↑ vs ground truth | PSNR↑ vs own first visit | SSIM↑ vs own first visit |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, d in r["modes"].items():
        cell = [("–" if d[k] is None else f"{d[k]['mean']:.{p}f} ± {d[k]['std']:.{p}f}")
                for k, p in (("gt_psnr", 2), ("gt_ssim", 3), ("self_psnr", 2), ("self_ssim", 3))]
        lines.append(f"| `{mode}` | " + " | ".join(cell) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["long_horizon_consistency", "long_horizon_markdown"]
