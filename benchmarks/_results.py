"""Shared by the benchmark scripts: write a results JSON atomically (:mod:`pewm.atomic`)."""

from __future__ import annotations

import json
from pathlib import Path

from pewm.atomic import atomic_write_text


def write_results(path: str | Path, results) -> Path:
    """Write ``results`` as indented JSON to ``path`` (temp file + rename) and say so."""
    path = atomic_write_text(Path(path), json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path
