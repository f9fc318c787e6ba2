"""The embodied simulator: procedural houses, MuJoCo RGB-D rendering, a gymnasium env, top-down maps.

Importing this package (through :mod:`pewm.sim.render`) sets ``MUJOCO_GL`` (default ``egl``, or
``osmesa`` when only OSMesa is installed) before MuJoCo is imported. Houses, textures and top-down
maps need no OpenGL.
"""

from pewm.sim.env import EmbodiedEnv, SimConfig
from pewm.sim.freespace import FreeSpaceGrid
from pewm.sim.house import (
    FAMILIES,
    Door,
    House,
    HouseConfig,
    HouseObject,
    Part,
    Room,
    Wall,
    generate_house,
)
from pewm.sim.render import RGBDRenderer
from pewm.sim.textures import TextureSpec, make_texture
from pewm.sim.topdown import top_down_image, world_to_topdown_pixel

__all__ = [
    "FAMILIES",
    "Door",
    "EmbodiedEnv",
    "FreeSpaceGrid",
    "House",
    "HouseConfig",
    "HouseObject",
    "Part",
    "RGBDRenderer",
    "Room",
    "SimConfig",
    "TextureSpec",
    "Wall",
    "generate_house",
    "make_texture",
    "top_down_image",
    "world_to_topdown_pixel",
]
