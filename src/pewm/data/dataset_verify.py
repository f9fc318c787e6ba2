"""Checking a dataset directory: every problem :func:`~pewm.data.dataset.verify_dataset` finds, as
:class:`Problem` records (errors for wrong or unreadable data, warnings for harmless leftovers)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pewm.atomic import TEMP_SUFFIX
from pewm.data.dataset_spec import DATASET_JSON, EPISODE_RE
from pewm.data.episode import EpisodeError
from pewm.data.io import check_episode_file, read_episode, read_episode_info


@dataclass
class Problem:
    """One problem found by :func:`~pewm.data.dataset.verify_dataset`."""

    path: Path
    reason: str
    kind: str
    """``dataset_json``, ``unreadable``, ``truncated``, ``inconsistent``, ``intrinsics_mismatch``,
    ``temp_file``, ``stray_file``, ``duplicate_id``, ``missing_index`` or ``split_leak``."""
    severity: str = "error"
    """``error`` (the data is wrong or unreadable) or ``warning`` (harmless but worth a look)."""

    def __str__(self) -> str:
        return f"[{self.severity}] {self.path}: {self.reason} ({self.kind})"


_CODE_TO_KIND = {
    "truncated": "truncated",
    "inconsistent": "inconsistent",
    "invalid": "inconsistent",
    "intrinsics_mismatch": "intrinsics_mismatch",
}


def dataset_problems(
    ds, *, full: bool = True, progress: bool | Callable[[int, int, Path], None] = False
) -> list[Problem]:
    """Every problem of the opened dataset ``ds`` (a :class:`~pewm.data.dataset.Dataset`); see
    :func:`~pewm.data.dataset.verify_dataset` for ``full`` and ``progress``."""
    problems: list[Problem] = []
    for p in ds.temp_files():
        reason = "leftover temp file from an interrupted write (safe to delete when no writer runs)"
        problems.append(Problem(p, reason, "temp_file", "warning"))
    if not ds.episodes_dir.is_dir():
        problems.append(Problem(ds.episodes_dir, "episodes directory is missing", "unreadable"))
        return problems
    for p in sorted(ds.episodes_dir.iterdir()):
        if not EPISODE_RE.match(p.name) and not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)):
            reason = "unexpected file in episodes/ (expected ep_NNNNNN.npz)"
            problems.append(Problem(p, reason, "stray_file", "warning"))

    indices = ds.episode_indices()
    paths = [ds.episode_path(i) for i in indices]
    ids: dict[str, Path] = {}
    house_splits: dict[str, set[str]] = defaultdict(set)

    def check(path: Path) -> None:
        try:
            info = read_episode_info(path) if full else check_episode_file(path)
            if full:
                read_episode(path, validate=True)
        except EpisodeError as e:
            problems.append(Problem(path, e.reason, _CODE_TO_KIND.get(e.code, "unreadable")))
            return
        if info.intrinsics != ds.intrinsics:
            problems.append(
                Problem(
                    path,
                    f"intrinsics {info.intrinsics} differ from {DATASET_JSON}'s {ds.intrinsics}",
                    "intrinsics_mismatch",
                )
            )
        if info.episode_id in ids:
            problems.append(Problem(path, f"episode_id {info.episode_id!r} also used by {ids[info.episode_id].name}",
                                    "duplicate_id"))  # fmt: skip
        else:
            ids[info.episode_id] = path
        house_splits[info.house_id].add(info.split)

    _run_with_progress(paths, check, progress, f"verifying {ds.name}")

    if indices:
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            problems.append(Problem(ds.episodes_dir, f"{len(missing)} episode index(es) missing: {shown}",
                                    "missing_index", "warning"))  # fmt: skip
    for house, splits in sorted(house_splits.items()):
        if len(splits) > 1 and house:
            problems.append(Problem(ds.root, f"house {house!r} appears in several splits {sorted(splits)} "
                                    "(splits should be by house)", "split_leak", "warning"))  # fmt: skip
    return problems


def _run_with_progress(
    paths: list[Path], fn: Callable[[Path], None], progress: bool | Callable[[int, int, Path], None], label: str
) -> None:
    n = len(paths)
    if callable(progress):
        for i, p in enumerate(paths):
            fn(p)
            progress(i + 1, n, p)
        return
    if not progress:
        for p in paths:
            fn(p)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(label, total=n)
        for p in paths:
            fn(p)
            bar.advance(task)
