"""Training checkpoints, written atomically (a crash never leaves a torn checkpoint).

Layout of ``RUN/checkpoints/step_XXXXXXXX/``::

    model/          WorldModel.save_pretrained (the raw, trained weights)
    ema/            WorldModel.save_pretrained (the EMA weights)
    optimizer.pt    optimizer state_dict
    scheduler.pt    LR scheduler state_dict
    rng.pt          per-rank RNG states: python, numpy, torch (CPU, CUDA), the data sampler's
                    numpy Generator and the loss's torch Generator; per-rank metrics of the steps
                    since the last metrics.jsonl line (``log_windows``; older checkpoints lack it)
    state.json      step, world size, the resolved TrainConfig

A checkpoint is first written to ``RUN/checkpoints/.tmp-step_XXXXXXXX-PID/``, every file fsynced,
then renamed into place (``rename`` of a directory is atomic on POSIX). A failure while writing
removes the temporary directory; a hard kill can leave one behind, which :func:`list_checkpoints`
ignores and the next save (or run start) removes. Only complete ``step_*`` directories (with
``state.json``) count. Directories and files get the modes a plain ``mkdir``/``open`` gives (umask).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from pewm.atomic import TEMP_SUFFIX, atomic_write_text, fsync_dir
from pewm.model.checkpoint import CHECKPOINT_RE as _STEP_RE
from pewm.model.checkpoint import CHECKPOINT_STATE_NAME as STATE_NAME
from pewm.model.checkpoint import RUN_CHECKPOINTS_DIR as CKPT_DIR
from pewm.model.checkpoint import resolve_model_dir


_ATOMIC_TEMP_RE = re.compile(r"^\..+" + re.escape(TEMP_SUFFIX) + r"(\.[^.]+)?$")  # pewm.atomic temp names


def remove_stale_temps(run_dir) -> list[Path]:
    """Remove what a killed run left half-written: ``checkpoints/.tmp-*`` directories and
    :mod:`pewm.atomic` temporary files (``.NAME.RANDOM.tmp[.ext]``) in the run, ``model/`` and ``samples/``."""
    run, gone = Path(run_dir), []
    if (run / CKPT_DIR).is_dir():
        for p in (run / CKPT_DIR).glob(".tmp-*"):
            _rmtree(p)
            gone.append(p)
    for d in (run, run / "model", run / "samples"):
        if d.is_dir():
            for p in d.iterdir():
                if _ATOMIC_TEMP_RE.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    gone.append(p)
    return gone


def _rmtree(p: Path) -> None:
    """Remove a directory tree, finishing even when Ctrl-C interrupts it once (then re-raised)."""
    try:
        shutil.rmtree(p, ignore_errors=True)
    except BaseException:
        shutil.rmtree(p, ignore_errors=True)
        raise


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
        _rmtree(stale)
    final = root / checkpoint_name(step)
    # os.mkdir, not tempfile.mkdtemp (0700): the checkpoint gets the mode a plain mkdir gives (umask)
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.mkdir(tmp)
        write(tmp)
        meta = {"step": int(step), **state}
        with open(tmp / STATE_NAME, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        for p in [*sorted(q for q in tmp.rglob("*") if q.is_dir()), tmp]:
            fsync_dir(p)
        old = None
        if final.exists():  # re-saving the same step: move the old one aside first
            old = root / f".tmp-old-{final.name}-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(root)
        if old is not None:
            _rmtree(old)
    except BaseException:
        _rmtree(tmp)
        raise
    if keep is not None:  # renamed first: a kill mid-delete leaves a .tmp-* leftover, not a torn step_*
        for _, p in list_checkpoints(run_dir)[:-keep]:
            gone = root / f".tmp-del-{p.name}-{os.getpid()}"
            os.rename(p, gone)
            _rmtree(gone)
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


__all__ = [
    "CKPT_DIR",
    "atomic_write_text",
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "load_torch",
    "read_state",
    "remove_stale_temps",
    "resolve_model_dir",
    "save_torch",
    "write_checkpoint",
]
