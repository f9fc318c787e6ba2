"""Checking a dataset directory: every problem :func:`~pewm.data.dataset.verify_dataset` finds, as
:class:`Problem` records naming the file and what is wrong.

What a dataset should contain comes from ``manifest.json`` (:mod:`~pewm.data.manifest`): a missing,
extra, unfinished, resized or changed episode or house file is an error, as are leftover temp
files and stray files. Three levels of checking:

* ``files`` -- file names, sizes and the manifest only; opens no episode (what ``pewm train`` and
  ``pewm eval`` check before they start, see :func:`completeness_problems`);
* ``structure`` -- also every episode's header (:func:`~pewm.data.io.check_episode_file`: arrays,
  metadata, intrinsics, split) and every house file's JSON; no pixels are decompressed;
* ``full`` -- also reads every episode completely (zip CRCs, validation) and checks every
  file's SHA-256 against the manifest (``pewm data verify``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pewm.atomic import TEMP_SUFFIX
from pewm.data.dataset_spec import DATASET_JSON, EPISODE_RE, EPISODES_DIR, DatasetError
from pewm.data.episode import EpisodeError
from pewm.data.io import check_episode_file, read_episode, read_episode_info
from pewm.data.manifest import HOUSES_DIR, MANIFEST_JSON, FileEntry, Manifest, file_sha256

LEVELS = ("files", "structure", "full")
ROOT_ENTRIES = {DATASET_JSON: "file", MANIFEST_JSON: "file", EPISODES_DIR: "dir", HOUSES_DIR: "dir"}


@dataclass
class Problem:
    """One problem found by :func:`~pewm.data.dataset.verify_dataset`."""

    path: Path
    reason: str
    kind: str
    """Errors: ``dataset_json``, ``manifest_missing``, ``manifest_invalid``, ``no_episodes``,
    ``missing_episode``, ``missing_index`` (a gap in the episode numbers of a dataset without a
    manifest), ``unexpected_file`` (an episode or house file the manifest does not list),
    ``size_mismatch``, ``unfinished`` (the manifest never recorded the file as finished),
    ``checksum_mismatch``, ``split_mismatch``, ``unreadable``, ``truncated``, ``inconsistent``,
    ``intrinsics_mismatch``, ``duplicate_id``, ``missing_house``, ``house_invalid``, ``temp_file``,
    ``stray_file``. Warning: ``split_leak``."""
    severity: str = "error"
    """``error`` (the data is wrong, incomplete or unreadable) or ``warning`` (worth a look)."""

    def __str__(self) -> str:
        return f"[{self.severity}] {self.path}: {self.reason} ({self.kind})"


_CODE_TO_KIND = {
    "truncated": "truncated",
    "inconsistent": "inconsistent",
    "invalid": "inconsistent",
    "intrinsics_mismatch": "intrinsics_mismatch",
}


def manifest_hint(ds) -> str:
    """How to (re)create the manifest of ``ds``, by what wrote it."""
    source = ds.spec.generator.get("source") if isinstance(ds.spec.generator, dict) else None
    if source == "pewm.sim":
        return ("rerun `pewm data generate` with the arguments in dataset.json (it checks every episode, "
                "generates the missing ones and writes the manifest)")
    if source == "tum_rgbd":
        return "import it again with `pewm data import SRC --out DIR --overwrite`"
    return "call pewm.data.open_dataset(DIR).write_manifest() once every episode is written"


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)


def dataset_problems(
    ds, *, level: str = "full", progress: bool | Callable[[int, int, Path], None] = False
) -> list[Problem]:
    """Every problem of the opened dataset ``ds`` (a :class:`~pewm.data.dataset.Dataset`) at
    ``level`` (module docstring); ``progress`` as for :func:`~pewm.data.dataset.verify_dataset`."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    problems: list[Problem] = []

    def add(path: Path, reason: str, kind: str, severity: str = "error") -> None:
        problems.append(Problem(path, reason, kind, severity))

    # -- the manifest
    manifest = None
    if not ds.manifest_path.exists():
        add(ds.manifest_path, f"missing: nothing records which episodes this dataset should contain; "
                              f"{manifest_hint(ds)}", "manifest_missing")
    else:
        try:
            manifest = Manifest.load(ds.manifest_path)
        except DatasetError as e:
            reason = e.reason if e.field is None else f"field {e.field!r}: {e.reason}"
            add(ds.manifest_path, f"{reason}; {manifest_hint(ds)}", "manifest_invalid")

    # -- episode files against the manifest
    present: dict[str, Path] = {}
    if not ds.episodes_dir.is_dir():
        add(ds.episodes_dir, "episodes directory is missing", "no_episodes")
    else:
        for p in sorted(ds.episodes_dir.iterdir()):
            if EPISODE_RE.match(p.name) and p.is_file():
                present[p.name] = p
        if not present:
            add(ds.episodes_dir, "no episode files (ep_NNNNNN.npz)", "no_episodes")
    if manifest is not None:
        _against_manifest(ds.episodes_dir, present, manifest.episodes, "episode", add)
    elif present:
        indices = sorted(int(EPISODE_RE.match(n).group(1)) for n in present)
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        if missing:
            shown = ", ".join(f"ep_{i:06d}.npz" for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
            add(ds.episodes_dir, f"{len(missing)} episode file(s) missing between the others: {shown}",
                "missing_index")

    # -- house files
    houses: dict[str, Path] = {}
    if ds.houses_dir.is_dir():
        houses = {p.name: p for p in sorted(ds.houses_dir.iterdir())
                  if p.suffix == ".json" and not p.name.startswith(".") and p.is_file()}
    if manifest is not None:
        _against_manifest(ds.houses_dir, houses, manifest.houses, "house", add)

    # -- leftovers and strays
    for d, expected in ((ds.root, None), (ds.episodes_dir, present), (ds.houses_dir, houses)):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if _is_temp(p):
                add(p, "leftover temp file of an interrupted write (rerun the command that wrote the dataset, "
                       "or delete it when no writer runs)", "temp_file")
            elif expected is None:
                kind = ROOT_ENTRIES.get(p.name)
                if kind is None or (kind == "dir") != p.is_dir():
                    add(p, "unexpected file in the dataset directory (a dataset holds dataset.json, manifest.json, "
                           "episodes/ and houses/)", "stray_file")
            elif p.name not in expected:
                what = "ep_NNNNNN.npz" if d == ds.episodes_dir else "house_NNNN.json"
                add(p, f"unexpected file in {d.name}/ (expected {what})", "stray_file")

    if level == "files":
        return problems
    _check_contents(ds, manifest, present, houses, level == "full", progress, add)
    return problems


def _against_manifest(d: Path, present: dict[str, Path], entries: dict[str, FileEntry], what: str, add) -> None:
    for name, e in sorted(entries.items()):
        p = d / name
        if name not in present:
            split = f", split {e.split}" if e.split else ""
            add(p, f"missing ({MANIFEST_JSON} lists this {what}{split})", f"missing_{what}" if what == "house"
                else "missing_episode")
        elif not e.recorded:
            add(p, f"unfinished: {MANIFEST_JSON} never recorded this {what} as complete (the writer was "
                   "interrupted; rerun the same command to finish)", "unfinished")
        else:
            size = p.stat().st_size
            if size != e.bytes:
                add(p, f"{size} bytes but {MANIFEST_JSON} records {e.bytes} (truncated or replaced)", "size_mismatch")
    for name, p in sorted(present.items()):
        if name not in entries:
            add(p, f"{what} file not listed in {MANIFEST_JSON} (an extra or foreign file)", "unexpected_file")


def _check_contents(ds, manifest: Manifest | None, present: dict[str, Path], houses: dict[str, Path], full: bool,
                    progress, add) -> None:
    """Per-file checks: episode headers (or full reads) and checksums, house JSON."""
    ids: dict[str, Path] = {}
    house_splits: dict[str, set[str]] = defaultdict(set)
    ep_entries = manifest.episodes if manifest is not None else {}
    house_entries = manifest.houses if manifest is not None else {}

    def checksum(p: Path, e: FileEntry | None) -> None:
        if full and e is not None and e.recorded and p.stat().st_size == e.bytes and file_sha256(p) != e.sha256:
            add(p, f"SHA-256 differs from the one {MANIFEST_JSON} records (the file changed after it was written)",
                "checksum_mismatch")

    def check_episode(p: Path) -> None:
        e = ep_entries.get(p.name)
        checksum(p, e)
        try:
            info = read_episode_info(p) if full else check_episode_file(p)
            if full:
                read_episode(p, validate=True)
        except EpisodeError as err:
            add(p, err.reason, _CODE_TO_KIND.get(err.code, "unreadable"))
            return
        if info.intrinsics != ds.intrinsics:
            add(p, f"intrinsics {info.intrinsics} differ from {DATASET_JSON}'s {ds.intrinsics}", "intrinsics_mismatch")
        if e is not None and e.split != info.split:
            add(p, f"the episode's split is {info.split!r} but {MANIFEST_JSON} lists {e.split!r}", "split_mismatch")
        if info.episode_id in ids:
            add(p, f"episode_id {info.episode_id!r} also used by {ids[info.episode_id].name}", "duplicate_id")
        else:
            ids[info.episode_id] = p
        house_splits[info.house_id].add(info.split)

    def check_house(p: Path) -> None:
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            add(p, f"not a valid house description (invalid JSON: {err})", "house_invalid")
            return
        if not isinstance(d, dict):
            add(p, f"not a valid house description (expected a JSON object, got {type(d).__name__})",
                "house_invalid")
            return
        checksum(p, house_entries.get(p.name))

    work = [(p, check_episode) for p in present.values()] + [(p, check_house) for p in houses.values()]
    _run_with_progress(work, progress, f"verifying {ds.name}")
    for house, splits in sorted(house_splits.items()):
        if len(splits) > 1 and house:
            add(ds.root, f"house {house!r} appears in several splits {sorted(splits)} (splits should be by house)",
                "split_leak", "warning")


def _run_with_progress(
    work: list[tuple[Path, Callable[[Path], None]]], progress: bool | Callable[[int, int, Path], None], label: str
) -> None:
    n = len(work)
    if callable(progress):
        for i, (p, fn) in enumerate(work):
            fn(p)
            progress(i + 1, n, p)
        return
    if not progress:
        for p, fn in work:
            fn(p)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rich.markup import escape

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(escape(label), total=n)
        for p, fn in work:
            fn(p)
            bar.advance(task)
