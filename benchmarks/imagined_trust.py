"""What does reading the chunk it imagined do to the model's next prediction? (issue #12)

In a rollout the map holds chunks the model generated; fused at once they made later chunks worse
(docs/design.md, "Session 8"). ``pewm train --imagined-memory`` trains on such memories; this script
measures, on fixed validation clips and *without sampling the clip itself*, whether a model learned
to read them. For each clip (drawn as training draws them, with room for a rollout that started
``1 + D`` chunks before it, :func:`pewm.train.imagined.rollout_start`) the v-prediction loss of the
model's EMA weights is computed, with the same timesteps and noise, under four memories:

* ``truth``: the ground-truth history up to the clip (what §4 trains on),
* ``start``: only the ground truth up to the rollout's start ``c``,
* ``imagined``: ``start`` plus the chunk after ``c`` as the model itself imagined it (fused as a
  rollout fuses it: novel-only, as imagined),
* ``dropped``: no memory.

``start - imagined`` > 0 means reading its own imagination helps the next prediction; the 95 %
interval is a bootstrap over clips. Several models (e.g. before and after ``--imagined-memory``
training) are measured on the same clips and noise.

    python benchmarks/imagined_trust.py --model src/pewm/assets/models/tiny-voxel-render --model runs/b/model
        --data houses160 [--split val] [--clips 48] [--draws 4] [--steps 4] [--out ...]
"""

from __future__ import annotations

import argparse
import platform

from _results import write_results
from memory_use import variant_losses

import numpy as np
import torch

from pewm.assets import load_model
from pewm.data.clips import ClipConfig, ClipSampler
from pewm.model import MemoryBuilder
from pewm.train.imagined import imagine_first_chunk, read_for, start_memory

VARIANTS = ("truth", "start", "imagined", "dropped")


def clips_with_room(sampler: ClipSampler, frames: int, delay: int, n: int, seed: int) -> list:
    """``n`` clips drawn as training draws them that leave room for a rollout starting ``1 + delay`` chunks before."""
    rng = np.random.default_rng([seed, 13])
    out = []
    for _ in range(1000 * n):
        if len(out) == n:
            break
        c = sampler.sample(rng)
        if int(c.frame_indices[0]) - (1 + delay) * frames * int(c.frame_indices[1] - c.frame_indices[0]) >= 0:
            out.append(c)
    if len(out) < n:
        raise ValueError(f"{sampler.root}: found only {len(out)} of {n} clips with room for a rollout "
                         f"{1 + delay} chunks long before them (episodes too short?)")
    return out


def memories(model, sampler: ClipSampler, clips: list, steps: int, seed: int) -> dict[str, list]:
    """Per clip, the ``start`` and ``imagined`` memories (the model's own chunk, noise seeded per clip)."""
    builder = MemoryBuilder.for_model(model)
    start, imagined = [], []
    for i, clip in enumerate(clips):
        mem, first = start_memory(model, builder, sampler, clip)
        start.append(read_for(mem, clip, model.config))
        imagine_first_chunk(model, mem, first, steps, torch.Generator().manual_seed(int(seed) * 1000003 + i))
        imagined.append(read_for(mem, clip, model.config))
    return {"truth": None, "start": start, "imagined": imagined, "dropped": "dropped"}


def paired(a: np.ndarray, b: np.ndarray, boot: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` per clip with a 95 % bootstrap interval over clips."""
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), (boot, len(d)))
    m = d[idx].mean(1)
    return {"mean": float(d.mean()), "ci95": [float(np.quantile(m, 0.025)), float(np.quantile(m, 0.975))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="model directory (repeatable)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps of the imagined chunk")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/imagined_trust.json")
    a = ap.parse_args()
    if a.clips < 2 or a.draws < 1 or a.steps < 1:
        ap.error("--clips must be >= 2, --draws and --steps >= 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    models = {spec: load_model(spec) for spec in a.model}
    first = next(iter(models.values()))
    delay = int((first.memory_build or {}).get("imagined_fuse_delay_chunks", 0))
    sampler = ClipSampler(a.data, a.split, ClipConfig(future_frames=first.config.frames))
    clips = clips_with_room(sampler, first.config.frames, delay, a.clips, a.seed)
    results = {}
    for spec, model in models.items():
        model.memory_build = {**(model.memory_build or {}), "imagined_fuse_delay_chunks": delay}  # the same clips
        with torch.no_grad():
            losses = variant_losses(model, clips, memories(model, sampler, clips, a.steps, a.seed), a.draws, a.seed)
        row = {f"loss_{k}": float(losses[k].mean()) for k in VARIANTS}
        row["imagined_helps"] = paired(losses["start"], losses["imagined"])
        row["history_helps"] = paired(losses["start"], losses["truth"])
        row["start_helps"] = paired(losses["dropped"], losses["start"])
        results[spec] = row
        h = row["imagined_helps"]
        print(f"{spec}: loss truth {row['loss_truth']:.5f} start {row['loss_start']:.5f} imagined "
              f"{row['loss_imagined']:.5f} dropped {row['loss_dropped']:.5f}; reading its own chunk: "
              f"{h['mean']:+.5f} [{h['ci95'][0]:+.5f}, {h['ci95'][1]:+.5f}] (> 0 helps)")
    write_results(a.out, {"data": a.data, "split": a.split, "clips": a.clips, "draws": a.draws, "steps": a.steps,
                          "seed": a.seed, "delay_chunks": delay, "machine": platform.processor() or platform.machine(),
                          "models": results})


if __name__ == "__main__":
    main()
