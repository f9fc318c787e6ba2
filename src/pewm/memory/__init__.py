"""Persistent 3D memory: the sparse voxel map (DINO-Map, §3.2), feature extractors, frame-memory
baseline, map rendering, memory tokens and pictures. Depends only on ``pewm.geometry``."""

from pewm.memory.attributes import AttributeSpec, feature_attributes, surface_attributes
from pewm.memory.features import (
    Dinov2Extractor,
    FeatureExtractor,
    RGBExtractor,
    available_extractors,
    make_extractor,
    register_extractor,
)
from pewm.memory.frame_memory import FrameMemory, FrameMemoryConfig, RetrievedFrames
from pewm.memory.persistent_map import PersistentMap, PersistentMapConfig
from pewm.memory.reductions import REDUCTIONS, Reduction, register_reduction
from pewm.memory.rendering import RenderOutput
from pewm.memory.tokens import MemoryTokens, sinusoidal_position_embedding
from pewm.memory.viz import map_top_down_image
from pewm.memory.voxel_map import VoxelMap, VoxelMapConfig

__all__ = [
    "REDUCTIONS",
    "AttributeSpec",
    "Dinov2Extractor",
    "FeatureExtractor",
    "FrameMemory",
    "FrameMemoryConfig",
    "MemoryTokens",
    "PersistentMap",
    "PersistentMapConfig",
    "RGBExtractor",
    "Reduction",
    "RenderOutput",
    "RetrievedFrames",
    "VoxelMap",
    "VoxelMapConfig",
    "available_extractors",
    "feature_attributes",
    "make_extractor",
    "map_top_down_image",
    "register_extractor",
    "register_reduction",
    "sinusoidal_position_embedding",
    "surface_attributes",
]
