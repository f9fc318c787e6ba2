"""Typed training configuration with named presets (§4 "Training" of arXiv 2505.05495).

The paper: Adam, lr 1e-4 with linear warmup, bf16, gradient clipping 1.0, frame stride 1-3; stage 1
fine-tunes the backbone without memory, stage 2 freezes it and trains the memory blocks. Batch
size, steps and EMA are not given (**[gap]**); pewm's defaults are stated here.

Presets (:data:`TRAIN_PRESETS`; each names a model preset):

* ``micro`` -- unit tests: the ``micro`` model, batch 2, a few steps.
* ``tiny``  -- this 2-core CPU: the ``tiny`` model, batch 8, fp32 (this CPU has no bf16 units:
  bf16 autocast measured ~25x slower than fp32).
* ``base``  -- one GPU: the ``base`` model, batch 16, bf16.
* ``paper`` -- 8 GPUs under ``torchrun``: the ``paper`` model, batch 4 per GPU, bf16.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pewm.atomic import atomic_write_text
from pewm.data.clips import ClipConfig
from pewm.model import PRESETS, READERS, MemoryBuildConfig, from_preset, reader_class
from pewm.model.config import LEGACY_READER_FIELDS
from pewm.train.imagined import ImaginedMemoryConfig

STAGES = ("autoencoder", "backbone", "memory")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved resolved as ``RUN/config.json``.

    ``stage``: ``autoencoder`` (stage 0 of latent-space models: the RGB-D autoencoder),
    ``backbone`` (stage 1: backbone trained, memory empty; from the stage-0 run for latent models)
    or ``memory`` (stage 2: the backbone frozen, memory blocks trained, from ``init``). ``batch_size`` is per process and per
    micro-batch; the effective batch is ``batch_size * grad_accum * world_size``.
    ``model_overrides``: fields of :class:`~pewm.model.ModelConfig` over the preset.
    """

    # model
    preset: str = "tiny"
    reader: str = "voxel-xattn"
    model_overrides: dict = field(default_factory=dict)
    # data
    data: str = ""
    split: str = "train"
    future_frames: int | None = None  # None: the model's H
    strides: tuple[int, ...] = (1, 2, 3)
    history: int = 16
    max_episodes: int | None = None
    allow_incomplete: bool = False  # train on a dataset that fails the completeness check (--allow-incomplete)
    memory: MemoryBuildConfig = field(default_factory=MemoryBuildConfig)
    # stage
    stage: str = "backbone"
    init: str | None = None
    # optimisation
    steps: int = 10000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay_n = min(ema_decay, (1 + n) / (10 + n))
    memory_dropout: float | None = None  # None: the model's
    # stage 2: re-initialise the memory reader with these options of its Options dataclass, over
    # the --init model's (e.g. {"init": "zero-out"}, {"ray_query": True}); None: keep the reader as it is
    reader_options: dict | None = None
    # with reader_options: keep the --init reader's trained weights where the new reader has the same
    # ones (only what the options add starts fresh), instead of starting stage 2 over
    keep_reader_weights: bool = False
    # stage 2: share of clips whose memory holds a chunk the model imagined itself (pewm.train.imagined),
    # and the DDIM steps of that chunk; 0 = the paper's ground-truth memories
    imagined_memory: float = 0.0
    imagined_memory_steps: int = 4
    precision: str = "fp32"
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    sample_every: int = 1000
    sample_steps: int = 4  # DDIM steps of the sample videos
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads (None: leave as is)

    def __post_init__(self) -> None:
        if isinstance(self.memory, dict):
            self.memory = MemoryBuildConfig.from_dict(self.memory)
        self.strides = tuple(int(s) for s in self.strides)
        self.betas = tuple(float(b) for b in self.betas)

    def validate(self) -> "TrainConfig":
        if self.preset not in PRESETS:
            raise ValueError(f"unknown model preset {self.preset!r}; available: {sorted(PRESETS)}")
        if self.reader not in READERS:
            raise ValueError(f"unknown memory reader {self.reader!r}; available: {sorted(READERS)}")
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {STAGES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        for name in ("steps", "batch_size", "grad_accum", "log_every", "sample_every", "checkpoint_every",
                     "keep_checkpoints", "history", "sample_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} (TrainConfig.{name}) must be a positive integer, got {v!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps (TrainConfig.warmup_steps) must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise ValueError(f"--lr (TrainConfig.lr) must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay (TrainConfig.ema_decay) must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"--grad-clip (TrainConfig.grad_clip) must be positive (or None), got {self.grad_clip}")
        if not self.data:
            raise ValueError("TrainConfig.data: give the dataset directory (--data DIR)")
        if self.reader_options is not None:
            if self.stage != "memory":
                raise ValueError(f"reader options ({sorted(self.reader_options)}) are for --stage memory (they "
                                 f"re-initialise the memory reader), not --stage {self.stage}")
            reader_class(self.reader).Options.from_dict(self.reader_options)
        if self.keep_reader_weights and (self.reader_options is None or not self.init):
            raise ValueError("--keep-reader-weights keeps the --init model's reader weights when --reader-option "
                             "changes its options: give both --init and --reader-option")
        reader_keys = sorted({"reader_options", *LEGACY_READER_FIELDS} & set(self.model_overrides or {}))
        if reader_keys and self.init:
            raise ValueError(f"model_overrides {reader_keys} are ignored with --init (the model's config is used): "
                             "set TrainConfig.reader_options (--reader-option KEY=VALUE) instead")
        ImaginedMemoryConfig(self.imagined_memory, self.imagined_memory_steps)  # validates both
        if self.imagined_memory and self.stage != "memory":
            raise ValueError(f"--imagined-memory is for --stage memory (it changes the memory stage 2 reads), "
                             f"not --stage {self.stage}")
        if self.stage == "memory" and not self.init:
            raise ValueError("stage 'memory' (stage 2) needs --init RUN_OR_CHECKPOINT from a stage-1 ('backbone') run")
        return self

    def model_config(self):
        """The resolved :class:`~pewm.model.ModelConfig` (preset + reader + overrides)."""
        return from_preset(self.preset, reader=self.reader, **dict(self.model_overrides))

    def clip_config(self, frames: int) -> ClipConfig:
        H = self.future_frames if self.future_frames is not None else frames
        return ClipConfig(future_frames=H, strides=self.strides, history=self.history)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["memory"] = self.memory.to_dict()
        d["strides"] = list(self.strides)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """From :meth:`to_dict` output; run configs of pewm <= 0.1.0 (``memory_init``,
        ``memory_ray_query``, ``memory_ray_bias``) are converted to ``reader_options``."""
        d = dict(d)
        legacy = {new: d.pop(old) for old, new in LEGACY_READER_FIELDS.items() if old in d}
        legacy = {k: v for k, v in legacy.items() if v is not None}
        if legacy:
            d["reader_options"] = {**legacy, **dict(d.get("reader_options") or {})}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def replace(self, **overrides) -> "TrainConfig":
        d = self.to_dict()
        unknown = sorted(set(overrides) - set(d))
        if unknown:
            raise ValueError(f"TrainConfig: unknown key(s) {unknown}")
        d.update(overrides)
        return type(self).from_dict(d)

    def save(self, path) -> Path:
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path) -> "TrainConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} is missing: not a pewm training run") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(d)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "micro": dict(preset="micro", batch_size=2, steps=20, warmup_steps=2, log_every=1, sample_every=1000,
                  checkpoint_every=1000, ema_decay=0.9, history=4, strides=(1, 2)),
    "tiny": dict(preset="tiny", batch_size=8, steps=20000, warmup_steps=500, precision="fp32",
                 log_every=10, sample_every=1000, checkpoint_every=1000, ema_decay=0.999),
    "base": dict(preset="base", batch_size=16, steps=100000, warmup_steps=1000, precision="bf16",
                 log_every=50, sample_every=5000, checkpoint_every=5000, ema_decay=0.9999),
    "paper": dict(preset="paper", batch_size=4, steps=100000, warmup_steps=1000, precision="bf16",
                  log_every=50, sample_every=5000, checkpoint_every=2000, ema_decay=0.9999),
}


# what the weights of a run were built as: it cannot change when the run is resumed
RESUME_FIXED = (("stage", "--stage"), ("reader", "--reader"), ("reader_options", "--reader-option"))


def run_config(out, resume: bool, preset: str | None, overrides: dict) -> TrainConfig:
    """The :class:`TrainConfig` of a run in ``out``: the preset (or, with ``resume``, the run's saved
    config) with every non-None override. Resuming refuses overrides that would change what the
    checkpoint's weights were built as (:data:`RESUME_FIXED`)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    saved = Path(out) / "config.json"
    if resume and not saved.is_file():
        raise ValueError(f"--resume: there is no run to resume in --out {out} (no config.json there); "
                         "drop --resume to start a new run")
    if resume:
        base = TrainConfig.load(saved)
        if preset is not None and preset != base.preset:
            raise ValueError(f"--resume: the run in {out} uses preset {base.preset!r}, not {preset!r}")
        for name, flag in RESUME_FIXED:
            if name not in given:
                continue
            was = getattr(base, name)
            if name == "reader_options":  # only the options given must agree with the run's
                changed = was is None or any(k not in was or was[k] != v for k, v in given[name].items())
                if not changed:
                    given[name] = was
            else:
                changed = given[name] != was
            if changed:
                was = f"{flag} {was!r}" if was is not None else f"no {flag} (the --init model's reader as it was)"
                raise ValueError(f"--resume: the run in {out} was started with {was}; "
                                 f"it cannot continue with {flag} {given[name]!r} (start a new run)")
        return base.replace(**given)
    return train_preset(preset or "tiny", **given)


def with_features(memory: MemoryBuildConfig, features: str | None, dinov2_weights: str | None) -> MemoryBuildConfig:
    """``memory`` with the map feature extractor the user asked for: ``features`` by name;
    ``dinov2_weights`` (a local directory) implies ``dinov2`` and is only for it."""
    if features is None and dinov2_weights is None:
        return memory
    mem = memory.to_dict()
    if features is not None:
        mem["extractor"] = features
    if dinov2_weights is not None:
        if features is None:
            mem["extractor"] = "dinov2"  # giving DINOv2 weights asks for DINOv2 features
        elif features != "dinov2":
            raise ValueError(f"--dinov2-weights is only for --features dinov2, not --features {features}")
        mem["extractor_kwargs"] = {"weights": str(dinov2_weights)}
    if mem["extractor"] == "dinov2" and "weights" not in mem["extractor_kwargs"]:
        raise ValueError("--features dinov2 needs --dinov2-weights DIR (a local save_pretrained directory)")
    return MemoryBuildConfig.from_dict(mem)


def memory_options(memory: MemoryBuildConfig, options: dict[str, str]) -> MemoryBuildConfig:
    """``memory`` with ``--memory-option KEY=VALUE`` settings (a value is read as JSON, else as a string)."""
    d = memory.to_dict()
    for k, v in options.items():
        if k not in d:
            raise ValueError(f"--memory-option {k}={v}: unknown setting {k!r}; known: {sorted(d)}")
        try:
            d[k] = json.loads(v)
        except json.JSONDecodeError:
            d[k] = v  # a bare string (extractor=rgb)
    try:
        return MemoryBuildConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--memory-option: {e}") from None


def train_preset(name: str, **overrides) -> TrainConfig:
    """The training preset ``name`` with field ``overrides`` (not validated: ``data`` may be unset)."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown training preset {name!r}; available: {sorted(TRAIN_PRESETS)}")
    return TrainConfig.from_dict({**TRAIN_PRESETS[name], **overrides})


__all__ = ["LR_SCHEDULES", "PRECISIONS", "RESUME_FIXED", "STAGES", "TRAIN_PRESETS", "TrainConfig", "memory_options", "run_config",
           "train_preset", "with_features"]
