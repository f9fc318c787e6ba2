"""Does a trained reader use its memory? Denoising loss with the memory given vs dropped (issue #12).

A stage-2 reader that learned nothing from the map denoises exactly as well without it. For fixed
validation clips (their memory built from the ground-truth history before each clip, as in
training, §4) this measures the v-prediction loss of the model's EMA weights twice per noise draw,
with the **same** timesteps and noise: once with the memory, once with it dropped (the null memory
of classifier-free guidance). The paired difference ``dropped - given`` is > 0 when the memory
helps; its 95 % interval is a bootstrap over clips (the unit that varies: which places were seen).

Given a training run (``RUN/checkpoints/step_*``), every checkpoint's EMA weights are measured on the
same clips and draws: the curve of how the use of memory grows with training (``--plot``). With
several ``--model``, each later model's last weights are also compared with the first's, clip by
clip on the same noise (``versus_first``: e.g. a longer training against the shipped model; only
models that generate as many frames per clip as the first, hence read the same clips). Every row also
has the mean losses per bin of the clips' revisit share (``by_share``), and with ``--timesteps``
the last weights' losses at those fixed noise levels (``by_timestep``): where a loss falls.

    python benchmarks/memory_use.py --model runs/s2_xattn [--model src/pewm/assets/models/tiny-voxel-render]
        --data houses160 [--split val] [--clips 32] [--draws 4] [--every 1]
        [--timesteps 20,100,250,400,550,700,850,950,999]
        [--out benchmarks/results/memory_use.json] [--plot memory_use.png]
"""

from __future__ import annotations

import argparse
import platform
import re
from pathlib import Path

from _results import write_results

import numpy as np
import torch

from pewm.data.clips import ClipConfig, ClipSampler
from pewm.model import MemoryBuilder, WorldModel
from pewm.train.data import collate_clips


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """``(step, EMA weights dir)`` of every checkpoint of a training run, oldest first."""
    out = []
    for d in sorted((run / "checkpoints").glob("step_*")):
        m = re.fullmatch(r"step_(\d+)", d.name)
        if m and (d / "state.json").exists() and (d / "ema").is_dir():
            out.append((int(m.group(1)), d / "ema"))
    return out


def fixed_clips(data: str, split: str, frames: int, n: int, seed: int, history: int = 16) -> list:
    """``n`` clips of one split, drawn as training draws them (revisit-weighted), fixed by ``seed``."""
    sampler = ClipSampler(data, split, ClipConfig(future_frames=frames, history=history))
    rng = np.random.default_rng([seed, 12])
    return [sampler.sample(rng) for _ in range(n)]


@torch.no_grad()
def variant_losses(model: WorldModel, clips: list, variants: dict, draws: int, seed: int,
                   batch: int = 8) -> dict[str, np.ndarray]:
    """Per-clip v-prediction loss ``{name: (clips,)}`` under each memory variant, each the mean over
    ``draws`` (timestep, noise) pairs shared by all variants (the generator is rewound between them).
    ``variants``: name -> per-clip memories (None entries: built from the clip's ground-truth history,
    as in training), ``None`` (all from the history) or ``"dropped"`` (the null memory)."""
    model.eval()
    builder = MemoryBuilder.for_model(model)
    out = {k: [] for k in variants}
    for b0 in range(0, len(clips), batch):
        part = clips[b0:b0 + batch]
        conds = {}
        for name, mems in variants.items():
            given = None if mems in (None, "dropped") else mems[b0:b0 + batch]
            x0, cond = model.condition(collate_clips(part, model.config, builder, given))
            conds[name] = cond.drop_memory(torch.zeros(x0.shape[0], dtype=torch.bool)) if mems == "dropped" else cond
        g = torch.Generator().manual_seed(int(seed) * 7919 + b0)
        sums = {k: 0.0 for k in variants}
        for _ in range(draws):
            state = g.get_state()
            for name, cond in conds.items():
                g.set_state(state)
                sums[name] = sums[name] + model.diffusion.loss(model.denoiser, x0, cond, generator=g,
                                                               per_sample=True)["per_sample"] / draws
        for k in variants:
            out[k].append(sums[k].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def paired_losses(model: WorldModel, clips: list, draws: int, seed: int, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip v-prediction loss ``(clips,)`` with the memory given and dropped (:func:`variant_losses`)."""
    r = variant_losses(model, clips, {"given": None, "dropped": "dropped"}, draws, seed, batch)
    return r["given"], r["dropped"]


@torch.no_grad()
def timestep_losses(model: WorldModel, clips: list, timesteps: list[int], seed: int,
                    batch: int = 8) -> dict[str, np.ndarray]:
    """Per-clip v-prediction loss at fixed diffusion timesteps ``{"given"|"dropped": (clips, T)}``:
    one noise draw per clip (seeded by ``seed`` and the batch, so every model sees the same noise),
    the memory built from the clip's ground-truth history or dropped. Where along the noise levels
    does a model's loss differ?"""
    model.eval()
    builder = MemoryBuilder.for_model(model)
    sched = model.diffusion.train_scheduler
    out = {"given": [], "dropped": []}
    for b0 in range(0, len(clips), batch):
        x0, cond = model.condition(collate_clips(clips[b0:b0 + batch], model.config, builder, None))
        conds = {"given": cond, "dropped": cond.drop_memory(torch.zeros(x0.shape[0], dtype=torch.bool))}
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed) * 7919 + b0))
        for name, c in conds.items():
            cols = []
            for t in timesteps:
                tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
                v = sched.get_velocity(x0, noise, tt)
                pred = model.denoiser(sched.add_noise(x0, noise, tt), tt, c)
                cols.append((pred.float() - v.float()).pow(2).flatten(1).mean(1).numpy())
            out[name].append(np.stack(cols, axis=1))
    return {k: np.concatenate(v) for k, v in out.items()}


SHARE_BINS = ((0.0, 0.5), (0.5, 0.8), (0.8, 1.0))
"""Bins of a clip's ``revisit_share`` (the share of its target pixels the history saw)."""


def by_share(given: np.ndarray, dropped: np.ndarray, shares: np.ndarray) -> dict:
    """Mean losses per bin of :data:`SHARE_BINS` (the last bin includes 1): do the losses fall on
    clips of unseen places as much as on revisits?"""
    out = {}
    for lo, hi in SHARE_BINS:
        m = (shares >= lo) & ((shares <= hi) if hi >= 1.0 else (shares < hi))
        out[f"{lo:g}-{hi:g}"] = {"clips": int(m.sum()), "given": float(given[m].mean()) if m.any() else None,
                                 "dropped": float(dropped[m].mean()) if m.any() else None}
    return out


def summarise(given: np.ndarray, dropped: np.ndarray, boot: int = 2000, seed: int = 0) -> dict:
    d = dropped - given
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), (boot, len(d)))
    means = d[idx].mean(1)
    return {"loss_given": float(given.mean()), "loss_dropped": float(dropped.mean()),
            "gain": float(d.mean()), "gain_ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "clips_helped": float((d > 0).mean())}


def versus_first(per_clip: dict[str, tuple[np.ndarray, np.ndarray]], boot: int = 2000, seed: int = 0) -> dict:
    """Paired differences of every model's per-clip losses to the first model's (same clips, same
    noise): ``{spec: {"given": {mean, ci95}, "dropped": {...}}}`` for the models after the first;
    ``mean`` < 0 is a lower loss than the first model's; intervals are a bootstrap over clips."""
    specs = list(per_clip)
    out = {}
    rng = np.random.default_rng(seed)
    for spec in specs[1:]:
        row = {}
        for j, name in enumerate(("given", "dropped")):
            d = per_clip[spec][j] - per_clip[specs[0]][j]
            means = d[rng.integers(0, len(d), (boot, len(d)))].mean(1)
            row[name] = {"mean": float(d.mean()),
                         "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]}
        out[spec] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True,
                    help="model directory or training run (all its checkpoints); repeatable")
    ap.add_argument("--reader", default=None, help="load this reader of a model directory (e.g. voxel-xattn)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--every", type=int, default=1, help="measure every N-th checkpoint of a run (and the last)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/memory_use.json")
    ap.add_argument("--plot", default=None, help="PNG of the gain against training step (runs only)")
    ap.add_argument("--timesteps", default=None,
                    help="comma-separated diffusion timesteps: also each model's last weights' loss at each")
    a = ap.parse_args()
    try:
        timesteps = [int(t) for t in a.timesteps.split(",") if t.strip()] if a.timesteps else []
    except ValueError:
        ap.error(f"--timesteps {a.timesteps!r}: expected comma-separated integers")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.clips < 2 or a.draws < 1 or a.every < 1:
        ap.error("--clips must be >= 2, --draws and --every >= 1")
    results, clips_cache, final = {}, {}, {}  # final: per model, its last weights' per-clip losses
    for spec in a.model:
        path = Path(spec)
        if not path.exists():
            ap.error(f"--model {spec}: no such directory")
        ckpts = checkpoints(path)
        if ckpts:
            last = ckpts[-1]
            ckpts = ckpts[::a.every] + ([last] if ckpts[::a.every][-1] != last else [])
            targets = [(s, d) for s, d in ckpts]
        else:
            targets = [(None, path / "model" if (path / "model" / "config.json").exists() else path)]
        rows = []
        for step, d in targets:
            model = WorldModel.from_pretrained(d, reader=a.reader)
            key = model.config.frames
            n_t = model.diffusion.cfg.num_train_timesteps
            if not all(0 <= t < n_t for t in timesteps):  # before any loss is measured
                ap.error(f"--timesteps {a.timesteps!r}: each must be in [0, {n_t})")
            if key not in clips_cache:
                clips_cache[key] = fixed_clips(a.data, a.split, model.config.frames, a.clips, a.seed)
            g, dr = paired_losses(model, clips_cache[key], a.draws, a.seed)
            row = {"step": step, "dir": str(d), "reader": model.config.reader, **summarise(g, dr),
                   "by_share": by_share(g, dr, np.array([c.revisit_share for c in clips_cache[key]]))}
            if timesteps and (step, d) == targets[-1]:
                tl = timestep_losses(model, clips_cache[key], timesteps, a.seed)
                row["by_timestep"] = {str(t): {"given": float(tl["given"][:, i].mean()),
                                               "dropped": float(tl["dropped"][:, i].mean())}
                                      for i, t in enumerate(timesteps)}
            rows.append(row)
            final[spec] = (key, g, dr)  # (rows are oldest first: the last one stays)
            print(f"{spec} step {step}: reader {row['reader']}, loss given {row['loss_given']:.5f} dropped "
                  f"{row['loss_dropped']:.5f}, gain {row['gain']:+.5f} [{row['gain_ci95'][0]:+.5f}, "
                  f"{row['gain_ci95'][1]:+.5f}], {100 * row['clips_helped']:.0f} % of clips helped")
        results[spec] = rows
    first_key = next(iter(final.values()))[0]  # models on other clips (another H) are not compared
    comparable = {k: (g, dr) for k, (key, g, dr) in final.items() if key == first_key}
    versus = versus_first(comparable) if len(comparable) > 1 else {}
    for spec, row in versus.items():
        g = row["given"]
        print(f"{spec} minus {next(iter(comparable))}: loss given {g['mean']:+.5f} [{g['ci95'][0]:+.5f}, "
              f"{g['ci95'][1]:+.5f}] (same clips and noise)")
    write_results(a.out, {"data": a.data, "split": a.split, "clips": a.clips, "draws": a.draws, "seed": a.seed,
                          "machine": platform.processor() or platform.machine(), "models": results,
                          "versus_first": versus})
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for spec, rows in results.items():
            rows = [r for r in rows if r["step"] is not None]
            if rows:
                s = [r["step"] for r in rows]
                ax.plot(s, [r["gain"] for r in rows], marker="o", label=Path(spec).name)
                ax.fill_between(s, [r["gain_ci95"][0] for r in rows], [r["gain_ci95"][1] for r in rows], alpha=0.2)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss dropped - loss given")
        ax.set_title(f"use of memory ({a.split}, {a.clips} clips x {a.draws} draws)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
        print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
