"""Memory readers: how the denoiser reads the persistent memory (§3.3 of arXiv 2505.05495).

One module per reader, each registering one :class:`~pewm.model.readers.base.MemoryReader`
subclass (``ModelConfig.reader`` picks it), so that the paper's comparison (Table 1) is one flag:

=================  ==========================================================================
``voxel-xattn``    the paper: memory blocks cross-attend from the video tokens (plus their
                   camera rays) to the map tokens (voxel feature ‖ 3D sinusoidal position).
``frames``         image-memory baseline: the same blocks attend to patch tokens of retrieved
                   past RGB-D frames with their Plücker rays.
``voxel-render``   beyond the paper: the map rendered into every target view enters
                   pixel-aligned, as extra input; sampling can keep what it covers (anchoring).
``none``           NWM baseline: the same model with an empty memory (only the null token).
=================  ==========================================================================

Adding a reader: a new module in this package with a registered subclass (its ``Options``, its
tokenizer, and how its memory is built from frames, fused and read), plus its entry in the contract
tests (``tests/test_model_readers.py``). Every module of this package is imported (and so
registered) when the package is; nothing else in pewm names readers.
"""

import importlib
import pkgutil

from pewm.model.readers.base import (
    MEMORY_INITS,
    READERS,
    MemoryContext,
    MemoryInput,
    MemoryReader,
    ReaderOptions,
    build_reader,
    check_tensor,
    reader_class,
    register_reader,
    stack_memory,
    unregister_reader,
)
from pewm.model.readers.memory_block import MemoryBlock

_SHARED = ("base", "memory_block")
# the paper's reader and its baselines first (the order of Table 1), then any other in name order
_FIRST = ("voxel_xattn", "frames", "voxel_render", "none")
_found = {m.name for m in pkgutil.iter_modules(__path__)} - set(_SHARED)
for _name in [n for n in _FIRST if n in _found] + sorted(_found - set(_FIRST)):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = [
    "MEMORY_INITS",
    "READERS",
    "MemoryBlock",
    "MemoryContext",
    "MemoryInput",
    "MemoryReader",
    "ReaderOptions",
    "build_reader",
    "check_tensor",
    "reader_class",
    "register_reader",
    "stack_memory",
    "unregister_reader",
]
