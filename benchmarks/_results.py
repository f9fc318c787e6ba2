"""Shared by the benchmark scripts: write a results JSON atomically (pewm.data's atomic_write)."""

from __future__ import annotations

import json
from pathlib import Path

from pewm.data.io import atomic_write


def write_results(path: str | Path, results) -> Path:
    """Write ``results`` as indented JSON to ``path`` (temp file + rename) and say so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path
