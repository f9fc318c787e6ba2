"""Two-stage training of the world model (§4 "Training" of arXiv 2505.05495): stage 1 trains the
backbone without memory, stage 2 freezes it and trains the memory blocks; EMA, atomic
checkpoints with exact resume, DDP under ``torchrun``. Entry points: :func:`train`,
:class:`Trainer`, :class:`TrainConfig`, :func:`train_preset`; CLI ``pewm train``."""

from pewm.train.checkpoint import latest_checkpoint, list_checkpoints, resolve_model_dir, write_checkpoint
from pewm.train.config import TRAIN_PRESETS, TrainConfig, memory_options, run_config, train_preset, with_features
from pewm.train.data import clip_memory, clip_tensors, collate_clips
from pewm.train.ema import EMA
from pewm.train.loop import METRICS_NAME, Trainer, TrainResult, lr_lambda, train

__all__ = [
    "EMA",
    "METRICS_NAME",
    "TRAIN_PRESETS",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "clip_memory",
    "clip_tensors",
    "collate_clips",
    "latest_checkpoint",
    "list_checkpoints",
    "lr_lambda",
    "resolve_model_dir",
    "train",
    "run_config",
    "train_preset",
    "memory_options",
    "with_features",
    "write_checkpoint",
]
