"""A dataset directory: ``dataset.json`` plus ``episodes/ep_000000.npz`` ...

::

    DIR/
      dataset.json          format version, name, intrinsics, resolution, action config,
                            generator arguments, creation info
      episodes/
        ep_000000.npz       one episode per file (see pewm.data.io)
        ep_000001.npz
      houses/               optional, filled by pewm.sim
      manifest.json         the files the dataset should contain, with sizes and checksums

Episode files carry their own small metadata (split, kind, house, frame count), so listing and
summarising a dataset never decompresses pixels.

This module holds :class:`Dataset` and the functions that create, open and verify one; ``dataset.json``
(:class:`DatasetSpec`) lives in :mod:`~pewm.data.dataset_spec`, the checks of
:func:`verify_dataset` in :mod:`~pewm.data.dataset_verify`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pewm.atomic import TEMP_SUFFIX
from pewm.data.dataset_spec import (
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    DATASET_JSON,
    EPISODE_RE,
    EPISODES_DIR,
    DatasetError,
    DatasetSpec,
    _creation_info,
)
from pewm.data.dataset_verify import Problem, dataset_problems
from pewm.data.episode import SPLITS, Episode, EpisodeError
from pewm.data.io import EpisodeInfo, check_episode_file, read_episode, read_episode_info, write_episode
from pewm.data.manifest import HOUSES_DIR, MANIFEST_JSON, FileEntry, Manifest
from pewm.geometry import Intrinsics

__all__ = [
    "DATASET_FORMAT",
    "DATASET_FORMAT_VERSION",
    "DATASET_JSON",
    "EPISODES_DIR",
    "MANIFEST_JSON",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Problem",
    "completeness_problems",
    "create_dataset",
    "open_dataset",
    "require_complete",
    "verify_dataset",
]


# ---------------------------------------------------------------------------------------- dataset
class Dataset:
    """An opened dataset directory. Create with :func:`create_dataset` or :func:`open_dataset`."""

    def __init__(self, root: str | Path, spec: DatasetSpec) -> None:
        self.root = Path(root)
        self.spec = spec

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, name={self.spec.name!r}, episodes={len(self)})"

    # -- layout
    @property
    def json_path(self) -> Path:
        return self.root / DATASET_JSON

    @property
    def episodes_dir(self) -> Path:
        return self.root / EPISODES_DIR

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_JSON

    @property
    def houses_dir(self) -> Path:
        return self.root / HOUSES_DIR

    @property
    def intrinsics(self) -> Intrinsics:
        return self.spec.intrinsics

    @property
    def name(self) -> str:
        return self.spec.name

    def episode_path(self, index: int) -> Path:
        """``DIR/episodes/ep_{index:06d}.npz`` (whether or not it exists)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"episode index must be a non-negative int, got {index!r}")
        return self.episodes_dir / f"ep_{int(index):06d}.npz"

    def episode_indices(self) -> list[int]:
        """Indices of the episode files present, sorted."""
        if not self.episodes_dir.is_dir():
            return []
        out = []
        for p in self.episodes_dir.iterdir():
            m = EPISODE_RE.match(p.name)
            if m and p.is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def __len__(self) -> int:
        return len(self.episode_indices())

    def episode_paths(self, split: str | None = None) -> list[Path]:
        """Paths of the episode files, sorted by index; with ``split``, only that split's
        (reads each file's small metadata; raises :class:`EpisodeError` for an unreadable file)."""
        paths = [self.episode_path(i) for i in self.episode_indices()]
        if split is None:
            return paths
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [p for p in paths if read_episode_info(p).split == split]

    def _resolve(self, index_or_path: int | str | Path) -> Path:
        if isinstance(index_or_path, (str, Path)):
            p = Path(index_or_path)
            return p if p.is_absolute() or p.exists() else self.root / p
        return self.episode_path(index_or_path)

    # -- reading
    def read(
        self, index_or_path: int | str | Path, frames: slice | tuple[int, int] | None = None, *, validate: bool = True
    ) -> Episode:
        """Read one episode (see :func:`pewm.data.read_episode`)."""
        return read_episode(self._resolve(index_or_path), frames, validate=validate)

    def read_info(self, index_or_path: int | str | Path) -> EpisodeInfo:
        """An episode's metadata without its pixels."""
        return read_episode_info(self._resolve(index_or_path))

    def infos(self, split: str | None = None) -> list[EpisodeInfo]:
        out = [read_episode_info(p) for p in self.episode_paths()]
        return out if split is None else [i for i in out if i.split == split]

    def iter_episodes(self, split: str | None = None) -> Iterator[Episode]:
        for p in self.episode_paths(split):
            yield read_episode(p)

    # -- writing
    def write(self, index: int, episode: Episode, *, compresslevel: int = 6) -> Path:
        """Write ``episode`` atomically as episode ``index`` (replacing any existing file).

        Raises :class:`EpisodeError` (code ``intrinsics_mismatch``) unless the episode's intrinsics
        equal the dataset's.
        """
        path = self.episode_path(index)
        if episode.intrinsics != self.intrinsics:
            raise EpisodeError(
                f"episode intrinsics {episode.intrinsics} differ from the dataset's {self.intrinsics} "
                f"({self.json_path})",
                path,
                code="intrinsics_mismatch",
            )
        self.episodes_dir.mkdir(parents=True, exist_ok=True)
        return write_episode(path, episode, compresslevel=compresslevel)

    def has_valid_episode(self, index: int) -> bool:
        """Cheap check for resumable generation: episode ``index`` exists, opens, has every array
        with sizes matching its metadata, and the dataset's intrinsics. Decompresses no pixels."""
        path = self.episode_path(index)
        if not path.is_file():
            return False
        try:
            info = check_episode_file(path)
        except EpisodeError:
            return False
        return info.intrinsics == self.intrinsics

    def temp_files(self) -> list[Path]:
        """Leftover temp files of interrupted writes (``.NAME.XXXX.tmp``)."""
        out = []
        for d in (self.root, self.episodes_dir, self.houses_dir):
            if d.is_dir():
                out += [p for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)]
        return sorted(out)

    def clean_temp_files(self) -> list[Path]:
        """Delete leftover temp files (only call when no writer is running). Returns them."""
        removed = []
        for p in self.temp_files():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
        return removed

    # -- manifest
    def load_manifest(self) -> Manifest:
        """``manifest.json`` (:class:`~pewm.data.manifest.Manifest`); :class:`DatasetError` if it is
        missing or invalid."""
        return Manifest.load(self.manifest_path)

    def write_manifest(self) -> Manifest:
        """Record the episode and house files present now, with their splits, sizes and SHA-256, as
        what this dataset should contain (``manifest.json``, written atomically). Call it once
        every episode is written when you build a dataset with :meth:`write`; ``pewm data
        generate`` and ``pewm data import`` maintain the manifest themselves."""
        m = Manifest()
        for p in self.episode_paths():
            m.episodes[p.name] = entry = FileEntry(split=read_episode_info(p).split)
            Manifest.record(entry, p)
        if self.houses_dir.is_dir():
            for p in sorted(self.houses_dir.glob("*.json")):
                if not p.name.startswith("."):
                    m.houses[p.name] = entry = FileEntry()
                    Manifest.record(entry, p)
        m.save(self.manifest_path)
        return m

    # -- summary / verify
    def summary(self) -> dict[str, Any]:
        """JSON-able summary from per-episode metadata only (no pixels are decompressed).

        Keys: ``name``, ``root``, ``format_version``, ``num_episodes``, ``num_frames``,
        ``splits`` (``{split: {episodes, frames, houses}}``), ``num_houses``, ``kinds``
        (``{kind: episodes}``), ``resolution``, ``intrinsics``, ``action_config``,
        ``with_actions`` (episodes), ``num_collisions``, ``path_length_m``, ``episode_bytes``,
        ``disk_bytes`` (whole directory), ``generator``, ``created``, ``unreadable`` (paths).
        """
        splits: dict[str, dict[str, Any]] = {}
        houses: dict[str, set[str]] = defaultdict(set)
        kinds: Counter[str] = Counter()
        n_ep = n_fr = n_act = n_coll = 0
        length = 0.0
        ep_bytes = 0
        unreadable = []
        for p in self.episode_paths():
            try:
                info = read_episode_info(p)
            except EpisodeError:
                unreadable.append(str(p))
                continue
            s = splits.setdefault(info.split, {"episodes": 0, "frames": 0, "houses": 0})
            s["episodes"] += 1
            s["frames"] += info.num_frames
            houses[info.split].add(info.house_id)
            kinds[info.kind] += 1
            n_ep += 1
            n_fr += info.num_frames
            n_act += int(info.has_actions)
            n_coll += int(info.stats.get("num_collisions", 0))
            length += float(info.stats.get("path_length_m", 0.0))
            ep_bytes += info.file_size
        for k, s in splits.items():
            s["houses"] = len(houses[k])
        disk = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return {
            "name": self.spec.name,
            "root": str(self.root),
            "format_version": self.spec.format_version,
            "num_episodes": n_ep,
            "num_frames": n_fr,
            "splits": {k: splits[k] for k in sorted(splits, key=lambda k: (SPLITS + (k,)).index(k))},
            "num_houses": len(set().union(*houses.values())) if houses else 0,
            "kinds": dict(sorted(kinds.items())),
            "resolution": {"width": self.intrinsics.width, "height": self.intrinsics.height},
            "intrinsics": self.intrinsics.to_dict(),
            "action_config": self.spec.to_dict()["action_config"],
            "with_actions": n_act,
            "num_collisions": n_coll,
            "path_length_m": length,
            "episode_bytes": ep_bytes,
            "disk_bytes": disk,
            "generator": self.spec.generator,
            "created": self.spec.created,
            "unreadable": unreadable,
        }

    def verify(self, *, full: bool = True, progress: bool | Callable[[int, int, Path], None] = False) -> list[Problem]:
        return verify_dataset(self.root, full=full, progress=progress)

    def completeness_problems(self) -> list[Problem]:
        """The cheap completeness check (no episode is opened); see :func:`completeness_problems`."""
        return completeness_problems(self.root)


def create_dataset(root: str | Path, spec: DatasetSpec, *, exist_ok: bool = False) -> Dataset:
    """Create ``root/dataset.json`` and ``root/episodes/``.

    With ``exist_ok`` an existing dataset is opened instead (for resuming), provided its
    intrinsics and action config equal ``spec``'s; otherwise an existing ``dataset.json`` raises
    :class:`DatasetError`. ``spec.created`` is filled with the creation time and versions.
    """
    root = Path(root)
    js = root / DATASET_JSON
    if js.exists():
        if not exist_ok:
            raise DatasetError("already exists (pass exist_ok=True to resume into it)", js)
        ds = open_dataset(root)
        for fld in ("intrinsics", "action_config"):
            if getattr(ds.spec, fld) != getattr(spec, fld):
                raise DatasetError(
                    f"existing value {getattr(ds.spec, fld)} differs from the requested {getattr(spec, fld)}", js, fld
                )
        ds.episodes_dir.mkdir(exist_ok=True)
        return ds
    root.mkdir(parents=True, exist_ok=True)
    (root / EPISODES_DIR).mkdir(exist_ok=True)
    spec = DatasetSpec(
        name=spec.name, intrinsics=spec.intrinsics, action_config=spec.action_config, generator=dict(spec.generator),
        description=spec.description, created={**_creation_info(), **spec.created},
        format_version=spec.format_version,
    )  # fmt: skip
    spec.save(js)
    return Dataset(root, spec)


def open_dataset(root: str | Path) -> Dataset:
    """Open an existing dataset directory; :class:`DatasetError` names the file and field if invalid."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("no such dataset directory", root)
    return Dataset(root, DatasetSpec.load(root / DATASET_JSON))


def verify_dataset(
    root: str | Path, *, full: bool = True, progress: bool | Callable[[int, int, Path], None] = False
) -> list[Problem]:
    """Check a dataset directory; return every problem found (empty list = all good).

    Against ``manifest.json``: missing, extra, unfinished, resized or (with ``full``) changed
    episode and house files; leftover temp files and stray files. ``full`` reads every episode
    completely (CRC-checked, validated) and checks every SHA-256; otherwise only the cheap
    structural check of :meth:`Dataset.has_valid_episode` is done. ``progress`` is ``True`` for a
    rich progress bar, or a callable ``(done, total, path)``.
    """
    root = Path(root)
    if not root.is_dir():  # bad input (exit 2 in the CLI), not a problem of a dataset
        raise DatasetError("no such dataset directory" if not root.exists() else "not a directory", root)
    try:
        ds = open_dataset(root)
    except DatasetError as e:
        reason = e.reason if e.field is None else f"field {e.field!r}: {e.reason}"
        return [Problem(e.path or root, reason, "dataset_json")]
    return dataset_problems(ds, level="full" if full else "structure", progress=progress)


def completeness_problems(root: str | Path) -> list[Problem]:
    """The cheap check (level ``files``) of the dataset in ``root``: its ``dataset.json`` and
    ``manifest.json`` are valid and exactly the files the manifest lists are there, finished and of
    the recorded size; no temp or stray files. Opens no episode."""
    try:
        ds = open_dataset(root)
    except DatasetError as e:
        reason = e.reason if e.field is None else f"field {e.field!r}: {e.reason}"
        return [Problem(e.path or Path(root), reason, "dataset_json")]
    return [p for p in dataset_problems(ds, level="files") if p.severity == "error"]


def require_complete(root: str | Path, option: str = "--data", allow_flag: str = "--allow-incomplete") -> None:
    """Raise :class:`~pewm.data.DatasetError` (one line: the dataset, the first problem, how many
    more, and ``allow_flag``) unless :func:`completeness_problems` finds nothing."""
    try:
        ds = open_dataset(root)
    except DatasetError as e:  # not a dataset at all: that error, not "incomplete"
        where = f"{e.path}: " if e.path is not None and e.path != Path(root) else ""
        what = f"field {e.field!r}: " if e.field else ""
        raise DatasetError(f"{option} {root}: {where}{what}{e.reason}") from None
    errors = [p for p in dataset_problems(ds, level="files") if p.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s); `pewm data verify {root}` lists them)" if len(errors) > 1 \
            else ""
        raise DatasetError(f"{option} {root}: incomplete dataset: {first.path}: {first.reason}{more}; "
                           f"pass {allow_flag} to use it anyway")
