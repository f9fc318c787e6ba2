"""What planners imagine through: the world model, or the simulator itself (the oracle).

A planner (:mod:`pewm.planning.planners`) only needs a :class:`World`: ``imagine(actions)`` turns
``N`` candidate action sequences into the frames they would lead to, ``current`` is the last real
observation, and ``observe`` moves the world on after real execution. Two implementations:

* :class:`ModelWorld` -- imagination with the world model (arXiv 2505.05495 §4.2, Table 2; §5.1
  Fig. 6a): the memory is built once from the exploration prefix; all ``N`` candidates of one
  chunk are generated in ONE batched :func:`~pewm.rollout.loop.generate_chunk` call, reading one
  shared memory (shared prefix map: nothing copied); real frames are fused after execution (MPC).
* :class:`SimulatorWorld` -- the same interface over the simulator's kinematics (with collisions)
  and renderer: perfect imagination, the planners' upper bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from pewm.geometry import ActionConfig, AgentState, heading_of_pose
from pewm.geometry.kinematics import poses_from_actions
from pewm.model import MemoryBuilder, SamplingConfig, WorldModel
from pewm.model.inputs import check_K, check_start
from pewm.planning.proposals import check_sequences
from pewm.rollout.loop import generate_chunk, model_hw
from pewm.model.rollout_memory import RolloutMemory
from pewm.sim import EmbodiedEnv, SimConfig
from pewm.sim.motion import move


class Frame(NamedTuple):
    """One real observation: ``rgb`` ``(h, w, 3)`` uint8, ``depth`` ``(h, w)`` float32 metres,
    ``pose`` ``(4, 4)`` float64 camera-to-world."""

    rgb: np.ndarray
    depth: np.ndarray
    pose: np.ndarray


@dataclass
class Imagined:
    """The frames ``N`` candidate sequences of ``k`` actions lead to (frame ``t`` = after action ``t``):
    ``rgb`` ``(N, k, h, w, 3)`` uint8, ``depth`` ``(N, k, h, w)`` float32, ``poses`` ``(N, k, 4, 4)``
    float64; ``collided`` ``(N, k)`` bool where the world knows it (the simulator), else None;
    ``seconds`` spent imagining, of which ``read_seconds`` reading memories and
    ``generate_seconds`` generating (the world model)."""

    rgb: np.ndarray
    depth: np.ndarray
    poses: np.ndarray
    collided: np.ndarray | None = None
    seconds: float = 0.0
    read_seconds: float = 0.0
    generate_seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def last_rgb(self) -> np.ndarray:
        """``(N, h, w, 3)``: each candidate's last frame (what the goal is compared with)."""
        return self.rgb[:, -1]

    @property
    def last_depth(self) -> np.ndarray:
        return self.depth[:, -1]

    def select(self, idx) -> "Imagined":
        """The candidates ``idx`` (an int keeps a batch axis of 1)."""
        i = [int(idx)] if np.isscalar(idx) else np.asarray(idx)
        col = None if self.collided is None else self.collided[i]
        return Imagined(self.rgb[i], self.depth[i], self.poses[i], col, self.seconds, self.read_seconds,
                        self.generate_seconds)


@runtime_checkable
class World(Protocol):
    """The interface planners imagine through (see the module docstring). ``current`` raises until
    the world is reset, so check ``isinstance(world, World)`` after ``reset``."""

    name: str

    @property
    def current(self) -> Frame:
        """The last real observation (where imagination starts)."""

    def imagine(self, actions) -> Imagined:
        """``actions`` ``(N, k)`` -> the frames each candidate leads to; the world does not move."""

    def observe(self, rgb, depth, poses) -> None:
        """After real execution: take in the real frames ``(k, h, w, 3)``, ``(k, h, w)``,
        ``(k, 4, 4)``; the last one becomes :attr:`current`."""


def _frames(rgb, depth, poses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate real frames: ``(k, h, w, 3)`` uint8, ``(k, h, w)``, ``(k, 4, 4)`` (one frame accepted)."""
    r, d, p = np.asarray(rgb), np.asarray(depth, dtype=np.float32), np.asarray(poses, dtype=np.float64)
    if r.ndim == 3:
        r, d, p = r[None], d[None] if d.ndim == 2 else d, p[None] if p.ndim == 2 else p
    if r.ndim != 4 or r.shape[-1] != 3 or r.dtype != np.uint8:
        raise ValueError(f"rgb must be (k, h, w, 3) uint8, got shape {r.shape} dtype {r.dtype}")
    if d.shape != r.shape[:3]:
        raise ValueError(f"depth has shape {d.shape}, expected {r.shape[:3]} to match rgb")
    if p.shape != (r.shape[0], 4, 4):
        raise ValueError(f"poses has shape {p.shape}, expected ({r.shape[0]}, 4, 4) camera-to-world")
    return r, d, p


def _check_max_batch(max_batch) -> int | None:
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be a positive integer or None (all candidates at once), got {max_batch!r}")
    return max_batch


# -- imagination with the world model ---------------------------------------------------------------


class ModelWorld:
    """Imagine candidates with the world model and a persistent memory (§4.2, §5.1 Fig. 6a).

    ``K``: the camera at the model's resolution (:class:`~pewm.geometry.Intrinsics` or ``(3, 3)``);
    ``sampling``: the :class:`~pewm.model.SamplingConfig` of every generation; ``use_memory=False``
    is the "no memory" baseline (same weights, the memory stays empty); ``seed`` seeds the sampling
    noise at every :meth:`reset`; ``max_batch`` splits the ``N`` candidates into generations of at
    most that many (bounds peak memory; None = all ``N`` in one call).

    Shared prefix map, nothing copied: candidates of one chunk all read the one memory (built once
    per :meth:`reset`, grown only by :meth:`observe`), which :func:`generate_chunk` only reads
    when it does not fuse; candidates longer than a chunk get a copy each (they fuse what they
    imagine). Imagined poses follow the actions without collisions (the model does not know the
    walls; a blocked forward move only shows as the model imagines it).
    """

    name = "model"

    def __init__(self, model: WorldModel, K, sampling: SamplingConfig | None = None, use_memory: bool = True,
                 seed: int = 0, max_batch: int | None = None, builder: MemoryBuilder | None = None,
                 action_config: ActionConfig = ActionConfig(), allow_any_fov: bool = False) -> None:
        if not isinstance(model, WorldModel):
            raise ValueError(f"model must be a WorldModel, got {type(model).__name__}")
        self.model = model
        self.hw = model_hw(model)
        self.K = check_K(K, 1, self.hw, allow_any_fov)[0]
        self.sampling = sampling or SamplingConfig()
        self.use_memory = bool(use_memory)
        self.seed = int(seed)
        self.max_batch = _check_max_batch(max_batch)
        self.builder = builder or MemoryBuilder.for_model(model, render_supersample=self.sampling.render_supersample)
        if self.builder.reader != model.config.reader:
            raise ValueError(f"builder is for reader {self.builder.reader!r}, the model reads {model.config.reader!r}")
        self.action_config = action_config
        self.memory = RolloutMemory(self.builder)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._current: Frame | None = None
        self.generate_calls = 0
        self._timing = [0.0, 0.0]  # read, generate seconds of the imagine() under way

    @property
    def horizon(self) -> int:
        """``H``: frames per generated chunk."""
        return self.model.config.frames

    @property
    def current(self) -> Frame:
        if self._current is None:
            raise RuntimeError("ModelWorld: call reset() first")
        return self._current

    def reset(self, prefix_rgb, prefix_depth, prefix_poses, start_rgb, start_depth, start_pose,
              prefix_K=None) -> Frame:
        """Build the memory once from the exploration prefix ``(M, h, w, 3)`` / ``(M, h, w)`` /
        ``(M, 4, 4)`` (any resolution with ``prefix_K``; default ``K``; ``M = 0`` allowed) and start
        from the real frame ``start_*`` at the model's resolution; the start frame is fused too
        unless it is the prefix's last frame. ``use_memory=False``: the memory stays empty.
        Reseeds the sampling noise."""
        rgb, depth, pose = check_start(start_rgb, start_depth, start_pose, self.hw)
        if rgb.shape[0] != 1:
            raise ValueError(f"start: one frame expected, got {rgb.shape[0]}")
        start = Frame(rgb[0].numpy(), depth[0].numpy(), pose[0])
        pr, pd, pp = np.asarray(prefix_rgb), np.asarray(prefix_depth, np.float32), np.asarray(prefix_poses, np.float64)
        if pr.size:
            pr, pd, pp = _frames(pr, pd, pp)
        self.memory = RolloutMemory(self.builder)
        if self.use_memory:
            if pr.size:
                self.memory.add(pr, pd, pp, self.K if prefix_K is None else prefix_K)
            dup = bool(pr.size) and pr.shape[1:3] == self.hw and np.array_equal(pr[-1], start.rgb) and (
                np.allclose(pp[-1], start.pose))
            if not dup:
                self.memory.add(start.rgb, start.depth, start.pose, self.K)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._current = start
        return start

    def _chunk(self, cur: list[Frame], actions: np.ndarray, memories: list[RolloutMemory], fuse: bool):
        """One :func:`generate_chunk` for ``len(cur)`` candidates, each from its frame of ``cur``."""
        B = len(cur)
        self.generate_calls += 1
        rgb = torch.from_numpy(np.stack([c.rgb for c in cur]))
        depth = torch.from_numpy(np.stack([c.depth for c in cur]))
        pose, K = np.stack([c.pose for c in cur]), np.repeat(self.K[None], B, 0)
        ch = generate_chunk(self.model, rgb, depth, pose, K, actions, memories, fuse=fuse, novel_only=True,
                            sampling=self.sampling, generator=self.generator, action_config=self.action_config)
        self._timing[0] += ch.read_seconds
        self._timing[1] += ch.generate_seconds
        return ch

    def _imagine_batch(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        B, k = actions.shape
        H = self.horizon
        cur = [self.current] * B
        if k <= H:
            # shared prefix map: nothing copied; generate_chunk only reads the memories when fuse=False
            ch = self._chunk(cur, actions, [self.memory] * B, fuse=False)
            return ch.rgb.numpy(), ch.depth.numpy(), ch.poses.numpy()
        # longer than a chunk: each candidate fuses its own imagined frames (Algorithm 1), so each
        # needs its own copy of the memory (the memory-less baseline reads the empty one, unfused)
        mems = [self.memory.copy() for _ in range(B)] if self.use_memory else [self.memory] * B
        chunks = []
        for lo in range(0, k, H):
            ch = self._chunk(cur, actions[:, lo:lo + H], mems, fuse=self.use_memory)
            rgb, depth, poses = ch.rgb.numpy(), ch.depth.numpy(), ch.poses.numpy()
            chunks.append((rgb, depth, poses))
            cur = [Frame(rgb[b, -1], depth[b, -1], poses[b, -1]) for b in range(B)]
        return tuple(np.concatenate([c[j] for c in chunks], 1) for j in range(3))

    def imagine(self, actions) -> Imagined:
        """Imagine ``actions`` ``(N, k)`` from the current real frame: for ``k <= H`` all ``N``
        candidates in one generation (``ceil(N / max_batch)`` with ``max_batch``) reading the shared
        memory, which is not changed; for ``k > H`` chunk by chunk, each candidate fusing its imagined
        frames into its own copy of the memory. Returns numpy arrays (:class:`Imagined`)."""
        acts = check_sequences(actions, "actions")
        t0 = time.perf_counter()
        self._timing = [0.0, 0.0]
        n = acts.shape[0]
        step = self.max_batch or n
        parts = [self._imagine_batch(acts[i:i + step]) for i in range(0, n, step)]
        rgb, depth, poses = (np.concatenate([p[j] for p in parts]) for j in range(3))
        return Imagined(rgb, depth.astype(np.float32), poses.astype(np.float64), None, time.perf_counter() - t0,
                        *self._timing)

    def memory_map(self):
        """The persistent map the planner may consult (the ``map`` cost): the memory's map, or None
        for the memory-less baseline."""
        return self.memory.pmap if self.use_memory else None

    def observe(self, rgb, depth, poses) -> None:
        """After executing actions for real: fuse the real frames (all of them, real frames are
        trusted) into the memory when ``use_memory``; the last frame becomes :attr:`current`."""
        r, d, p = _frames(rgb, depth, poses)
        if r.shape[1:3] != self.hw:
            raise ValueError(f"observed frames are {r.shape[1]}x{r.shape[2]}, "
                             f"the model works at {self.hw[0]}x{self.hw[1]}")
        if self.use_memory:
            self.memory.add(r, d, p, self.K)
        self._current = Frame(r[-1].copy(), d[-1].copy(), p[-1].copy())


# -- the simulator as the world model (oracle) ------------------------------------------------------


def state_of_pose(pose: np.ndarray) -> AgentState:
    """The agent state whose camera has ``pose`` (position on the floor, heading of the forward axis)."""
    P = np.asarray(pose, dtype=np.float64)
    return AgentState(float(P[0, 3]), float(P[1, 3]), float(heading_of_pose(P)))


class SimulatorWorld:
    """The simulator as the world model: each candidate runs through the simulator's kinematics
    (:func:`pewm.sim.motion.move`, with collisions) from the current agent state and the frames are
    rendered (:meth:`EmbodiedEnv.render_state`); the env's agent never moves. ``env``: an
    :class:`~pewm.sim.EmbodiedEnv` already reset in the house (shared, e.g. with the real executor),
    or a house seed (a private env is made with ``config``). ``memory``: an optional
    :class:`~pewm.model.rollout_memory.RolloutMemory` (e.g. of the exploration prefix) that real
    frames are fused into, for costs that consult a map (:meth:`memory_map`)."""

    name = "simulator"

    def __init__(self, env: EmbodiedEnv | int, config: SimConfig | None = None,
                 memory: RolloutMemory | None = None) -> None:
        if memory is not None and not isinstance(memory, RolloutMemory):
            raise ValueError(f"SimulatorWorld: memory must be a RolloutMemory or None, got {type(memory).__name__}")
        self.memory = memory
        if isinstance(env, EmbodiedEnv):
            if config is not None:
                raise ValueError("SimulatorWorld: give config only with a house seed (the env has its own)")
            self.env, self._owns = env, False
        elif isinstance(env, (int, np.integer)) and not isinstance(env, bool):
            self.env, self._owns = EmbodiedEnv(config), True
            self.env.reset(seed=int(env), options={"house_seed": int(env)})
        else:
            raise ValueError(f"SimulatorWorld needs an EmbodiedEnv or a house seed, got {type(env).__name__}")
        _ = self.env.house  # raises unless the env was reset
        self.state: AgentState | None = None
        self._current: Frame | None = None

    @property
    def current(self) -> Frame:
        if self._current is None:
            raise RuntimeError("SimulatorWorld: call reset() first")
        return self._current

    def _render(self, state: AgentState) -> Frame:
        obs = self.env.render_state(state)
        return Frame(obs["rgb"], obs["depth"].astype(np.float32), obs["pose"])

    def reset(self, state: AgentState) -> Frame:
        """Start imagining from ``state`` (the real start); returns the frame there."""
        if not isinstance(state, AgentState):
            raise ValueError(f"SimulatorWorld.reset needs an AgentState, got {type(state).__name__}")
        self.state = state
        self._current = self._render(state)
        return self._current

    def imagine(self, actions) -> Imagined:
        """Run each candidate of ``actions`` ``(N, k)`` through the simulator from the current
        state (frames identical to :meth:`EmbodiedEnv.step`'s; states met twice are rendered once)."""
        acts = check_sequences(actions, "actions")
        if self.state is None:
            raise RuntimeError("SimulatorWorld: call reset() first")
        t0 = time.perf_counter()
        n, k = acts.shape
        free, cfg = self.env.free_space, self.env.config.actions
        seen: dict[tuple[float, float, float], Frame] = {}
        out = [[None] * k for _ in range(n)]
        collided = np.zeros((n, k), bool)
        for i in range(n):
            s = self.state
            for t in range(k):
                s, collided[i, t] = move(s, int(acts[i, t]), free, cfg)
                key = (s.x, s.y, s.yaw)
                if key not in seen:
                    seen[key] = self._render(s)
                out[i][t] = seen[key]
        rgb = np.stack([[f.rgb for f in row] for row in out])
        depth = np.stack([[f.depth for f in row] for row in out]).astype(np.float32)
        poses = np.stack([[f.pose for f in row] for row in out]).astype(np.float64)
        return Imagined(rgb, depth, poses, collided, time.perf_counter() - t0)

    def memory_map(self):
        """The map of :attr:`memory` (None without one)."""
        return None if self.memory is None else self.memory.pmap

    def observe(self, rgb, depth, poses, state: AgentState | None = None, K=None) -> None:
        """After real execution: continue from the last frame; its agent state is ``state``, or
        recovered from the last pose (:func:`state_of_pose`). With a :attr:`memory`, the frames are
        fused into it (intrinsics ``K``, default: the env's camera)."""
        r, d, p = _frames(rgb, depth, poses)
        if self.memory is not None:
            self.memory.add(r, d, p, self.env.intrinsics.matrix if K is None else K)
        self.state = state if state is not None else state_of_pose(p[-1])
        self._current = Frame(r[-1].copy(), d[-1].copy(), p[-1].copy())

    def close(self) -> None:
        """Close the env if this world made it."""
        if self._owns:
            self.env.close()


# -- no imagination: the memory's map and dead reckoning ----------------------------------------------


class MapOnlyWorld:
    """The no-model baseline for costs that read a map: candidates are "imagined" as the poses their
    actions lead to (dead reckoning, no collisions, like the world model's poses) and every frame is
    the current real view (nothing is generated); ``memory`` (e.g. of the exploration prefix) takes
    in the real frames. With the ``map`` cost this plans exactly as the world model with memory does
    while ignoring the imagined pixels, so it measures what imagination adds; with an image cost all
    candidates score alike (the first wins)."""

    name = "map-only"

    def __init__(self, memory: RolloutMemory | None, K, action_config: ActionConfig = ActionConfig()) -> None:
        if memory is not None and not isinstance(memory, RolloutMemory):
            raise ValueError(f"MapOnlyWorld: memory must be a RolloutMemory or None, got {type(memory).__name__}")
        self.memory = memory
        self.K = np.asarray(K, dtype=np.float64)
        self.action_config = action_config
        self._current: Frame | None = None

    @property
    def current(self) -> Frame:
        if self._current is None:
            raise RuntimeError("MapOnlyWorld: call reset() first")
        return self._current

    def reset(self, rgb, depth, pose) -> Frame:
        """Start from the real frame ``rgb`` ``(h, w, 3)``, ``depth`` ``(h, w)``, ``pose`` ``(4, 4)``."""
        r, d, p = _frames(rgb, depth, pose)
        self._current = Frame(r[0].copy(), d[0].copy(), p[0].copy())
        return self._current

    def memory_map(self):
        return None if self.memory is None else self.memory.pmap

    def imagine(self, actions) -> Imagined:
        acts = check_sequences(actions, "actions")
        t0 = time.perf_counter()
        n, k = acts.shape
        cur = self.current
        poses = np.stack([poses_from_actions(cur.pose, a, self.action_config)[1:] for a in acts])
        rgb = np.broadcast_to(cur.rgb, (n, k, *cur.rgb.shape))
        depth = np.broadcast_to(cur.depth, (n, k, *cur.depth.shape))
        return Imagined(rgb, depth, poses, None, time.perf_counter() - t0)

    def observe(self, rgb, depth, poses) -> None:
        """Fuse the real frames into :attr:`memory` (if any); the last one becomes :attr:`current`."""
        r, d, p = _frames(rgb, depth, poses)
        if self.memory is not None:
            self.memory.add(r, d, p, self.K)
        self._current = Frame(r[-1].copy(), d[-1].copy(), p[-1].copy())


# -- real execution ---------------------------------------------------------------------------------


@dataclass
class Executed:
    """Frames of actions executed in the real env: ``rgb`` ``(k, h, w, 3)``, ``depth`` ``(k, h, w)``,
    ``poses`` ``(k, 4, 4)``, ``collided`` ``(k,)``, ``states`` (the agent state after each action)."""

    rgb: np.ndarray
    depth: np.ndarray
    poses: np.ndarray
    collided: np.ndarray
    states: list[AgentState]


def execute(env: EmbodiedEnv, actions) -> Executed:
    """Execute ``actions`` ``(k,)`` in ``env`` (the real world) and collect what it shows, ready
    for :meth:`World.observe` (MPC: execute the first chunk, observe, re-plan)."""
    acts = check_sequences(np.asarray(actions).reshape(1, -1), "actions")[0]
    rgb, depth, poses, col, states = [], [], [], [], []
    for a in acts:
        obs, _, _, _, info = env.step(int(a))
        rgb.append(obs["rgb"]), depth.append(obs["depth"]), poses.append(obs["pose"])
        col.append(info["collided"]), states.append(info["state"])
    return Executed(np.stack(rgb), np.stack(depth).astype(np.float32), np.stack(poses), np.asarray(col, bool), states)


__all__ = [
    "Executed",
    "Frame",
    "Imagined",
    "MapOnlyWorld",
    "ModelWorld",
    "SimulatorWorld",
    "World",
    "execute",
    "state_of_pose",
]
