"""The world model (§3 of arXiv 2505.05495): an RGB-D video diffusion transformer conditioned on
actions (as Plücker rays) and on a persistent memory, read by one of the interchangeable readers
of :mod:`pewm.model.readers`.

Where things live: ``config`` (``ModelConfig``, ``DiffusionConfig``, presets), ``readers/`` (one
module per memory reader), ``memory_build`` (a clip's memory from frames), ``rollout_memory`` (the memory of one rollout,
fused chunk by chunk: Algorithm 1's map), ``denoiser`` and
``layers`` (the transformer), ``autoencoder`` (the latent space), ``diffusion`` (the training
loss), ``sampling`` (``SamplingConfig`` and the pure DDIM loop), ``inputs`` (argument checks),
``world_model`` (``WorldModel``), ``checkpoint`` (saving and loading).

Importing this package does not import ``diffusers`` (it is loaded on first use of a scheduler).
"""

from pewm.model.config import PRESETS, DiffusionConfig, ModelConfig, from_preset
from pewm.model.denoiser import Conditioning, Denoiser
from pewm.model.diffusion import VDiffusion, v_prediction_loss
from pewm.model.readers import (
    READERS,
    MemoryBlock,
    MemoryContext,
    MemoryInput,
    MemoryReader,
    ReaderOptions,
    build_reader,
    reader_class,
    register_reader,
    stack_memory,
)
from pewm.model.memory_build import MemoryBuildConfig, MemoryBuilder
from pewm.model.normalization import denormalize_depth, denormalize_rgb, normalize_depth, normalize_rgb
from pewm.model.rollout_memory import RolloutMemory
from pewm.model.sampling import SamplingConfig, make_scheduler
from pewm.model.world_model import ClipBatch, Generation, WorldModel, relative_poses
from pewm.model import map_features as _map_features  # noqa: F401,E402  (registers the "autoencoder" extractor)

__all__ = [
    "PRESETS",
    "READERS",
    "ClipBatch",
    "Conditioning",
    "Denoiser",
    "DiffusionConfig",
    "Generation",
    "MemoryBlock",
    "MemoryBuildConfig",
    "MemoryBuilder",
    "MemoryContext",
    "MemoryInput",
    "MemoryReader",
    "ModelConfig",
    "ReaderOptions",
    "RolloutMemory",
    "SamplingConfig",
    "VDiffusion",
    "WorldModel",
    "build_reader",
    "denormalize_depth",
    "denormalize_rgb",
    "from_preset",
    "make_scheduler",
    "normalize_depth",
    "normalize_rgb",
    "reader_class",
    "register_reader",
    "relative_poses",
    "stack_memory",
    "v_prediction_loss",
]
