"""The world model (§3 of arXiv 2505.05495): an RGB-D video diffusion transformer conditioned on
actions (as Plücker rays) and on a persistent memory, read by one of four interchangeable readers.

Importing this package does not import ``diffusers`` (it is loaded on first use of a scheduler).
"""

from pewm.model.config import PRESETS, DiffusionConfig, ModelConfig, from_preset
from pewm.model.denoiser import Conditioning, Denoiser
from pewm.model.diffusion import VDiffusion, make_scheduler, v_prediction_loss
from pewm.model.memory_readers import (
    READERS,
    MemoryBlock,
    MemoryContext,
    MemoryInput,
    MemoryReader,
    build_reader,
    register_reader,
)
from pewm.model import map_features as _map_features  # noqa: F401  (registers the "autoencoder" extractor)
from pewm.model.normalization import denormalize_depth, denormalize_rgb, normalize_depth, normalize_rgb
from pewm.model.world_model import ClipBatch, Generation, WorldModel, relative_poses

__all__ = [
    "PRESETS",
    "READERS",
    "ClipBatch",
    "Conditioning",
    "Denoiser",
    "DiffusionConfig",
    "Generation",
    "MemoryBlock",
    "MemoryContext",
    "MemoryInput",
    "MemoryReader",
    "ModelConfig",
    "VDiffusion",
    "WorldModel",
    "build_reader",
    "denormalize_depth",
    "denormalize_rgb",
    "from_preset",
    "make_scheduler",
    "normalize_depth",
    "normalize_rgb",
    "register_reader",
    "relative_poses",
    "v_prediction_loss",
]
