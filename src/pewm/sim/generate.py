"""Dataset generation: many houses, many episodes, deterministic, parallel and resumable.

Every episode is a pure function of ``(seed, house_index, episode_index)`` and the configuration,
so running the same command again writes the same bytes, and running it after an interruption
only produces the episodes that are missing (each episode file is written atomically).

``manifest.json`` (:mod:`pewm.data.manifest`) lists every house and episode file the dataset
will hold; it is written before the first of them, and each entry gets its size and SHA-256 as
its file is finished (saved every few seconds and at the end). A rerun checks every file against
it (and fully reads the files it has not recorded yet) and regenerates what is missing or
damaged, so the finished directory (episodes, houses and manifest) is byte-identical however
often the run was interrupted. Ctrl-C (SIGINT) stops at the next frame: workers are stopped, no
temp file is left, finished files are recorded, and :class:`KeyboardInterrupt` is raised.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pewm.atomic import TEMP_SUFFIX, atomic_write_bytes
from pewm.data import DatasetSpec, Episode, EpisodeError, Manifest, create_dataset, file_sha256, open_dataset
from pewm.data import DatasetError, read_episode
from pewm.data.importing import existing_dataset_files, remove_files
from pewm.geometry import AgentState, intrinsics_from_fov
from pewm.sim.env import EmbodiedEnv, SimConfig
from pewm.sim.house import House, generate_house
from pewm.sim.trajectories import TrajectoryConfig, choose_kind, plan_actions

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class GenerateConfig:
    """Arguments of ``pewm data generate``."""

    houses: int = 4
    episodes_per_house: int = 2
    steps: int = 100  # actions per episode; an episode has steps + 1 frames
    resolution: int = 64
    seed: int = 0
    workers: int = 1
    fov_y_deg: float = 90.0
    camera_height: float = 1.25
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("houses", "episodes_per_house", "workers", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.steps <= 500:
            raise ValueError(f"--steps must be in 1..500 (the paper's episodes have at most 500 steps), got {self.steps}")
        if self.resolution not in (64, 128, 256) and self.resolution % 16:
            raise ValueError(f"--resolution must be 64, 128, 256 or a multiple of 16, got {self.resolution}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 < self.fov_y_deg < 180.0:
            raise ValueError(f"--fov must be in (0, 180) degrees, got {self.fov_y_deg}")
        wall = SimConfig().house.wall_height
        if not 0.1 <= self.camera_height <= wall - 0.1:
            raise ValueError(f"--camera-height must be in 0.1..{wall - 0.1:.1f} m (inside the room), got {self.camera_height}")


@dataclass(frozen=True)
class EpisodePlan:
    index: int
    house_index: int
    episode_index: int
    house_seed: int
    split: str


def house_splits(n_houses: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> list[str]:
    """Split of each house by index: the last houses are test, the ones before them val.

    With 3 or more houses val and test get at least one house each; with 2 the second is test;
    a single house is train. Whole houses are held out, so test scenes are never seen in training.
    """
    n_val = n_test = 0
    if n_houses >= 3:
        n_val = max(1, int(round(n_houses * val_fraction)))
        n_test = max(1, int(round(n_houses * test_fraction)))
    elif n_houses == 2:
        n_test = 1
    n_train = n_houses - n_val - n_test
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def house_seed(seed: int, house_index: int) -> int:
    return int(np.random.SeedSequence([seed, house_index]).generate_state(1)[0])


def plan_dataset(cfg: GenerateConfig) -> list[EpisodePlan]:
    splits = house_splits(cfg.houses, cfg.val_fraction, cfg.test_fraction)
    plans = []
    for h in range(cfg.houses):
        for e in range(cfg.episodes_per_house):
            plans.append(EpisodePlan(h * cfg.episodes_per_house + e, h, e, house_seed(cfg.seed, h), splits[h]))
    return plans


def sim_config_for(cfg: GenerateConfig) -> SimConfig:
    return SimConfig(resolution=cfg.resolution, fov_y_deg=cfg.fov_y_deg, camera_height=cfg.camera_height)


class EpisodeRecorder:
    """Renders episodes; keeps the environment of the last house so a house is built once."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        self.env = EmbodiedEnv(sim_config_for(cfg))
        self._house_seed: int | None = None

    def house(self, seed: int) -> House:
        if self._house_seed != seed:
            self._house = generate_house(seed, self.env.config.house)
            self._house_seed = seed
        return self._house

    def record(self, plan: EpisodePlan, stop: "Interrupt | None" = None) -> Episode:
        """Render the episode of ``plan``; ``stop.check()`` runs before every frame."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, plan.house_index, plan.episode_index])
        house = self.house(plan.house_seed)
        obs, _ = self.env.reset(seed=int(rng.integers(2**31)), options={"house": house})
        free = self.env.free_space
        x, y = free.sample_free(rng, free.largest_component())
        start = AgentState(x, y, float(rng.uniform(-math.pi, math.pi)))
        obs = self.env.teleport(start)
        kind = choose_kind(rng, TrajectoryConfig())
        actions = plan_actions(free, start, kind, cfg.steps, rng, self.env.config.actions,
                               agent_radius=self.env.config.agent_radius)
        rgb, depth, poses, collided, states = [obs["rgb"]], [obs["depth"]], [obs["pose"]], [], [start]
        for a in actions:
            if stop is not None:
                stop.check()
            obs, _, _, _, info = self.env.step(a)
            rgb.append(obs["rgb"])
            depth.append(obs["depth"])
            poses.append(obs["pose"])
            collided.append(bool(info["collided"]))
            states.append(info["state"])
        return Episode(
            rgb=np.stack(rgb),
            depth=np.stack(depth).astype(np.float32),
            poses=np.stack(poses),
            actions=np.asarray(actions, dtype=np.int64),
            intrinsics=self.env.intrinsics,
            collided=np.asarray(collided, dtype=bool),
            episode_id=f"ep_{plan.index:06d}",
            house_id=f"house_{plan.house_index:04d}",
            split=plan.split,
            kind=kind,
            meta={
                "house_seed": plan.house_seed,
                "house_family": getattr(house, "family", None),
                "episode_index": plan.episode_index,
                "agent_states": [[s.x, s.y, s.yaw] for s in states],
            },
        )


class Interrupt:
    """Ctrl-C deferred to safe points: while :func:`deferred_sigint` is active, SIGINT only sets
    ``requested``, and :meth:`check` raises :class:`KeyboardInterrupt` at the next check. (A
    KeyboardInterrupt raised inside a ctypes call of the OpenGL renderer would surface as
    ``ctypes.ArgumentError`` instead.)"""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_sigint() -> Iterator[Interrupt]:
    """An :class:`Interrupt` that SIGINT sets (in the main thread; elsewhere SIGINT is untouched)."""
    stop = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame) -> None:
        stop.requested = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


_RECORDER: EpisodeRecorder | None = None
_STOP: Interrupt | None = None


def _worker_init(cfg: GenerateConfig, stop: Interrupt | None = None) -> None:
    global _RECORDER, _STOP
    import torch

    torch.set_num_threads(1)
    _RECORDER = EpisodeRecorder(cfg)
    _STOP = stop


def _pool_worker_init(cfg: GenerateConfig) -> None:
    """A pool worker: Ctrl-C is the parent's to handle (it stops the pool), and the worker dies
    with its parent (no orphan keeps writing after a ``kill -9``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ppid = os.getppid()
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
        if os.getppid() != ppid:  # the parent died before prctl
            os._exit(1)
    _worker_init(cfg)


def _worker_record(args) -> tuple[int, int, int, str]:
    """Render and write one episode: ``(index, frames, file size, SHA-256)``."""
    out_dir, plan = args
    assert _RECORDER is not None
    ep = _RECORDER.record(plan, _STOP)
    path = open_dataset(out_dir).write(plan.index, ep)
    return plan.index, ep.num_frames, path.stat().st_size, file_sha256(path)


def _worker_record_chunk(chunk) -> list[tuple[int, int, int, str]]:
    return [_worker_record(args) for args in chunk]


def dataset_spec(cfg: GenerateConfig) -> DatasetSpec:
    sim = sim_config_for(cfg)
    return DatasetSpec(
        name="pewm-sim",
        intrinsics=intrinsics_from_fov(cfg.resolution, cfg.resolution, cfg.fov_y_deg),
        action_config=sim.actions,
        generator={"source": "pewm.sim", **asdict(cfg), "sim": _jsonable(asdict(sim))},
    )


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    return x


MANIFEST_SAVE_EVERY_S = 2.0


def generate_dataset(out: str | Path, cfg: GenerateConfig,
                     on_progress: Callable[[int, int], None] | None = None, overwrite: bool = False) -> dict:
    """Generate (or finish) the dataset in ``out``. Returns counts and timings.

    ``on_progress(done, total)`` is called after every episode. Arguments must match the ones the
    directory was created with (checked through ``dataset.json``), so a resumed run cannot mix
    datasets; with ``overwrite`` a dataset made with other arguments is removed (only its own
    files) and generated anew. A directory that is neither empty nor a dataset is refused. Ctrl-C raises
    :class:`KeyboardInterrupt` after stopping cleanly (module docstring).
    """
    out = Path(out)
    with deferred_sigint() as stop:
        ds = _open_or_create(out, dataset_spec(cfg), overwrite)
        ds.clean_temp_files()  # leftovers of an interrupted run (one generator per directory at a time)
        plans = plan_dataset(cfg)
        manifest = _start_manifest(ds, cfg, plans)
        runner = None
        try:
            _save_houses(out, cfg, manifest, stop)
            todo = []
            for p in plans:
                stop.check()
                if not _episode_done(ds, p.index, manifest):
                    todo.append(p)
            manifest.save(ds.manifest_path)
            done = len(plans) - len(todo)
            t0 = saved = time.perf_counter()
            frames = 0
            if on_progress:
                on_progress(done, len(plans))
            runner = _run(out, cfg, todo, stop)
            for index, n, size, sha in runner:
                entry = manifest.episodes[ds.episode_path(index).name]
                entry.bytes, entry.sha256 = size, sha
                done += 1
                frames += n
                if time.perf_counter() - saved > MANIFEST_SAVE_EVERY_S:
                    manifest.save(ds.manifest_path)
                    saved = time.perf_counter()
                if on_progress:
                    on_progress(done, len(plans))
            dt = time.perf_counter() - t0
        finally:
            if runner is not None:
                runner.close()  # stops the worker pool (if any) before the clean-up
            ds.clean_temp_files()
            manifest.save(ds.manifest_path)  # records every finished file, also when interrupted
    return {"episodes": len(plans), "generated": len(todo), "skipped": len(plans) - len(todo),
            "frames_generated": frames, "seconds": dt}


def _open_or_create(out: Path, spec: DatasetSpec, overwrite: bool = False):
    if (out / "dataset.json").exists():
        ds = open_dataset(out)
        old = {k: v for k, v in ds.spec.generator.items() if k != "workers"}
        new = {k: v for k, v in spec.generator.items() if k != "workers"}
        if old == new:
            return ds
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if not overwrite:
            raise ValueError(f"--out {out}: was generated with different arguments ({', '.join(diff)}); pass "
                             "--overwrite to replace it, use the same arguments to resume, or choose another --out")
        try:
            remove_files(out, existing_dataset_files(out, overwrite=True))  # only the dataset's own files
        except DatasetError as e:
            raise ValueError(f"--out {out}: {e.reason} (--overwrite removes only a dataset's own files)") from None
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out}: exists and is not a directory")
        for p in out.iterdir():  # an empty directory, or what an interrupted start left
            if p.name.endswith(TEMP_SUFFIX) or (p.name in ("episodes", "houses") and p.is_dir() and
                                                all(q.name.endswith(TEMP_SUFFIX) for q in p.iterdir())):
                continue
            raise ValueError(f"--out {out}: not empty and not a pewm dataset (it holds {p.name} but no "
                             "dataset.json); choose a new or empty directory")
    return create_dataset(out, spec)


def _start_manifest(ds, cfg: GenerateConfig, plans: list[EpisodePlan]) -> Manifest:
    """The manifest of the dataset ``plans`` make, keeping what an earlier run recorded; saved
    before any house or episode file is written."""
    want = Manifest.expecting({ds.episode_path(p.index).name: p.split for p in plans},
                              [f"house_{h:04d}.json" for h in range(cfg.houses)])
    try:
        have = ds.load_manifest()
    except ValueError:  # none yet (or damaged: every file is checked again)
        have = None
    manifest = have if have is not None and have.same_files(want) else want
    manifest.save(ds.manifest_path)
    return manifest


def _episode_done(ds, index: int, manifest: Manifest) -> bool:
    """Whether episode ``index`` is finished: valid, and equal to the manifest's checksum, or (not
    recorded yet) completely readable, which then records it. Otherwise its entry is reset."""
    path = ds.episode_path(index)
    entry = manifest.episodes[path.name]
    ok = ds.has_valid_episode(index)
    if ok and entry.recorded:
        ok = path.stat().st_size == entry.bytes and file_sha256(path) == entry.sha256
    elif ok:
        try:
            read_episode(path, validate=True)  # CRC-checked: the file was never recorded as finished
            Manifest.record(entry, path)
        except EpisodeError:
            ok = False
    if not ok:
        entry.bytes = entry.sha256 = None
    return ok


def _run(out: Path, cfg: GenerateConfig, todo: list[EpisodePlan], stop: Interrupt
         ) -> Iterator[tuple[int, int, int, str]]:
    if not todo:
        return
    if cfg.workers == 1 or len(todo) == 1:
        _worker_init(cfg, stop)
        for p in todo:
            stop.check()
            yield _worker_record((str(out), p))
        return
    # forkserver: workers fork from a clean server that has imported pewm once (fast start) but never
    # opened a GL context, which a plain fork would inherit from a parent that has rendered
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["pewm.sim.generate", "pewm.sim.env", "pewm.data"])
        # the server ignores SIGINT only once it has imported its preload (seconds), so a Ctrl-C
        # then killed it with a traceback: start it with SIGINT ignored (kept across exec, by it
        # and by the workers it forks); this process ignores SIGINT only while it spawns the server
        from multiprocessing import forkserver

        with _sigint_ignored():
            forkserver.ensure_running()
    else:
        ctx = mp.get_context("spawn")
    # leaving the block (finished, an error, Ctrl-C, or close()) terminates the workers
    with ctx.Pool(min(cfg.workers, len(todo)), initializer=_pool_worker_init, initargs=(cfg,)) as pool:
        n = max(1, min(cfg.episodes_per_house, math.ceil(len(todo) / cfg.workers)))  # a worker keeps its house
        chunks = [[(str(out), p) for p in todo[i:i + n]] for i in range(0, len(todo), n)]
        results = pool.imap_unordered(_worker_record_chunk, chunks)
        while True:
            try:
                rs = results.next(timeout=0.2)  # (polled, so that Ctrl-C is noticed while workers render)
            except mp.TimeoutError:
                stop.check()
                continue
            except StopIteration:
                return
            yield from rs
            stop.check()


def _save_houses(out: Path, cfg: GenerateConfig, manifest: Manifest, stop: Interrupt) -> None:
    """Write each house's JSON description (``houses/house_XXXX.json``) for maps and re-rendering
    (atomically, so an interrupted run never leaves a partial file), unless the file is there with
    the manifest's checksum; record each in ``manifest``."""
    hdir = out / "houses"
    hdir.mkdir(parents=True, exist_ok=True)
    house_cfg = sim_config_for(cfg).house
    for h in range(cfg.houses):
        stop.check()
        path = hdir / f"house_{h:04d}.json"
        entry = manifest.houses[path.name]
        if entry.recorded and path.is_file() and path.stat().st_size == entry.bytes \
                and file_sha256(path) == entry.sha256:
            continue
        data = json.dumps(_jsonable(generate_house(house_seed(cfg.seed, h), house_cfg).to_dict())).encode("utf-8")
        if not (path.is_file() and path.read_bytes() == data):
            atomic_write_bytes(path, data)
        entry.bytes, entry.sha256 = len(data), hashlib.sha256(data).hexdigest()


def load_house(dataset_dir: str | Path, house_id: str) -> House | None:
    """The ``House`` of an episode's ``house_id`` from ``DIR/houses/``, or ``None`` if absent."""
    path = Path(dataset_dir) / "houses" / f"{house_id}.json"
    if not path.exists():
        return None
    try:
        return House.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid house description ({e})") from e
