"""What every memory reader shares: the memory it is given, the prepared context, its options and
the registry (§3.3 of arXiv 2505.05495: how the denoiser reads the persistent memory).

A reader is one module in this package holding one :class:`MemoryReader` subclass, registered
with :func:`register_reader`. The class owns everything that differs between readers:

* ``Options``: a :class:`ReaderOptions` dataclass of its architecture options (validated by it,
  saved with its weights as ``ModelConfig.reader_options``);
* its weights: the memory blocks (:class:`~pewm.model.readers.memory_block.MemoryBlock`, shared
  stack, built here) plus its own tokenizer;
* how its memory is built from frames: :meth:`MemoryReader.new_store` (what a rollout keeps),
  :meth:`MemoryReader.fuse` (frames into it), :meth:`MemoryReader.read_store` (the
  :class:`MemoryInput` of one clip); ``reads_memory = False`` for a reader whose memory is always
  empty;
* what sampling may do with its memory: ``can_anchor`` and the anchoring hooks.

Everything else (``MemoryBuilder``, rollouts, training, the benchmark, checkpoints) asks the
registry, so adding a reader is one new file here plus its entry in the contract tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch
from torch import nn

from pewm.model.readers.memory_block import MEMORY_INITS, MemoryBlock


@dataclass
class MemoryInput:
    """What the model is given as memory. Every field is optional; each reader reads its own.

    * ``tokens`` ``(B, N, memory_dim)`` map token features and ``positions`` ``(B, N, 3)`` their
      world positions expressed **in the current camera's frame** (metres, OpenCV axes); the model
      adds the 3D sinusoidal embedding. ``mask`` ``(B, N)`` bool, True = valid token.
      (``voxel-xattn``)
    * ``frames`` ``(B, K, 4, h, w)``: retrieved past frames, RGB in ``[0, 1]`` then depth in metres;
      ``frame_poses`` ``(B, K, 4, 4)`` their camera-to-current-camera poses; ``frame_intrinsics``
      ``(B, K, 3, 3)``, ``(B, 3, 3)`` or ``(3, 3)``; ``frame_mask`` ``(B, K)`` bool. (``frames``)
    * ``rendered`` ``(B, H, 5, h, w)``: the map rendered into each *future* view: RGB in ``[0, 1]``,
      depth in metres, coverage in ``{0, 1}``. (``voxel-render``)
    * ``rendered_latent`` ``(B, H, C + 1, h', w')``: for a latent-space model, the render encoded
      by the model's autoencoder plus the coverage averaged over each latent cell; filled in by
      :meth:`~pewm.model.world_model.WorldModel.encode_memory` from ``rendered``.
    * ``layout`` ``(B, H, 1, h, w)``: z-depth (m) at which each future view's pixel rays meet the
      map's floor or ceiling, NaN where unknown. (``voxel-render`` with ``layout_prior``)
    * ``cell_index`` ``(B, 1 + H, cells, k)`` long: per view of the clip (current frame first) and
      latent cell, the rows of ``tokens`` the cell's queries may attend to, -1 = none;
      ``cell_geometry`` ``(B, 1 + H, cells, k, 3)`` each pair's log z-depth and projection offset
      (:mod:`pewm.model.readers.cell_lists`). (``voxel-xattn`` with ``cell_tokens``)
    """

    tokens: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    frames: torch.Tensor | None = None
    frame_poses: torch.Tensor | None = None
    frame_intrinsics: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None
    rendered: torch.Tensor | None = None
    rendered_latent: torch.Tensor | None = None
    layout: torch.Tensor | None = None
    cell_index: torch.Tensor | None = None
    cell_geometry: torch.Tensor | None = None

    def to(self, device=None, dtype=None) -> "MemoryInput":
        """A copy on ``device``; floating fields cast to ``dtype`` (masks stay bool)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            out[f.name] = v
        return MemoryInput(**out)

    @staticmethod
    def empty() -> "MemoryInput":
        return MemoryInput()


def stack_memory(items: list[MemoryInput]) -> MemoryInput:
    """Concatenate per-clip memories (each batch 1, or any batch) along the batch axis. Map tokens
    of different counts are padded to the largest (``mask`` False on the padding; a clip without a
    mask gets one)."""
    if not items:
        raise ValueError("stack_memory needs at least one MemoryInput")
    items = _pad_tokens(items)
    out = {}
    for f in fields(MemoryInput):
        vals = [getattr(m, f.name) for m in items]
        if all(v is None for v in vals):
            out[f.name] = None
        elif any(v is None for v in vals):
            raise ValueError(f"stack_memory: MemoryInput.{f.name} is set for some clips and None for others")
        else:
            out[f.name] = torch.cat(vals, dim=0)
    return MemoryInput(**out)


def _pad_tokens(items: list[MemoryInput]) -> list[MemoryInput]:
    counts = {m.tokens.shape[1] for m in items if m.tokens is not None}
    if len(counts) < 2:
        return items
    n = max(counts)
    out = []
    for m in items:
        if m.tokens is None or m.tokens.shape[1] == n:
            out.append(m)
            continue
        b, have = m.tokens.shape[:2]
        mask = m.mask if m.mask is not None else torch.ones(b, have, dtype=torch.bool, device=m.tokens.device)
        pad = n - have
        out.append(replace(
            m, tokens=torch.nn.functional.pad(m.tokens, (0, 0, 0, pad)),
            positions=None if m.positions is None else torch.nn.functional.pad(m.positions, (0, 0, 0, pad)),
            mask=torch.nn.functional.pad(mask, (0, pad), value=False),
        ))
    return out


@dataclass
class MemoryContext:
    """A reader's prepared memory for one batch (computed once per clip, reused at every step).

    ``tokens`` ``(B, N, width)`` map-stream tokens for the memory blocks, ``mask`` ``(B, N)``;
    ``input_tokens`` ``(B, (1 + H) * L, width)`` added to the patch embeddings (``voxel-render``).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    input_tokens: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # (B, N, 3) token positions in the current camera's frame (voxel-xattn)
    # voxel-xattn with cell_tokens: (index (B, heads, L, k) into the tokens, valid (B, heads, L, k) bool,
    # pair geometry (B, heads, L, k, 3)); see pewm.model.readers.cell_lists
    cells: tuple | None = None
    attn_mask: torch.Tensor | None = field(init=False, default=None)
    # True when every query can attend to the null token only (no map tokens, or all masked, e.g. a
    # dropped memory): the memory blocks' cross-attention then has a single key (MemoryBlock's
    # fast path)
    null_only: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # (B, 1 + N) mask with the always-valid null token first; None when every token is valid
        # (lets SDPA take its unmasked fast path and avoids a device sync in every block)
        all_valid = bool(self.mask.all())
        if not all_valid:
            ones = torch.ones(self.mask.shape[0], 1, dtype=torch.bool, device=self.mask.device)
            self.attn_mask = torch.cat([ones, self.mask], dim=1)
        self.null_only = self.tokens.shape[1] == 0 or (not all_valid and not bool(self.mask.any()))

    def drop(self, keep: torch.Tensor) -> "MemoryContext":
        """The same memory with the samples where ``keep`` (``(B,)`` bool) is False emptied (CFG)."""
        keep = keep.to(self.mask.device)
        it = self.input_tokens
        if it is not None:
            it = it * keep[:, None, None].to(it.dtype)
        return replace(self, mask=self.mask & keep[:, None], input_tokens=it)

    def repeat(self, n: int) -> "MemoryContext":
        it = None if self.input_tokens is None else self.input_tokens.repeat(n, 1, 1)
        pos = None if self.positions is None else self.positions.repeat(n, 1, 1)
        cells = None if self.cells is None else tuple(x.repeat(n, *([1] * (x.ndim - 1))) for x in self.cells)
        return MemoryContext(self.tokens.repeat(n, 1, 1), self.mask.repeat(n, 1), it, pos, cells)


# -- options ------------------------------------------------------------------------------------


def _parse_value(text: str, kind: type, where: str):
    """``text`` (a command-line value) as ``kind`` (bool, int, float or str)."""
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected true or false, got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {text!r}") from None
    return text


@dataclass(frozen=True)
class ReaderOptions:
    """Architecture options of a reader (``ModelConfig.reader_options``). Every reader has
    ``init``, how its memory blocks start as the identity (see
    :class:`~pewm.model.readers.memory_block.MemoryBlock`): ``zero-gate`` (AdaLN-Zero gates, the
    paper's reading) or ``zero-out`` (gates at 1, zero output projections). A reader with more
    options subclasses this and validates them in :meth:`validate`."""

    init: str = "zero-gate"

    reader: ClassVar[str] = "?"  # set by register_reader, for error messages

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.init not in MEMORY_INITS:
            raise ValueError(f"{self.reader} reader option init must be one of {MEMORY_INITS}, got {self.init!r}")

    def _fail(self, name: str, must: str) -> None:
        raise ValueError(f"{self.reader} reader option {name} must be {must}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, d: dict | None) -> "ReaderOptions":
        """Options from a (possibly partial) dict; unknown keys are an error naming the reader."""
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.names()))
        if unknown:
            raise ValueError(f"the {cls.reader} reader has no option(s) {unknown}; its options: {list(cls.names())}")
        return cls(**d)

    @classmethod
    def parse(cls, items: dict[str, str]) -> dict[str, Any]:
        """Command-line ``KEY=VALUE`` strings as typed option values (checked by :meth:`from_dict`)."""
        types = {f.name: f.type for f in fields(cls)}
        kinds = {"bool": bool, "int": int, "float": float, "str": str}
        out = {}
        for k, v in items.items():
            if k not in types:
                raise ValueError(f"--reader-option {k}: the {cls.reader} reader has no such option; "
                                 f"its options: {list(types)}")
            kind = types[k] if isinstance(types[k], type) else kinds.get(str(types[k]), str)
            out[k] = _parse_value(v, kind, f"--reader-option {k}")
        cls.from_dict(out)
        return out


# -- registry -----------------------------------------------------------------------------------

READERS: dict[str, type["MemoryReader"]] = {}


def register_reader(cls: type["MemoryReader"]) -> type["MemoryReader"]:
    """Class decorator: make ``cls`` available as ``ModelConfig(reader=cls.name)`` everywhere."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a memory reader needs a name")
    if cls.name in READERS:
        raise ValueError(f"memory reader {cls.name!r} is already registered")
    if "Options" in vars(cls):
        cls.Options.reader = cls.name
    else:  # the inherited options, under this reader's name (error messages name the reader)
        cls.Options = type(f"{cls.__name__}Options", (cls.Options,), {"reader": cls.name, "__module__": cls.__module__})
    READERS[cls.name] = cls
    return cls


def unregister_reader(name: str) -> None:
    """Remove a registered reader (for tests that register a toy reader)."""
    READERS.pop(name, None)


def reader_class(name: str) -> type["MemoryReader"]:
    """The registered reader class ``name`` (a clear error listing the readers otherwise)."""
    try:
        return READERS[name]
    except KeyError:
        raise ValueError(f"unknown memory reader {name!r}; available: {sorted(READERS)}") from None


def build_reader(cfg) -> "MemoryReader":
    """The reader named by ``cfg.reader``, built for the :class:`~pewm.model.ModelConfig` ``cfg``."""
    return reader_class(cfg.reader)(cfg)


def check_tensor(t: torch.Tensor | None, name: str, shape: tuple, reader: str) -> torch.Tensor:
    """Check ``t`` against ``shape`` (``None`` entries are free) and name the field on failure."""
    if t is None:
        raise ValueError(f"memory reader {reader!r} needs MemoryInput.{name}, which is None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"MemoryInput.{name} must be a torch.Tensor, got {type(t).__name__}")
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"MemoryInput.{name} has shape {tuple(t.shape)}, expected {want} (reader {reader!r})")
    return t


# -- the reader ---------------------------------------------------------------------------------


class MemoryReader(nn.Module):
    """Base class: owns one memory block per transformer block (``blocks[i]`` runs right after
    backbone block ``i``) and turns a :class:`MemoryInput` into a :class:`MemoryContext`.

    Subclasses set ``name`` (and ``Options`` when they have options of their own) and implement
    :meth:`tokenize` (map-stream tokens) and/or :meth:`input_tokens` (tokens added to the patch
    embeddings), and the memory-building classmethods.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[ReaderOptions]] = ReaderOptions
    reads_memory: ClassVar[bool] = True  # False: the memory is always empty (nothing to build or fuse)
    can_anchor: ClassVar[bool] = False  # sampling can keep what the memory holds (DiffusionConfig.anchor)
    uses_features: ClassVar[bool] = False  # its map fuses feature-extractor features (MemoryBuildConfig.extractor)

    @classmethod
    def check_config(cls, cfg, options: ReaderOptions) -> None:
        """Raise a ``ValueError`` if ``options`` do not fit the model ``cfg`` (``ModelConfig.validate``
        calls this). Default: any model."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.options = self.Options.from_dict(cfg.reader_options)
        self.blocks = nn.ModuleList(
            MemoryBlock(cfg.width, cfg.heads, cfg.time_embed_dim, cfg.memory_mlp_ratio, init=self.options.init)
            for _ in range(cfg.depth)
        )

    # -- the model side --------------------------------------------------------------------------
    def tokenize(self, memory: MemoryInput, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Map-stream tokens ``(B, N, width)`` and mask ``(B, N)`` (default: empty memory)."""
        return self._empty(batch, device, dtype)

    def input_tokens(self, memory: MemoryInput, batch: int, device, dtype) -> torch.Tensor | None:
        """Tokens added to the patch embeddings, ``(B, (1 + H) * L, width)``, or None."""
        return None

    def _empty(self, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.zeros(batch, 0, self.cfg.width, device=device, dtype=dtype),
            torch.zeros(batch, 0, dtype=torch.bool, device=device),
        )

    def prepare(self, memory: MemoryInput | None, batch: int, device, dtype=torch.float32) -> MemoryContext:
        """Validate and tokenise ``memory`` (None = empty) for a batch of ``batch`` clips."""
        memory = memory if memory is not None else MemoryInput()
        if not isinstance(memory, MemoryInput):
            raise TypeError(f"memory must be a MemoryInput or None, got {type(memory).__name__}")
        tokens, mask = self.tokenize(memory, batch, device, dtype)
        return MemoryContext(tokens, mask, self.input_tokens(memory, batch, device, dtype))

    def block(self, i: int, x: torch.Tensor, c: torch.Tensor, cam: torch.Tensor, ctx: MemoryContext) -> torch.Tensor:
        return self.blocks[i](x, c, cam, ctx)

    def encode_memory(self, memory: MemoryInput, model) -> MemoryInput:
        """Memory in the model's diffusion space (e.g. a render encoded by the autoencoder);
        ``model`` is the :class:`~pewm.model.WorldModel`. Default: unchanged."""
        return memory

    # -- sampling hooks (readers with can_anchor = True) -----------------------------------------
    def resolve_anchor(self, anchor: str, explicit: bool, memory: MemoryInput | None, latent: bool) -> str:
        """The anchoring a ``generate`` call can do with ``memory``: ``"none"`` unless overridden."""
        if anchor != "none" and explicit:
            raise ValueError(f"sampling anchor={anchor!r} needs a reader that can anchor "
                             f"({sorted(n for n, c in READERS.items() if c.can_anchor)}), this model reads {self.name!r}")
        return "none"

    def latent_anchor(self, memory: MemoryInput | None):
        """Known diffusion-space values and their mask ``(known, mask)``, or ``(None, None)``."""
        return None, None

    def pixel_anchor(self, memory: MemoryInput):
        """Known pixels ``(rgb (B, H, 3, h, w), depth (B, H, h, w), covered (B, H, 1, h, w) bool)``, or None."""
        return None

    # -- the memory side: building a clip's memory from frames (no weights needed) ---------------
    @classmethod
    def new_store(cls, builder) -> Any:
        """The empty per-rollout state frames are fused into (None: nothing is kept).
        ``builder`` is the :class:`~pewm.model.memory_build.MemoryBuilder` (settings, extractor)."""
        return None

    @classmethod
    def fuse(cls, store, rgb, depth: torch.Tensor, K, poses: torch.Tensor) -> None:
        """Fuse frames into ``store``: ``rgb`` ``(N, h, w, 3)`` uint8 (numpy), ``depth`` ``(N, h, w)``
        float32, ``K`` ``(3, 3)`` float32 (numpy) of these frames, ``poses`` ``(N, 4, 4)`` float32."""
        if store is not None:
            store.integrate(rgb, depth, K, poses)

    @classmethod
    def read_store(cls, builder, store, current_pose, target_poses, K_model: torch.Tensor) -> MemoryInput:
        """The batch-1 :class:`MemoryInput` for generating ``target_poses`` ``(H, 4, 4)`` from
        ``current_pose`` ``(4, 4)``; ``K_model`` the targets' intrinsics at the model's resolution."""
        return MemoryInput()


__all__ = [
    "MEMORY_INITS",
    "READERS",
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
