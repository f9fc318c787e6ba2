"""``none`` (the NWM baseline of Table 1): the memory blocks of the paper's model, always given an
empty memory (only each block's null token). Any memory passed in is ignored."""

from __future__ import annotations

from pewm.model.readers.base import MemoryReader, register_reader


@register_reader
class NoMemoryReader(MemoryReader):
    """Reads nothing: builds no memory, fuses nothing, anchors nothing."""

    name = "none"
    reads_memory = False


__all__ = ["NoMemoryReader"]
