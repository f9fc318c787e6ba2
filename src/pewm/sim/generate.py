"""Dataset generation: many houses, many episodes, deterministic, parallel and resumable.

Every episode is a pure function of ``(seed, house_index, episode_index)`` and the configuration,
so running the same command again writes the same bytes, and running it after an interruption
only produces the episodes that are missing (each episode file is written atomically).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pewm.atomic import atomic_write_text
from pewm.data import DatasetSpec, Episode, create_dataset, open_dataset
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

    def record(self, plan: EpisodePlan) -> Episode:
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


_RECORDER: EpisodeRecorder | None = None


def _worker_init(cfg: GenerateConfig) -> None:
    global _RECORDER
    import torch

    torch.set_num_threads(1)
    _RECORDER = EpisodeRecorder(cfg)


def _worker_record(args) -> tuple[int, int]:
    out_dir, plan = args
    assert _RECORDER is not None
    ep = _RECORDER.record(plan)
    open_dataset(out_dir).write(plan.index, ep)
    return plan.index, ep.num_frames


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


def generate_dataset(out: str | Path, cfg: GenerateConfig,
                     on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate (or finish) the dataset in ``out``. Returns counts and timings.

    ``on_progress(done, total)`` is called after every episode. Arguments must match the ones the
    directory was created with (checked through ``dataset.json``), so a resumed run cannot mix
    datasets.
    """
    out = Path(out)
    spec = dataset_spec(cfg)
    if (out / "dataset.json").exists():
        ds = open_dataset(out)
        old = {k: v for k, v in ds.spec.generator.items() if k != "workers"}
        new = {k: v for k, v in spec.generator.items() if k != "workers"}
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"{out / 'dataset.json'} was generated with different arguments ({', '.join(diff)}); "
                "use another --out directory or the same arguments to resume"
            )
    else:
        ds = create_dataset(out, spec)
    ds.clean_temp_files()  # leftovers of an interrupted run (one generator per directory at a time)
    _save_houses(out, cfg)
    plans = plan_dataset(cfg)
    todo = [p for p in plans if not ds.has_valid_episode(p.index)]
    done = len(plans) - len(todo)
    t0 = time.perf_counter()
    frames = 0
    if on_progress:
        on_progress(done, len(plans))
    for _, n in _run(out, cfg, todo):
        done += 1
        frames += n
        if on_progress:
            on_progress(done, len(plans))
    dt = time.perf_counter() - t0
    return {"episodes": len(plans), "generated": len(todo), "skipped": len(plans) - len(todo),
            "frames_generated": frames, "seconds": dt}


def _run(out: Path, cfg: GenerateConfig, todo: list[EpisodePlan]) -> Iterator[tuple[int, int]]:
    if not todo:
        return
    if cfg.workers == 1 or len(todo) == 1:
        _worker_init(cfg)
        for p in todo:
            yield _worker_record((str(out), p))
        return
    # forkserver: workers fork from a clean server that has imported pewm once (fast start) but never
    # opened a GL context, which a plain fork would inherit from a parent that has rendered
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["pewm.sim.generate", "pewm.sim.env", "pewm.data"])
    else:
        ctx = mp.get_context("spawn")
    with ctx.Pool(min(cfg.workers, len(todo)), initializer=_worker_init, initargs=(cfg,)) as pool:
        chunk = max(1, min(cfg.episodes_per_house, math.ceil(len(todo) / cfg.workers)))
        yield from pool.imap_unordered(_worker_record, [(str(out), p) for p in todo], chunksize=chunk)


def _save_houses(out: Path, cfg: GenerateConfig) -> None:
    """Write each house's JSON description (``houses/house_XXXX.json``) for maps and re-rendering
    (atomically, so an interrupted run never leaves a partial file)."""
    hdir = out / "houses"
    hdir.mkdir(parents=True, exist_ok=True)
    house_cfg = sim_config_for(cfg).house
    for h in range(cfg.houses):
        path = hdir / f"house_{h:04d}.json"
        if path.exists():
            continue
        house = generate_house(house_seed(cfg.seed, h), house_cfg)
        atomic_write_text(path, json.dumps(_jsonable(house.to_dict())))


def load_house(dataset_dir: str | Path, house_id: str) -> House | None:
    """The ``House`` of an episode's ``house_id`` from ``DIR/houses/``, or ``None`` if absent."""
    path = Path(dataset_dir) / "houses" / f"{house_id}.json"
    if not path.exists():
        return None
    try:
        return House.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid house description ({e})") from e
