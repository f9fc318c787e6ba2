"""Where a command writes: output paths checked before any work, runs never overwritten silently
(layer 0: imports nothing from pewm).

* :func:`check_output_dir` -- an output directory (``--out`` of ``train``, ``eval``, ``map``,
  ``demo``): refuses a path that is a file or lies under one, and refuses to replace the
  artefacts of an earlier run unless ``overwrite`` (then it removes them, so nothing stale is
  mixed with the new run);
* :func:`check_output_file` -- an output file (``pewm data view``'s video): refuses a directory, a
  path under a file, an extension outside ``suffixes`` and, unless ``overwrite``, an existing file.

Both raise ``ValueError`` with a one-line message naming the option (``--out``) and the option
that allows overwriting (``--overwrite``), before any temporary file is created.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

OVERWRITE_OPTION = "--overwrite"


def _check_parents(path: Path, option: str) -> None:
    """Raise when an existing ancestor of ``path`` is not a directory (``AFILE/out``)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a directory; choose another {option}")
            return


def check_output_dir(out, artefacts: Iterable[str], overwrite: bool = False, option: str = "--out",
                     remove: bool = True) -> list[Path]:
    """Check the output directory ``out`` before a command writes ``artefacts`` (names inside it).

    Raises ``ValueError`` when ``out`` is empty, is a file, lies under a file, or already holds one
    of ``artefacts`` and ``overwrite`` is false. With ``overwrite``, the existing artefacts are
    removed when ``remove`` (so an earlier run's files cannot be mixed with the new ones).
    Returns the artefacts that existed."""
    if str(out) == "":
        raise ValueError(f"{option}: empty path; give a directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out}: is a file, not a directory; choose another {option}")
    _check_parents(out, option)
    found = [out / a for a in artefacts if (out / a).exists() or (out / a).is_symlink()]
    if found and not overwrite:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)
        raise ValueError(f"{option} {out} already holds the output of an earlier run ({names}); "
                         f"pass {OVERWRITE_OPTION} to replace it, or choose another {option}")
    if found and remove:
        for p in found:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    return found


def check_output_file(path, suffixes: Iterable[str], overwrite: bool = False, option: str = "--out") -> Path:
    """Check the output file ``path`` before a command writes it: a known extension (one of
    ``suffixes``, e.g. ``(".mp4", ".gif")``), not a directory, not under a file, and not existing
    unless ``overwrite``. Raises ``ValueError``; returns ``path`` as a :class:`Path`."""
    if str(path) == "":
        raise ValueError(f"{option}: empty path; give a file name")
    path = Path(path)
    suffixes = tuple(s.lower() for s in suffixes)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file name ending in {' or '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{option} {path}: unsupported file type {path.suffix or '(no extension)'!r}; "
                         f"use {' or '.join(suffixes)}")
    _check_parents(path, option)
    if path.exists() and not overwrite:
        raise ValueError(f"{option} {path} already exists; pass {OVERWRITE_OPTION} to replace it, "
                         f"or choose another {option}")
    return path


__all__ = ["OVERWRITE_OPTION", "check_output_dir", "check_output_file"]
