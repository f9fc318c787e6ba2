"""The two-stage training loop (§4 "Training" of arXiv 2505.05495).

* Stage 0 (``stage="autoencoder"``, latent-space models only, e.g. the ``tiny`` preset): the RGB-D
  autoencoder (:mod:`pewm.model.autoencoder`) is trained on the clips' frames; its latent
  statistics are calibrated at every checkpoint and at the end. Stage 1 then starts from it
  (``init``) with the autoencoder frozen.
* Stage 1 (``stage="backbone"``): the whole backbone is trained on navigation clips with an empty
  memory; the memory reader is frozen (it stays at its identity initialisation, its ``init`` option).
* Stage 2 (``stage="memory"``): the model is loaded from a stage-1 run (``init``) with
  ``WorldModel.from_pretrained(..., reader=...)`` (the memory blocks start as the identity, so the
  model starts as exactly the stage-1 model; ``TrainConfig.reader_options`` re-initialise
  the reader with other options), the backbone is frozen and only the memory reader
  (tokenizer + memory blocks) is trained. Each clip's memory is built from its ground-truth history.

AdamW (lr 1e-4, linear warmup), gradient clipping at 1.0, optional bf16 autocast, EMA weights,
gradient accumulation, DDP under ``torchrun``. A run directory holds::

    RUN/config.json        the resolved TrainConfig
    RUN/metrics.jsonl      one line per log step: step, loss, loss_rgb, loss_depth, lr, grad_norm,
                           seconds (per step), revisit_share (of the batch), samples_per_s, elapsed
    RUN/samples/step_XXXXXX.mp4   ground truth | generated (RGB and depth, EMA weights)
    RUN/checkpoints/step_XXXXXXXX/  see :mod:`pewm.train.checkpoint`
    RUN/model/             the final EMA model (WorldModel.save_pretrained)

Resuming restores model, EMA, optimizer, scheduler, every RNG (python, numpy, torch, the data
sampler's generator, the loss's generator), the step and the metrics of the steps since the last
metrics.jsonl line, so a resumed run reproduces the weights and metrics.jsonl of an uninterrupted
one exactly, apart from the timing fields seconds, samples_per_s and elapsed (tested).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pewm.atomic import atomic_write_text
from pewm.data import require_complete
from pewm.data.clips import ClipSampler
from pewm.model import ClipBatch, MemoryBuilder, ModelConfig, SamplingConfig, WorldModel
from pewm.outputs import OVERWRITE_OPTION, check_output_dir
from pewm.video import colorize_depth, hstack_panels, label, resize_nearest, write_video
from pewm.train import distributed as D
from pewm.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_torch,
    read_state,
    remove_stale_temps,
    resolve_model_dir,
    save_torch,
    write_checkpoint,
)
from pewm.train.config import TrainConfig
from pewm.train.data import clip_memory, clip_tensors, collate_clips
from pewm.train.ema import EMA
from pewm.train.imagined import imagined_memories

METRICS_NAME = "metrics.jsonl"
# what a run writes into its directory: never replaced without --resume (continue) or --overwrite
RUN_ARTEFACTS = ("config.json", METRICS_NAME, "model", "samples", "checkpoints")
# config fields that may differ between a stage-1 model and the stage-2 preset
_INIT_FREE_FIELDS = {"reader", "memory_dropout", "reader_options"}


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)  # per optimizer step run in this process
    model_dir: Path | None = None


def _line_step(line: str) -> float:
    """The step of a metrics.jsonl line (inf for a torn or empty one, which is then dropped)."""
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return math.inf


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warmup from ~0 to ``lr`` over ``warmup_steps``, then constant (or cosine to 0)."""
    warm, total, sched = cfg.warmup_steps, cfg.steps, cfg.lr_schedule

    def f(step: int) -> float:  # step = optimizer steps taken so far
        if warm > 0 and step < warm:
            return (step + 1) / warm
        if sched == "cosine":
            p = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * p))
        return 1.0

    return f


def _rng_state(data_rng: np.random.Generator, loss_gen: torch.Generator) -> dict:
    st = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "data": data_rng.bit_generator.state,
        "loss": loss_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict, data_rng: np.random.Generator, loss_gen: torch.Generator) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    data_rng.bit_generator.state = st["data"]
    loss_gen.set_state(st["loss"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def check_init_compatible(init_cfg: ModelConfig, want: ModelConfig, where) -> None:
    """Raise a clear error when a stage-1 model does not have the preset's architecture."""
    a, b = init_cfg.to_dict(), want.to_dict()
    diff = sorted(k for k in b if k not in _INIT_FREE_FIELDS and k != "diffusion" and a.get(k) != b[k])
    diff += sorted(
        f"diffusion.{k}" for k in b["diffusion"]
        if k not in ("sampling_steps", "guidance_scale", "anchor") and a["diffusion"].get(k) != b["diffusion"][k]
    )
    if diff:
        parts = ", ".join(
            f"{k}: init {a['diffusion'][k[10:]] if k.startswith('diffusion.') else a[k]!r} vs preset "
            f"{b['diffusion'][k[10:]] if k.startswith('diffusion.') else b[k]!r}"
            for k in diff[:5]
        )
        raise ValueError(f"--init {where}: incompatible with the requested model preset ({parts})")


class Trainer:
    """One training run (see the module docstring). ``Trainer(cfg, out).run()``."""

    def __init__(self, cfg: TrainConfig, out, resume: bool = False, progress: bool = True, overwrite: bool = False):
        self.cfg = cfg.validate()
        self.out = Path(out)
        self.progress = progress
        self.overwrite = overwrite  # replace an earlier run in ``out`` (its artefacts are removed first)
        self.dist = D.init_distributed(cfg.device)
        try:
            self._setup(resume)
        except BaseException:
            D.cleanup(self.dist)
            raise

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self, resume: bool) -> None:
        cfg, info = self.cfg, self.dist
        ckpt = None
        if resume and self.overwrite:
            raise ValueError(f"--resume continues the run in --out and {OVERWRITE_OPTION} replaces it: give one of them")
        if resume:
            ckpt = latest_checkpoint(self.out)
            if ckpt is None:
                raise FileNotFoundError(
                    f"--resume: no checkpoint in {self.out / 'checkpoints'} (nothing to resume; drop --resume to start)"
                )
        elif list_checkpoints(self.out) and not self.overwrite:
            raise ValueError(f"--out {self.out} already holds a run with checkpoints; pass --resume to continue it, "
                             f"{OVERWRITE_OPTION} to replace it, or choose another --out")
        if not resume:  # a finished run (model/, config.json, metrics.jsonl) is never replaced silently
            check_output_dir(self.out, RUN_ARTEFACTS, self.overwrite, remove=False)  # removed once setup succeeded
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = D.resolve_device(cfg.device, info)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)  # identical model initialisation on every rank

        # data
        data = Path(cfg.data)
        if not data.is_dir():
            raise FileNotFoundError(f"--data {data}: no such dataset directory")
        if not cfg.allow_incomplete:
            require_complete(data)  # cheap: file names, sizes and manifest.json; no episode is opened
        self.model_cfg = cfg.model_config()
        if cfg.memory_dropout is not None:
            self.model_cfg = self.model_cfg.replace(memory_dropout=cfg.memory_dropout)
        self.clip_cfg = cfg.clip_config(self.model_cfg.frames)
        if self.clip_cfg.future_frames != self.model_cfg.frames:
            raise ValueError(
                f"future_frames={self.clip_cfg.future_frames} but the model generates H={self.model_cfg.frames} frames"
            )
        self.sampler = ClipSampler(data, cfg.split, self.clip_cfg, max_episodes=cfg.max_episodes)

        # model
        if cfg.init:
            mdir = resolve_model_dir(cfg.init)
            init_cfg = WorldModel.load_config(mdir)
            check_init_compatible(init_cfg, self.model_cfg, cfg.init)
            model = WorldModel.from_pretrained(mdir, reader=cfg.reader)
            if cfg.reader_options is not None:  # (a resumed run then loads its trained reader from the checkpoint)
                torch.manual_seed(cfg.seed)
                model.reinit_reader(cfg.reader_options, keep_trained=cfg.keep_reader_weights)
            self.model_cfg = model.config.replace(memory_dropout=self.model_cfg.memory_dropout)
        else:
            model = WorldModel(self.model_cfg)
        model.to(self.device)
        ae_stage, stage1 = cfg.stage == "autoencoder", cfg.stage == "backbone"
        if ae_stage and model.autoencoder is None:
            raise ValueError(
                f"--stage autoencoder: model preset {cfg.preset!r} works in pixel space and has no autoencoder "
                "(set ModelConfig.autoencoder, as the tiny preset does)"
            )
        if stage1 and model.autoencoder is not None and not cfg.init:
            raise ValueError(
                "--stage backbone: this model diffuses autoencoder latents; train the autoencoder first "
                "(--stage autoencoder) and pass that run as --init"
            )
        model.requires_grad_(False)
        group = model.autoencoder_parameters() if ae_stage else (
            model.backbone_parameters() if stage1 else model.memory_parameters())
        for p in group:
            p.requires_grad_(True)
        model.denoiser.run_memory_blocks = cfg.stage == "memory"  # exact: the blocks are the identity before
        self.model = model
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.builder = MemoryBuilder(self.model_cfg, cfg.memory, autoencoder=model.autoencoder) \
            if cfg.stage == "memory" else None
        if cfg.stage == "memory":  # saved with the model: evaluation builds memories the same way
            model.memory_build = self.builder.resolved_config().to_dict()
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_warmup)
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.ddp = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            kw = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.ddp = DDP(model, **kw)

        # randomness: data and noise differ per rank
        self.data_rng = np.random.default_rng([cfg.seed, info.rank])
        self.loss_gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1009 + info.rank + 1)
        self.step = 0
        self.window: dict[str, list[float]] = {}  # per-step metrics since the last metrics.jsonl line
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        if info.is_main:
            if self.overwrite and not resume:  # --overwrite: the earlier run goes only now that setup succeeded
                check_output_dir(self.out, RUN_ARTEFACTS, overwrite=True)
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out)  # left by a killed run
            cfg.save(self.out / "config.json")
            self._truncate_metrics()
        D.barrier(info)
        self.sample_clip = self.sampler.sample(np.random.default_rng([cfg.seed, 424242])) if info.is_main else None

    # -- autoencoder stage -----------------------------------------------------------------------
    @torch.no_grad()
    def calibrate_latents(self, clips: int = 32) -> None:
        """Set the autoencoder's latent mean/std (model and EMA) from ``clips`` fixed clips' frames."""
        rng = np.random.default_rng([self.cfg.seed, 777])
        batch = collate_clips([self.sampler.sample(rng) for _ in range(clips)], self.model_cfg)
        rgb = batch.rgb.float().flatten(0, 1) / 255.0
        x = self.model.denoiser.normalize_frames(rgb, batch.depth.float().flatten(0, 1))
        for m in (self.model, self.ema.model):
            m.autoencoder.calibrate(x.to(self.device))
    def _truncate_metrics(self) -> None:
        """Drop metric lines past the restored step (written after the last checkpoint of a crashed run)."""
        path = self.out / METRICS_NAME
        if not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if _line_step(ln) <= self.step]  # (torn line: dropped)
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (collective under DDP; rank 0 writes)."""
        if self.cfg.stage == "autoencoder":
            self.calibrate_latents()
        ranks = D.gather_objects((_rng_state(self.data_rng, self.loss_gen), self.window), self.dist)
        rngs, windows = [r for r, _ in ranks], [w for _, w in ranks]
        path = None
        if self.dist.is_main:
            def write(d: Path) -> None:
                self.model.save_pretrained(d / "model")
                self.ema.model.save_pretrained(d / "ema")
                save_torch(self.optimizer.state_dict(), d / "optimizer.pt")
                save_torch({"scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict()}, d / "scheduler.pt")
                save_torch({"ranks": rngs, "log_windows": windows}, d / "rng.pt")  # (a window may span a checkpoint)

            state = {"world_size": self.dist.world_size, "config": self.cfg.to_dict()}
            path = write_checkpoint(self.out, self.step, write, state, keep=self.cfg.keep_checkpoints)
        D.barrier(self.dist)
        return path

    def _load_checkpoint(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = read_state(ckpt)
        self.model.load_state_dict(load_file(str(ckpt / "model" / "model.safetensors"), device=str(self.device)))
        self.ema.model.load_state_dict(load_file(str(ckpt / "ema" / "model.safetensors"), device=str(self.device)))
        self.optimizer.load_state_dict(load_torch(ckpt / "optimizer.pt"))
        sch = load_torch(ckpt / "scheduler.pt")
        self.scheduler.load_state_dict(sch["scheduler"])
        self.ema.load_state_dict(sch["ema"])
        saved = load_torch(ckpt / "rng.pt")
        rngs = saved["ranks"]
        if len(rngs) == self.dist.world_size:
            _set_rng_state(rngs[self.dist.rank], self.data_rng, self.loss_gen)
            self.window = {k: list(v) for k, v in saved.get("log_windows", [{}] * len(rngs))[self.dist.rank].items()}
        else:  # a different world size: continue with fresh per-rank streams derived from the step
            self.data_rng = np.random.default_rng([self.cfg.seed, self.dist.rank, int(state["step"])])
            self.loss_gen.manual_seed(self.cfg.seed * 1009 + self.dist.rank + 1 + int(state["step"]) * 7919)
        self.step = int(state["step"])

    # -- one step --------------------------------------------------------------------------------
    def next_batches(self) -> tuple[list[ClipBatch], float]:
        """``grad_accum`` batches of ``batch_size`` clips and their mean revisit share."""
        batches, shares = [], []
        for _ in range(self.cfg.grad_accum):
            clips = [self.sampler.sample(self.data_rng) for _ in range(self.cfg.batch_size)]
            shares += [c.revisit_share for c in clips]
            batches.append(collate_clips(clips, self.model_cfg, self.builder, self.imagined_memories(clips)))
        return batches, float(np.mean(shares))

    def imagined_memories(self, clips) -> list | None:
        """Per clip, with probability ``imagined_memory``, a rollout's memory (:mod:`pewm.train.imagined`)."""
        if not self.cfg.imagined_memory or self.builder is None or not self.builder.reads_memory:
            return None
        out = imagined_memories(self.ema.model, self.builder, self.sampler, clips, self.cfg.imagined_memory,
                                self.cfg.imagined_memory_steps, self.data_rng)
        self.window.setdefault("imagined_share", []).append(float(np.mean([m is not None for m in out])))
        return out

    def autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batches: list[ClipBatch], generator: torch.Generator | None = None) -> dict[str, float]:
        """One optimizer step over ``batches`` (gradient accumulation); returns the step's metrics."""
        gen = self.loss_gen if generator is None else generator
        self.ddp.train()
        n = len(batches)
        sums: dict[str, float] = {}
        kw = {"objective": "autoencoder"} if self.cfg.stage == "autoencoder" else {
            "memory_dropout": self.model_cfg.memory_dropout}
        for i, b in enumerate(batches):
            sync = i == n - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                with self.autocast():
                    out = self.ddp(b, generator=gen, **kw)
                (out["loss"] / n).backward()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / n
        if self.cfg.grad_clip is not None:
            gn = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip))
        else:
            gn = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.trainable if p.grad is not None])))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        self.step += 1
        return {**sums, "grad_norm": gn, "lr": lr}

    # -- samples ---------------------------------------------------------------------------------
    def write_sample(self) -> Path | None:
        """``RUN/samples/step_XXXXXX.mp4``: ground truth | generated (RGB, depth), EMA weights."""
        if not self.dist.is_main or self.sample_clip is None:
            return None

        clip, cfg = self.sample_clip, self.model_cfg
        rgb, depth, poses, K = clip_tensors(clip, cfg)
        mem = None
        if self.builder is not None and self.builder.reads_memory:
            mem = clip_memory(clip, self.builder)
        m = self.ema.model
        gt_rgb = rgb.permute(0, 2, 3, 1).numpy()
        if self.cfg.stage == "autoencoder":  # ground truth | reconstruction
            with torch.no_grad():
                x = m.denoiser.normalize_frames(rgb.float().to(m.device) / 255.0, depth.float().to(m.device))
                rec_rgb, rec_depth = m.denoiser.denormalize_frames(m.decode_frames(m.encode_frames(x)).clamp(-1, 1))
            gen_rgb = (rec_rgb.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
            gen_depth = rec_depth.cpu().numpy()
        else:
            g = torch.Generator(device="cpu").manual_seed(self.cfg.seed + 17)
            with self.autocast():
                gen = m.generate(rgb[0].permute(1, 2, 0)[None], depth[0][None], poses[0][None], K,
                                 poses=poses[1:][None], memory=mem,
                                 sampling=SamplingConfig(steps=self.cfg.sample_steps), generator=g)
            gen_rgb = np.concatenate([gt_rgb[:1], gen.rgb[0].numpy()])
            gen_depth = np.concatenate([depth[:1].numpy(), gen.depth[0].numpy()])
        dmax = float(cfg.depth_max) if not np.isfinite(depth.numpy()).all() else max(float(depth.max()), 1e-3)
        size = max(128, cfg.image_height)
        frames = []
        for t in range(cfg.frames + 1):
            tag = "current" if t == 0 else f"t+{t}"
            panels = [
                label(resize_nearest(gt_rgb[t], size), f"GT {tag}"),
                label(resize_nearest(gen_rgb[t], size), "reconstructed" if self.cfg.stage == "autoencoder" else "generated"),
                label(resize_nearest(colorize_depth(depth[t].numpy(), dmax), size), "GT depth"),
                label(resize_nearest(colorize_depth(gen_depth[t], dmax), size), "gen depth"),
            ]
            frames.append(hstack_panels(panels))
        return write_video(self.out / "samples" / f"step_{self.step:06d}.mp4", frames, fps=4)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, info = self.cfg, self.dist
        result = TrainResult(self.out, self.step)
        bar = task = None
        if self.progress and info.is_main:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            console = Console(stderr=True)

            bar = Progress(
                TextColumn(f"[bold]{cfg.stage}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.2f} it/s"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
            )
            bar.start()
            task = bar.add_task("train", total=cfg.steps, completed=self.step, loss=float("nan"), ips=0.0)
        t_start = time.perf_counter()
        acc = self.window
        try:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                batches, share = self.next_batches()
                m = self.train_step(batches)
                dt = time.perf_counter() - t0
                result.losses.append(m["loss"])
                for k, v in {**m, "revisit_share": share, "seconds": dt}.items():
                    acc.setdefault(k, []).append(v)
                if bar is not None:
                    bar.update(task, completed=self.step, loss=m["loss"], ips=1.0 / max(dt, 1e-9))
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    means = {k: float(np.mean(v)) for k, v in acc.items()}
                    means["lr"] = acc["lr"][-1]
                    means = D.all_reduce_mean(means, info, self.device if self.device.type == "cuda" else "cpu")
                    acc.clear()
                    if info.is_main:
                        n_samples = cfg.batch_size * cfg.grad_accum * info.world_size
                        rec = {"step": self.step, **{k: means[k] for k in (
                            "loss", "loss_rgb", "loss_depth", "psnr_rgb", "lr", "grad_norm", "seconds", "revisit_share",
                            "imagined_share")
                            if k in means},
                            "samples_per_s": n_samples / max(means["seconds"], 1e-9),
                            "elapsed": time.perf_counter() - t_start}
                        with open(self.out / METRICS_NAME, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                if self.step % cfg.sample_every == 0:
                    self.write_sample()
                if self.step % cfg.checkpoint_every == 0 or last:
                    self.save_checkpoint()
            if info.is_main:
                if cfg.stage == "autoencoder":
                    self.calibrate_latents()
                result.model_dir = self.ema.model.save_pretrained(self.out / "model")
            D.barrier(info)
        finally:
            if bar is not None:
                bar.stop()
        result.step = self.step
        return result

    def close(self) -> None:
        D.cleanup(self.dist)


def train(cfg: TrainConfig, out, resume: bool = False, progress: bool = True, overwrite: bool = False) -> TrainResult:
    """Run (or ``resume``) training into the run directory ``out``; returns a :class:`TrainResult`.
    An earlier run in ``out`` is refused unless ``resume`` (continue it) or ``overwrite`` (replace it)."""
    tr = Trainer(cfg, out, resume=resume, progress=progress, overwrite=overwrite)
    try:
        return tr.run()
    finally:
        tr.close()


__all__ = ["METRICS_NAME", "RUN_ARTEFACTS", "TrainResult", "Trainer", "check_init_compatible", "lr_lambda", "train"]
