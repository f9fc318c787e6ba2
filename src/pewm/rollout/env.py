"""A gymnasium environment whose observations are imagined by the world model.

``WorldModelEnv`` runs ``num_envs`` imagined rollouts side by side (Algorithm 1 of arXiv
2505.05495, one persistent 3D memory per rollout, §3.3): ``reset`` takes the real start frames
(and optionally frames to pre-fill each memory), ``step(actions)`` imagines one frame per env and
``step_chunk(actions)`` a whole chunk of up to ``H`` frames per env in one generation (the efficient
path for planners), and ``step_poses(poses)`` a chunk along given camera poses (imagination along a
recorded or planned camera path, no discrete actions). Every generated frame that is returned is
fused into its env's memory.

``step`` generates one chunk whose first future pose is the action's result and whose other
``H - 1`` future poses repeat it ("stay"), and keeps only the first frame.

``use_memory = False`` switches the memory off for the next generations (the paper's "w/o
memory" ablation, live): the model reads an empty memory, and what it imagines is still fused
into the env's memory, so switching it back on reads everything imagined so far.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from pewm.geometry import Action, ActionConfig, intrinsics_from_fov
from pewm.model import MemoryBuilder, SamplingConfig, WorldModel
from pewm.model.inputs import check_actions, check_K, check_poses, check_start
from pewm.rollout.loop import generate_chunk, model_hw
from pewm.model.rollout_memory import RolloutMemory

_MEMORY_KEYS = ("rgb", "depth", "poses", "K")


class WorldModelEnv(gym.Env):
    """Imagined navigation: ``num_envs`` rollouts of ``model`` with persistent memories.

    Observations are dicts ``{"rgb": (N, h, w, 3) uint8, "depth": (N, h, w) float32,
    "pose": (N, 4, 4) float64}``; actions ``(N,)`` ids (0 forward, 1 left, 2 right); rewards are 0
    and episodes never end (a task wrapper adds both). ``K``: the camera at the model's
    resolution (default: 90 degree vertical field of view); ``sampling``: the
    :class:`~pewm.model.SamplingConfig` of every generation (DDIM steps, guidance, anchoring, render
    supersampling); ``seed`` seeds the sampling noise (default ``sampling.seed``, else 0;
    ``reset(seed=...)`` reseeds it); ``builder`` builds the memories (default
    ``MemoryBuilder.for_model(model)``); ``allow_any_fov`` accepts a ``K`` whose field of view is far
    from the training camera's (:func:`~pewm.model.inputs.check_fov`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        model: WorldModel,
        num_envs: int = 1,
        K=None,
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        builder: MemoryBuilder | None = None,
        action_config: ActionConfig = ActionConfig(),
        render_mode: str | None = "rgb_array",
        allow_any_fov: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, WorldModel):
            raise ValueError(f"model must be a WorldModel, got {type(model).__name__}")
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"WorldModelEnv: render_mode must be None or 'rgb_array', got {render_mode!r}")
        cfg = model.config
        self.model = model
        self.num_envs = N = int(num_envs)
        self.horizon = cfg.frames
        h, w = cfg.image_height, cfg.image_width
        self.K = check_K(intrinsics_from_fov(w, h, 90.0) if K is None else K, N, (h, w), allow_any_fov)
        self.sampling = sampling or SamplingConfig()
        if seed is None:
            seed = 0 if self.sampling.seed is None else self.sampling.seed
        if builder is None:
            builder = MemoryBuilder.for_model(model, render_supersample=self.sampling.render_supersample)
        elif builder.reader != cfg.reader:
            raise ValueError(f"builder is for reader {builder.reader!r}, the model reads {cfg.reader!r}")
        self.builder = builder
        self.action_config = action_config
        self.render_mode = render_mode
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (N, h, w, 3), np.uint8),
            "depth": spaces.Box(0.0, np.inf, (N, h, w), np.float32),
            "pose": spaces.Box(-np.inf, np.inf, (N, 4, 4), np.float64),
        })
        self.action_space = spaces.MultiDiscrete([len(Action)] * N, seed=int(seed))
        self._generator = torch.Generator().manual_seed(int(seed))
        self._memories: list[RolloutMemory] | None = None
        self._rgb: torch.Tensor | None = None
        self._depth: torch.Tensor | None = None
        self._pose: np.ndarray | None = None
        self._steps_taken = 0
        self.use_memory = True

    # -- state -----------------------------------------------------------------------------------
    def _need_reset(self) -> None:
        if self._memories is None:
            raise RuntimeError("WorldModelEnv: call reset(options={'rgb', 'depth', 'pose'}) before step()")

    @property
    def memories(self) -> list[RolloutMemory]:
        """The persistent memory of each env (updated by every step)."""
        self._need_reset()
        return self._memories  # type: ignore[return-value]

    @property
    def step_count(self) -> int:
        """Frames imagined per env since the last reset."""
        return self._steps_taken

    def _obs(self) -> dict[str, np.ndarray]:
        return {"rgb": self._rgb.numpy().copy(), "depth": self._depth.numpy().copy(), "pose": self._pose.copy()}

    def _info(self, seconds: float = 0.0) -> dict:
        return {"memory_sizes": np.array([len(m) for m in self._memories]), "step": self._steps_taken,
                "seconds": seconds}

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start ``num_envs`` rollouts. ``options``: ``rgb`` ``(N, h, w, 3)`` uint8, ``depth``
        ``(N, h, w)``, ``pose`` ``(N, 4, 4)`` (one unbatched frame is used for every env), and
        optionally ``memory``: frames ``{"rgb", "depth", "poses", "K"}`` (any resolution) to
        pre-fill every env's memory, a :class:`RolloutMemory` (copied), or a list of either, one
        per env. The start frames are then fused (Algorithm 1)."""
        super().reset(seed=seed)
        if seed is not None:
            self._generator.manual_seed(int(seed))
            self.action_space.seed(int(seed))
        options = dict(options or {})
        missing = [k for k in ("rgb", "depth", "pose") if k not in options]
        if missing:
            raise ValueError(
                f"WorldModelEnv.reset: options must give the start frames; missing {missing} "
                "(rgb (N, h, w, 3) uint8, depth (N, h, w), pose (N, 4, 4))"
            )
        unknown = sorted(set(options) - {"rgb", "depth", "pose", "memory"})
        if unknown:
            raise ValueError(f"WorldModelEnv.reset: unknown option(s) {unknown}; valid: rgb, depth, pose, memory")
        N = self.num_envs
        rgb, depth, pose = check_start(options["rgb"], options["depth"], options["pose"], model_hw(self.model))
        if rgb.shape[0] == 1 and N > 1:
            rgb, depth, pose = rgb.expand(N, *rgb.shape[1:]), depth.expand(N, *depth.shape[1:]), np.repeat(pose, N, 0)
        if rgb.shape[0] != N:
            raise ValueError(f"options['rgb'] has {rgb.shape[0]} frames, expected num_envs={N} (or 1 for all)")
        self._memories = self._make_memories(options.get("memory"))
        for b, m in enumerate(self._memories):
            m.add(rgb[b], depth[b], pose[b], self.K[b])
        self._rgb, self._depth, self._pose = rgb.contiguous().clone(), depth.contiguous().clone(), pose.copy()
        self._steps_taken = 0
        return self._obs(), self._info()

    def _one_memory(self, spec, where: str) -> RolloutMemory:
        if isinstance(spec, RolloutMemory):
            if spec.reader != self.builder.reader:
                raise ValueError(f"{where} is for reader {spec.reader!r}, the model reads {self.builder.reader!r}")
            return spec.copy()
        if isinstance(spec, dict):
            bad = sorted(set(_MEMORY_KEYS) ^ set(spec))
            if bad:
                raise ValueError(f"{where} must have exactly the keys {list(_MEMORY_KEYS)}; wrong or missing: {bad}")
            try:
                return RolloutMemory.from_frames(self.builder, spec["rgb"], spec["depth"], spec["poses"], spec["K"])
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        raise ValueError(f"{where} must be a dict of frames {list(_MEMORY_KEYS)} or a RolloutMemory, "
                         f"got {type(spec).__name__}")

    def _make_memories(self, spec) -> list[RolloutMemory]:
        N = self.num_envs
        if spec is None:
            return [RolloutMemory(self.builder) for _ in range(N)]
        if isinstance(spec, (list, tuple)):
            if len(spec) != N:
                raise ValueError(f"options['memory'] is a list of {len(spec)}, expected one per env (num_envs={N})")
            return [self._one_memory(s, f"options['memory'][{i}]") for i, s in enumerate(spec)]
        first = self._one_memory(spec, "options['memory']")  # built once, copied for the others
        return [first] + [first.copy() for _ in range(N - 1)]

    def step_chunk(self, actions):
        """Imagine ``k`` frames per env in one generation: ``actions`` ``(N, k)``, ``1 <= k <= H``.

        Returns ``(obs, reward, terminated, truncated, info)`` with ``obs`` arrays of ``k`` frames
        (``rgb`` ``(N, k, h, w, 3)``, ``depth`` ``(N, k, h, w)``, ``pose`` ``(N, k, 4, 4)``) and
        ``(N, k)`` rewards / flags; the env continues from the last frame.
        """
        self._need_reset()
        N, H = self.num_envs, self.horizon
        a = np.asarray(actions)
        if a.ndim != 2 or a.shape[0] != N:
            raise ValueError(
                f"step_chunk: actions has shape {a.shape}, expected (num_envs={N}, k) with 1 <= k <= H={H}"
            )
        return self._chunk(check_actions(a, N, max_len=H), None)

    def step_poses(self, poses):
        """Imagine ``k`` frames per env along given camera poses: ``poses`` ``(N, k, 4, 4)``
        camera-to-world (``poses[:, 0]`` is the next frame's), ``1 <= k <= H``. Returns what
        :meth:`step_chunk` returns; the same rollout as the actions that lead to those poses."""
        self._need_reset()
        N, H = self.num_envs, self.horizon
        p = np.asarray(poses)
        if p.ndim != 4 or p.shape[0] != N:
            raise ValueError(
                f"step_poses: poses has shape {p.shape}, expected (num_envs={N}, k, 4, 4) with 1 <= k <= H={H}"
            )
        return self._chunk(None, check_poses(p, N, max_len=H))

    def _chunk(self, acts, poses):
        N = self.num_envs
        t0 = time.perf_counter()
        read_from = self._memories if self.use_memory else [RolloutMemory(self.builder) for _ in range(N)]
        ch = generate_chunk(self.model, self._rgb, self._depth, self._pose, self.K, acts, read_from,
                            poses=poses, fuse=self.use_memory, sampling=self.sampling, generator=self._generator,
                            action_config=self.action_config)
        if not self.use_memory:  # recorded all the same (what generate_chunk's fuse would have done)
            for b, m in enumerate(self._memories):
                m.add(ch.rgb[b], ch.depth[b], ch.poses[b], self.K[b], novel_only=True, imagined=True)
        seconds = time.perf_counter() - t0
        self._rgb, self._depth = ch.rgb[:, -1].contiguous(), ch.depth[:, -1].contiguous()
        self._pose = ch.poses[:, -1].numpy().copy()
        k = ch.rgb.shape[1]
        self._steps_taken += k
        obs = {"rgb": ch.rgb.numpy().copy(), "depth": ch.depth.numpy().copy(), "pose": ch.poses.numpy().copy()}
        z = np.zeros((N, k), dtype=bool)
        return obs, np.zeros((N, k), dtype=np.float32), z, z.copy(), self._info(seconds)

    def step(self, actions):
        """Imagine the next frame of every env: ``actions`` ``(N,)`` ids (a scalar when ``N = 1``)."""
        self._need_reset()
        N = self.num_envs
        a = np.asarray(actions)
        if a.ndim == 0 and N == 1:
            a = a.reshape(1)
        if a.shape != (N,):
            raise ValueError(f"step: actions has shape {a.shape}, expected (num_envs={N},): one action id per env")
        obs, rew, term, trunc, info = self.step_chunk(a[:, None])
        obs = {k: v[:, 0] for k, v in obs.items()}
        return obs, rew[:, 0], term[:, 0], trunc[:, 0], info

    def render(self):
        """The current RGB frame of env 0 ``(h, w, 3)`` uint8 (None before reset)."""
        if self._rgb is None:
            return None
        return self._rgb[0].numpy().copy()


__all__ = ["WorldModelEnv"]
