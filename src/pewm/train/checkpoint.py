"""Training checkpoints, written atomically (a crash never leaves a torn checkpoint).

Layout of ``RUN/checkpoints/step_XXXXXXXX/``::

    model/          WorldModel.save_pretrained (the raw, trained weights)
    ema/            WorldModel.save_pretrained (the EMA weights)
    optimizer.pt    optimizer state_dict
    scheduler.pt    LR scheduler state_dict
    rng.pt          per-rank RNG states: python, numpy, torch (CPU, CUDA), the data sampler's
                    numpy Generator and the loss's torch Generator
    state.json      step, world size, the resolved TrainConfig

A checkpoint is first written to ``RUN/checkpoints/.tmp-step_XXXXXXXX-PID/``, every file fsynced,
then renamed into place (``rename`` of a directory is atomic on POSIX). A failure while writing
removes the temporary directory; a hard kill can leave one behind, which :func:`list_checkpoints`
ignores and the next save removes. Only complete ``step_*`` directories (with ``state.json``) count.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

CKPT_DIR = "checkpoints"
STATE_NAME = "state.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a fsynced temporary file in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as ``(step, path)``."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / STATE_NAME).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir) -> Path | None:
    cks = list_checkpoints(run_dir)
    return cks[-1][1] if cks else None


def write_checkpoint(run_dir, step: int, write: Callable[[Path], None], state: dict[str, Any], keep: int | None = None) -> Path:
    """Atomically create ``RUN/checkpoints/step_XXXXXXXX``: ``write(tmp_dir)`` fills a temporary
    directory, ``state`` (plus ``step``) goes to ``state.json`` last, then the directory is renamed
    into place. Keeps the newest ``keep`` checkpoints (None: all)."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    final = root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        write(tmp)
        meta = {"step": int(step), **state}
        with open(tmp / STATE_NAME, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        for p in [*sorted(q for q in tmp.rglob("*") if q.is_dir()), tmp]:
            _fsync_dir(p)
        old = None
        if final.exists():  # re-saving the same step: move the old one aside first
            old = root / f".tmp-old-{final.name}-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for _, p in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(p, ignore_errors=True)
    return final


def read_state(ckpt: Path) -> dict[str, Any]:
    path = Path(ckpt) / STATE_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: not a complete pewm training checkpoint") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def save_torch(obj, path: Path) -> None:
    torch.save(obj, path)


def load_torch(path: Path):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing from the checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


def resolve_model_dir(path, what: str = "--init") -> Path:
    """The ``save_pretrained`` directory meant by ``path`` (for ``--init``):

    * a model directory (``config.json`` + ``model.safetensors``) -> itself;
    * a checkpoint directory -> its ``ema/`` weights;
    * a run directory -> ``RUN/model`` (the final EMA model), else its latest checkpoint's ``ema/``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p}: no such run, checkpoint or model directory")
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return p
    if (p / STATE_NAME).is_file() and (p / "ema").is_dir():
        return p / "ema"
    if (p / "model" / "config.json").is_file():
        return p / "model"
    ck = latest_checkpoint(p)
    if ck is not None:
        return ck / "ema"
    raise FileNotFoundError(
        f"{what} {p}: not a model directory (config.json + model.safetensors), a checkpoint (state.json) "
        "or a run directory with model/ or checkpoints/"
    )


__all__ = [
    "CKPT_DIR",
    "atomic_write_text",
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "load_torch",
    "read_state",
    "resolve_model_dir",
    "save_torch",
    "write_checkpoint",
]
