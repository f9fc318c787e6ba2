"""Saving and loading world models: a model directory is ``config.json`` + ``model.safetensors``
(+ ``memory.json``, the memory settings it was trained with), optionally with
``readers/<reader>.safetensors`` (+ ``readers/<reader>.memory.json``): stage-2 weights of other
readers trained over the same frozen backbone. Every file is written atomically (:mod:`pewm.atomic`).

A reader's architecture options (``ModelConfig.reader_options``) travel in its safetensors metadata
(``reader_options``); files of pewm <= 0.1.0 stored them as ``reader_config`` with the legacy
field names (``memory_init``, ``memory_ray_*``) and load unchanged.

:func:`resolve_model_dir` finds the model meant by a path: a model directory, a training
checkpoint (its EMA weights) or a training run (its final model, else its latest checkpoint).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from pewm.atomic import atomic_write_json, atomic_write_safetensors
from pewm.model.config import ModelConfig, legacy_reader_options

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MEMORY_BUILD_NAME = "memory.json"  # optional: the MemoryBuildConfig the reader was trained with
READERS_DIR = "readers"  # optional: READERS_DIR/<reader>.safetensors, other readers' weights
READER_PREFIX = "denoiser.reader."  # state-dict keys of the memory reader
FORMAT = "pewm.WorldModel"
FORMAT_VERSION = 1
# the layout of a training run (pewm.train.checkpoint writes it; here only to find its model)
RUN_CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_STATE_NAME = "state.json"
CHECKPOINT_RE = re.compile(r"^step_(\d+)$")


def _state(model, prefix: str = "", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.startswith(prefix)}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state


def save_pretrained(model, directory, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` (and ``memory.json``) of ``model`` into
    ``directory``; ``dtype`` (e.g. ``torch.float16``) stores floating tensors in that type. Equal
    weights give byte-identical files (:func:`pewm.atomic.atomic_write_safetensors`)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_safetensors(d / WEIGHTS_NAME, _state(model, dtype=dtype),
                             {"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    atomic_write_json(d / CONFIG_NAME, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                        "config": model.config.to_dict()})
    if model.memory_build:
        atomic_write_json(d / MEMORY_BUILD_NAME, model.memory_build)
    return d


def save_reader(model, directory, dtype: torch.dtype | None = None) -> Path:
    """Write only ``model``'s memory reader to ``directory/readers/<reader>.safetensors`` (its options
    in the metadata, its memory settings beside it)."""
    d = Path(directory) / READERS_DIR
    reader = model.config.reader
    path = d / f"{reader}.safetensors"
    meta = {"format": FORMAT, "reader": reader, "reader_options": json.dumps(model.config.reader_options, sort_keys=True)}
    atomic_write_safetensors(path, _state(model, READER_PREFIX, dtype), meta)
    build = d / f"{reader}.{MEMORY_BUILD_NAME}"
    if model.memory_build:  # how this reader's memories were built (e.g. its feature extractor)
        atomic_write_json(build, model.memory_build)
    elif build.exists():
        build.unlink()  # not another reader's leftover settings
    return path


def load_config(directory) -> ModelConfig:
    """The :class:`ModelConfig` saved in ``directory`` (errors name the file)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {d}")
    path = d / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a pewm WorldModel checkpoint")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} config (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {meta.get('format_version')!r} is not supported (this pewm reads {FORMAT_VERSION})"
        )
    try:
        return ModelConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: incompatible model config: {e}") from e


def reader_options_of(adapter: Path | None, reader: str) -> dict:
    """The reader options saved in a reader file's metadata (``{}`` = the reader's defaults, also
    without a file: a new reader does not inherit another reader's options)."""
    from safetensors import SafetensorError, safe_open

    if adapter is None:
        return {}
    try:
        with safe_open(str(adapter), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{adapter}: cannot read the reader weights: {e}") from e
    key = "reader_options" if "reader_options" in meta else "reader_config"  # pewm <= 0.1.0: reader_config
    try:
        saved = json.loads(meta.get(key, "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{adapter}: metadata {key!r} is not valid JSON: {e}") from e
    return saved if key == "reader_options" else legacy_reader_options(reader, dict(saved))


def _read_weights(path: Path, map_location, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: cannot read the {what}: {e}") from e


def _check_match(own: dict, state: dict, path: Path) -> None:
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[:3]}")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k}: checkpoint {tuple(state[k].shape)} "
                         f"vs model {tuple(own[k].shape)}")
        raise ValueError(f"{path} does not match its config.json: " + "; ".join(parts))


def load_pretrained(cls, directory, reader: str | None = None, map_location="cpu"):
    """A ``cls`` (:class:`~pewm.model.WorldModel`) loaded from ``directory``.

    ``reader`` switches the memory reader: the backbone is loaded (strictly) and the new reader
    comes from ``readers/<reader>.safetensors`` when the directory has it (with its own options
    and memory settings), else starts from its identity initialisation with default options, i.e.
    from exactly the stage-1 model (§3.4, stage 2). Otherwise every tensor must match."""
    d = Path(directory)
    cfg = load_config(d)
    switch = reader is not None and reader != cfg.reader
    adapter = d / READERS_DIR / f"{reader if switch else cfg.reader}.safetensors"
    has_adapter = adapter.is_file()
    if switch:  # the reader's own architecture options (no file: its defaults)
        cfg = cfg.replace(reader=reader, reader_options=reader_options_of(adapter if has_adapter else None, reader))
    path = d / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (config.json is there)")
    state = _read_weights(path, map_location, "weights")
    model = cls(cfg)
    own = model.state_dict()
    memory_build = d / MEMORY_BUILD_NAME
    if switch:
        state = {k: v for k, v in state.items() if not k.startswith(READER_PREFIX)}
        if has_adapter:  # trained memory blocks of another reader over the same backbone
            extra = _read_weights(adapter, map_location, "reader weights")
            want = {k for k in own if k.startswith(READER_PREFIX)}
            if set(extra) != want or any(tuple(extra[k].shape) != tuple(own[k].shape) for k in want):
                raise ValueError(f"{adapter}: does not hold the {cfg.reader!r} reader of this model's architecture")
            state |= extra
            own_build = d / READERS_DIR / f"{cfg.reader}.{MEMORY_BUILD_NAME}"
            # (reader weights saved without their own memory.json: the main one, as they were trained)
            memory_build = own_build if own_build.is_file() else memory_build
        else:
            own = {k: v for k, v in own.items() if not k.startswith(READER_PREFIX)}
            memory_build = None  # another reader without trained weights: default memory settings
    _check_match(own, state, path)
    model.load_state_dict(state, strict=not (switch and not has_adapter))
    if memory_build is not None and memory_build.is_file():
        try:
            model.memory_build = json.loads(memory_build.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{memory_build} is not valid JSON: {e}") from e
    return model.to(map_location)


def latest_run_checkpoint(run_dir) -> Path | None:
    """The newest complete checkpoint ``RUN/checkpoints/step_*`` (with its state file), or None."""
    root = Path(run_dir) / RUN_CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir() and (p / CHECKPOINT_STATE_NAME).is_file()]
    return max(found)[1] if found else None


def resolve_model_dir(path, what: str = "--init") -> Path:
    """The model directory meant by ``path``:

    * a model directory (``config.json`` + ``model.safetensors``) -> itself;
    * a checkpoint directory -> its ``ema/`` weights;
    * a run directory -> ``RUN/model`` (the final EMA model), else its latest checkpoint's ``ema/``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p}: no such run, checkpoint or model directory")
    if (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file():
        return p
    if (p / CHECKPOINT_STATE_NAME).is_file() and (p / "ema").is_dir():
        return p / "ema"
    if (p / "model" / CONFIG_NAME).is_file():
        return p / "model"
    ck = latest_run_checkpoint(p)
    if ck is not None:
        return ck / "ema"
    raise FileNotFoundError(
        f"{what} {p}: not a model directory (config.json + model.safetensors), a checkpoint (state.json) "
        "or a run directory with model/ or checkpoints/"
    )


__all__ = ["CONFIG_NAME", "FORMAT", "FORMAT_VERSION", "MEMORY_BUILD_NAME", "READERS_DIR", "READER_PREFIX",
           "WEIGHTS_NAME", "latest_run_checkpoint", "load_config", "load_pretrained", "reader_options_of",
           "resolve_model_dir", "save_pretrained", "save_reader"]
