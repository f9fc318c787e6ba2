"""Files shipped inside the package: the default world model.

``default_model_dir()`` is the trained ``tiny`` model every command uses when no ``--model`` is
given (how it was trained, and its measured results: ``docs/results.md``). A model is a directory
written by :meth:`pewm.model.WorldModel.save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from pewm.model import WorldModel
from pewm.model.checkpoint import resolve_model_dir

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "tiny-voxel-render"


def default_model_dir() -> Path:
    """Directory of the shipped default model (raises a clear error if the install lacks it)."""
    d = MODELS_DIR / DEFAULT_MODEL
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the shipped model is missing from {d}; reinstall pewm from the repository, or pass --model DIR "
            "(a directory written by WorldModel.save_pretrained, e.g. RUN/model of `pewm train`)"
        )
    return d


def resolve_model_path(path=None) -> Path:
    """``path`` (a model directory, or a training run / checkpoint directory holding ``model/``), or the
    shipped default when ``path`` is None."""
    if path is None:
        return default_model_dir()
    return Path(resolve_model_dir(path, what="--model"))


def load_model(path=None, reader: str | None = None, device="cpu"):
    """The :class:`~pewm.model.WorldModel` at ``path`` (default: the shipped model), in eval mode."""
    return WorldModel.from_pretrained(resolve_model_path(path), reader=reader, map_location=device).eval()


__all__ = ["DEFAULT_MODEL", "MODELS_DIR", "default_model_dir", "load_model", "resolve_model_path"]
