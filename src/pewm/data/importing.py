"""What the importers (TUM, ScanNet, folder) share: errors, option checks, image reading, the
optional fit to the model's resolution, and writing the one-episode dataset with its manifest.

See ``docs/data-format.md`` ("Importing recordings").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pewm.atomic import TEMP_SUFFIX
from pewm.data.dataset import Dataset, DatasetError, DatasetSpec, create_dataset
from pewm.data.dataset_spec import DATASET_JSON, EPISODE_RE, EPISODES_DIR
from pewm.data.episode import SPLITS, Episode
from pewm.data.fit import AxisMap, fit_intrinsics, fit_maps, resample_depth, resample_rgb
from pewm.data.io import write_episode_frames
from pewm.data.manifest import HOUSES_DIR, MANIFEST_JSON, Manifest
from pewm.geometry import Intrinsics

DEPTH_PNG_MODES = ("I;16", "I;16L", "I;16B", "I")
IDENTITY: AxisMap = (1.0, 0.0)


class ImportFormatError(ValueError):
    """A recording is missing a file or has a malformed file/line/image. Names the file (and line)."""

    def __init__(self, message: str, path: str | Path, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path}{'' if line is None else f':{line}'}: {message}")

    def __reduce__(self):
        return (type(self), (self.reason, self.path, self.line))


def number_lines(path: Path, error: type[ImportFormatError] = ImportFormatError) -> list[tuple[int, list[float]]]:
    """``(line number, numbers)`` per non-empty line of a text file of numbers separated by spaces
    or commas (``#`` comments and blank lines skipped); ``error`` names the file and line."""
    if not path.is_file():
        raise error("file not found", path)
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            try:
                out.append((n, [float(v) for v in s.replace(",", " ").split()]))
            except ValueError:
                raise error(f"bad number in {s!r}", path, n) from None
    return out


@dataclass
class ImportReport:
    """What a ScanNet or folder import did."""

    dataset: Dataset
    episode_path: Path
    layout: str
    num_frames: int
    num_source: int
    """frames found in the source."""
    invalid_poses: int
    """source frames skipped because their pose has inf/NaN entries."""
    skipped: int
    """frames with a valid pose left out by ``stride`` / ``max_frames``."""

    def __str__(self) -> str:
        return (f"imported {self.num_frames} of {self.num_source} {self.layout} frames into {self.episode_path}; "
                f"skipped {self.invalid_poses} with an invalid (inf/NaN) pose and {self.skipped} (stride/max_frames)")


# zlib level of imported episode files: 1 imports 640x480 recordings ~1.6x faster than the
# writer's default 6 (70-78 vs 42-48 frames/s, benchmarks/import_speed.py) into ~1.45x larger files
IMPORT_COMPRESSLEVEL = 1


def check_options(split: str, stride: int, max_frames: int | None, resolution: int | None,
                  depth_scale: float | None = None, compresslevel: int = IMPORT_COMPRESSLEVEL) -> None:
    """The one-line errors for the options every importer takes (named like the CLI options)."""
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"--compresslevel must be 0 (store) to 9 (smallest), got {compresslevel}")
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {split!r}")
    if stride < 1:
        raise ValueError(f"--stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {max_frames}")
    if resolution is not None and not 8 <= resolution <= 4096:
        raise ValueError(f"--resolution must be between 8 and 4096 pixels, got {resolution}")
    if depth_scale is not None and not (np.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"--depth-scale must be positive, got {depth_scale}")


def select(candidates: np.ndarray, stride: int, max_frames: int | None) -> np.ndarray:
    """Every ``stride``-th of the candidate frame indices, then the first ``max_frames``."""
    keep = candidates[::stride]
    return keep if max_frames is None else keep[:max_frames]


def progress_steps(total: int, on_progress: Callable[[int, int], None] | None
                   ) -> tuple[Callable[[Path], None], Callable[[], None]]:
    """``(step, done)`` reporting each step to ``on_progress(done, total)`` (``None``: silent).
    The importers draw nothing themselves: the caller (the CLI) draws the bar, if any."""
    if on_progress is None:
        return (lambda p: None), (lambda: None)
    if not callable(on_progress):
        raise TypeError(f"on_progress must be a callable (done, total) or None, got {on_progress!r}")
    count = [0]
    on_progress(0, total)

    def step(p: Path) -> None:
        count[0] += 1
        on_progress(count[0], total)

    return step, lambda: None


def prefetch(fn: Callable, items: Iterable, ahead: int = 4) -> Iterator:
    """``map(fn, items)`` computed by one background thread a few items ahead (image decoding
    releases the GIL, so it overlaps with the episode writer's compression)."""
    items = list(items)
    if len(items) < 2:
        yield from map(fn, items)
        return
    it = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="pewm-import") as ex:
        futs = deque(ex.submit(fn, x) for _, x in zip(range(ahead), it))
        try:
            while futs:
                result = futs.popleft().result()
                for x in it:
                    futs.append(ex.submit(fn, x))
                    break
                yield result
        finally:
            for f in futs:
                f.cancel()


# ---------------------------------------------------------------------------------------- images
def image_header(path: Path, error=ImportFormatError) -> tuple[str, tuple[int, int]]:
    """``(mode, (width, height))`` of an image file (reads the header only)."""
    from PIL import Image

    if not path.is_file():
        raise error("file not found", path)
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise error(f"cannot read image: {e}", path) from None


def _open(path: Path, error, size: tuple[int, int] | None = None, reduce: int = 1):
    from PIL import Image

    try:
        img = Image.open(path)
        original = img.size
        if size is None or original == size:
            if reduce > 1 and img.format == "JPEG":  # libjpeg's DCT scaling: 1/2, 1/4 or 1/8 size, much faster
                img.draft(img.mode, (-(-img.size[0] // reduce), -(-img.size[1] // reduce)))
            img.load()
    except FileNotFoundError:
        raise error("file not found", path) from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise error(f"cannot read image: {e}", path) from None
    if size is not None and original != size:
        raise error(f"image is {original[0]}x{original[1]}, expected {size[0]}x{size[1]}", path)
    return img


def read_rgb(path: Path, size: tuple[int, int], error=ImportFormatError, reduce: int = 1) -> np.ndarray:
    """An 8-bit RGB image (PNG or JPEG) of ``size`` = ``(width, height)`` as uint8 ``(H, W, 3)``.

    ``reduce`` (1, 2, 4 or 8) lets a JPEG be decoded at ``ceil(size / reduce)`` (each pixel the mean
    of a ``reduce`` x ``reduce`` block, the same geometry as an area resize); check the shape."""
    img = _open(path, error, size, reduce)
    if img.mode != "RGB":
        raise error(f"rgb image has mode {img.mode!r}, expected 'RGB' (8-bit colour)", path)
    return np.asarray(img, dtype=np.uint8)


def read_depth(path: Path, size: tuple[int, int], scale: float, error=ImportFormatError) -> np.ndarray:
    """A depth map in metres (float32 ``(H, W)``, 0 = no measurement) from a 16-bit PNG or a
    ``.npy`` array (float or integer), each value divided by ``scale`` (values per metre)."""
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise error("file not found", path) from None
        except Exception as e:  # noqa: BLE001 - numpy raises many types for broken files
            raise error(f"cannot read .npy array: {e}", path) from None
        if raw.dtype.kind not in "fui" or raw.ndim != 2:
            raise error(f"depth array is {raw.dtype} {raw.shape}, expected a 2-D float or integer array", path)
    else:
        img = _open(path, error)
        if img.mode not in DEPTH_PNG_MODES:
            raise error(f"depth image has mode {img.mode!r}, expected a 16-bit PNG ('I;16' or 'I')", path)
        raw = np.asarray(img)
        if raw.dtype.kind not in "ui" or (raw.size and (raw.min() < 0 or raw.max() > 65535)):
            raise error(f"depth values out of the 16-bit range (dtype {raw.dtype})", path)
    if raw.shape != (size[1], size[0]):
        raise error(f"depth is {raw.shape[1]}x{raw.shape[0]}, expected {size[0]}x{size[1]}", path)
    if raw.dtype.kind == "f":
        d = raw.astype(np.float64) / scale
        d[~(np.isfinite(d) & (d > 0))] = 0.0  # inf/NaN/negative: no measurement
        return d.astype(np.float32)
    d = raw.astype(np.float32)  # 16-bit values: exact in float32
    d /= np.float32(scale)
    return np.maximum(d, 0.0, out=d) if raw.dtype.kind == "i" else d


def depth_header(path: Path, error=ImportFormatError) -> tuple[int, int]:
    """``(width, height)`` of a depth PNG or ``.npy`` (checks the mode / dtype; no pixels read)."""
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise error("file not found", path)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise error(f"cannot read .npy array: {e}", path) from None
        if arr.dtype.kind not in "fui" or arr.ndim != 2:
            raise error(f"depth array is {arr.dtype} {arr.shape}, expected a 2-D float or integer array", path)
        return int(arr.shape[1]), int(arr.shape[0])
    mode, size = image_header(path, error)
    if mode not in DEPTH_PNG_MODES:
        raise error(f"depth image has mode {mode!r}, expected a 16-bit PNG ('I;16' or 'I')", path)
    return size


# ------------------------------------------------------------------------------------ fit & write
@dataclass(frozen=True)
class Fit:
    """The output camera of an import and the maps that resample depth-camera frames onto it."""

    K: Intrinsics
    map_y: AxisMap = IDENTITY
    map_x: AxisMap = IDENTITY

    @classmethod
    def to(cls, K: Intrinsics, resolution: int | None) -> "Fit":
        """No change for ``resolution=None``, else :func:`~pewm.data.fit.fit_frames` to a square."""
        if resolution is None:
            return cls(K)
        my, mx = fit_maps(K.height, K.width, resolution, resolution)
        return cls(fit_intrinsics(K, K.height, K.width, resolution, resolution), my, mx)

    @property
    def identity(self) -> bool:
        return self.map_y == IDENTITY and self.map_x == IDENTITY

    def rgb(self, frame: np.ndarray, map_y: AxisMap | None = None, map_x: AxisMap | None = None) -> np.ndarray:
        my, mx = map_y or self.map_y, map_x or self.map_x
        if my == IDENTITY and mx == IDENTITY and frame.shape[:2] == (self.K.height, self.K.width):
            return frame
        return resample_rgb(frame, my, mx, self.K.height, self.K.width)

    def read_rgb(self, path: Path, size: tuple[int, int], map_y: AxisMap | None = None,
                 map_x: AxisMap | None = None, error=ImportFormatError) -> np.ndarray:
        """:func:`read_rgb` then :meth:`rgb`; a JPEG that the maps shrink at least twice is decoded
        smaller (:func:`read_rgb`'s ``reduce``) and the maps are scaled to match."""
        my, mx = map_y or self.map_y, map_x or self.map_x
        reduce = 1
        while reduce < 8 and 2 * reduce <= min(my[0], mx[0]):
            reduce *= 2
        frame = read_rgb(path, size, error, reduce)
        h, w = frame.shape[:2]
        if (w, h) != size:
            s = next(r for r in (2, 4, 8) if (-(-size[0] // r), -(-size[1] // r)) == (w, h))
            my, mx = (my[0] / s, my[1] / s), (mx[0] / s, mx[1] / s)
        return self.rgb(frame, my, mx)

    def depth(self, frame: np.ndarray) -> np.ndarray:
        return frame if self.identity else resample_depth(frame, self.map_y, self.map_x, self.K.height, self.K.width)


def compose(outer: AxisMap, inner: AxisMap) -> AxisMap:
    """The map ``e -> outer(inner(e))`` (``inner``: output -> intermediate, ``outer``: intermediate -> source)."""
    return outer[0] * inner[0], outer[0] * inner[1] + outer[1]


def write_import(out: Path, old_files: list[Path], spec: DatasetSpec, header: Episode,
                 rgb_frames: Callable[[], Iterable[np.ndarray]], depth_frames: Callable[[], Iterable[np.ndarray]],
                 *, compresslevel: int, done: Callable[[], None]) -> tuple[Dataset, Path]:
    """Replace the old dataset's files (``overwrite``), create the dataset, write ``manifest.json``
    (the episode pending), stream the episode, record it. On any error nothing half-made stays."""
    remove_files(out, old_files)  # the source is checked; the old dataset goes
    existed = out.exists()
    ds = create_dataset(out, spec)
    path = ds.episode_path(0)
    manifest = Manifest.expecting({path.name: header.split})
    try:
        manifest.save(ds.manifest_path)  # before the episode: an interrupted import is recognisably incomplete
        write_episode_frames(path, header, rgb_frames, depth_frames, compresslevel=compresslevel)
        Manifest.record(manifest.episodes[path.name], path)
        manifest.save(ds.manifest_path)
    except BaseException:
        # leave no half-imported dataset behind (only what create_dataset made; the writes are atomic)
        path.unlink(missing_ok=True)
        ds.manifest_path.unlink(missing_ok=True)
        ds.json_path.unlink(missing_ok=True)
        for d in (ds.episodes_dir, out if not existed else None):
            if d is not None:
                try:
                    d.rmdir()
                except OSError:
                    pass
        raise
    finally:
        done()
    return ds, path


def existing_dataset_files(out: Path, overwrite: bool) -> list[Path]:
    """The files of the dataset in ``out`` that ``overwrite`` will replace (``[]`` for a new or
    empty directory). Refuses a dataset without ``overwrite`` and a directory holding other files."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise DatasetError("exists and is not a directory", out)
    files, other = [], []
    for p in sorted(out.iterdir()):
        if p.name in (DATASET_JSON, MANIFEST_JSON) and p.is_file():
            files.append(p)
        elif p.name in (EPISODES_DIR, HOUSES_DIR) and p.is_dir():
            for q in sorted(p.iterdir()):
                ok = q.is_file() and (q.name.endswith(TEMP_SUFFIX) or EPISODE_RE.match(q.name)
                                      or (p.name == HOUSES_DIR and q.suffix == ".json"))
                (files if ok else other).append(q)
            files.append(p)
        elif p.is_file() and p.name.endswith(TEMP_SUFFIX):
            files.append(p)
        else:
            other.append(p)
    if other:
        raise DatasetError(f"not empty and not only a pewm dataset (it holds {other[0].relative_to(out)}); "
                           "choose a new or empty output directory", out)
    if files and not overwrite:
        raise DatasetError("already holds a dataset; import with overwrite=True (CLI: --overwrite) to replace it",
                           out)
    return files


def remove_files(out: Path, files: list[Path]) -> None:
    """Remove an old dataset's files: the manifest first (an interrupted removal leaves a dataset
    that is recognisably incomplete), directories last."""
    order = sorted(files, key=lambda p: (p.name != MANIFEST_JSON, p.is_dir(), p.name == DATASET_JSON))
    for p in order:
        if p.is_dir():
            p.rmdir()
        else:
            p.unlink(missing_ok=True)
