"""The embodied navigation environment (gymnasium API) over procedural houses.

Observations are RGB-D frames with their camera-to-world pose. ``action[t]`` moves the agent from
frame ``t`` to frame ``t + 1``: :meth:`EmbodiedEnv.reset` returns frame 0 and the ``t``-th call to
:meth:`EmbodiedEnv.step` returns frame ``t + 1``. A forward move that would leave free space is not
executed (the agent stays) and is reported as ``info["collided"] = True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pewm.geometry import Action, ActionConfig, AgentState, Intrinsics, intrinsics_from_fov
from pewm.sim.freespace import FreeSpaceGrid
from pewm.sim.house import House, HouseConfig, generate_house
from pewm.sim.motion import move
from pewm.sim.render import RGBDRenderer


@dataclass
class SimConfig:
    """Simulator settings: image size, camera, action step sizes, agent body, episode length, houses."""

    resolution: int = 64
    fov_y_deg: float = 90.0
    camera_height: float = 1.25
    pitch_deg: float = 0.0
    actions: ActionConfig = field(default_factory=ActionConfig)
    agent_radius: float = 0.2
    max_steps: int = 500
    house: HouseConfig = field(default_factory=HouseConfig)
    free_space_resolution: float = 0.05

    def __post_init__(self) -> None:
        if not 8 <= int(self.resolution) <= 1024:
            raise ValueError(f"SimConfig: resolution must be in [8, 1024], got {self.resolution}")
        if not 0.0 < self.fov_y_deg < 180.0:
            raise ValueError(f"SimConfig: fov_y_deg must be in (0, 180), got {self.fov_y_deg}")
        if not 0.1 <= self.camera_height <= self.house.wall_height - 0.1:
            raise ValueError(
                f"SimConfig: camera_height {self.camera_height} must be inside the room (0.1 .. wall_height - 0.1)"
            )
        if not -80.0 <= self.pitch_deg <= 80.0:
            raise ValueError(f"SimConfig: pitch_deg must be in [-80, 80], got {self.pitch_deg}")
        if not 0.0 <= self.agent_radius <= 0.45:
            raise ValueError(f"SimConfig: agent_radius must be in [0, 0.45] (doors are ~1 m), got {self.agent_radius}")
        if self.max_steps < 1:
            raise ValueError(f"SimConfig: max_steps must be >= 1, got {self.max_steps}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["actions"] = {"forward_m": self.actions.forward_m, "turn_deg": self.actions.turn_deg}
        d["house"] = self.house.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SimConfig":
        d = dict(d)
        if "actions" in d and isinstance(d["actions"], dict):
            d["actions"] = ActionConfig(**d["actions"])
        if "house" in d and isinstance(d["house"], dict):
            d["house"] = HouseConfig.from_dict(d["house"])
        return cls(**d)


class EmbodiedEnv(gym.Env):
    """Navigate a procedural house with FORWARD / TURN_LEFT / TURN_RIGHT and see RGB-D frames.

    ``reset(seed=..., options={"house_seed": int, "house": House, "state": AgentState})``: without a
    house, one is generated from a seed drawn from the env's RNG (so the env is deterministic given
    the reset seed); without a state, the agent starts at a random free cell of the largest
    connected free region, facing a random direction.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: SimConfig | None = None, render_mode: str | None = "rgb_array") -> None:
        super().__init__()
        self.config = SimConfig() if config is None else config
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"EmbodiedEnv: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        R = int(self.config.resolution)
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (R, R, 3), np.uint8),
            "depth": spaces.Box(0.0, np.inf, (R, R), np.float32),
            "pose": spaces.Box(-np.inf, np.inf, (4, 4), np.float64),
        })
        self.action_space = spaces.Discrete(len(Action))
        self._house: House | None = None
        self._renderer: RGBDRenderer | None = None
        self._free: FreeSpaceGrid | None = None
        self._reachable: np.ndarray | None = None
        self._state: AgentState | None = None
        self._steps = 0
        self._last_obs: dict | None = None

    # ---- properties ---------------------------------------------------------------------------
    def _need_reset(self) -> None:
        if self._house is None or self._state is None:
            raise RuntimeError("EmbodiedEnv: call reset() first")

    @property
    def house(self) -> House:
        self._need_reset()
        return self._house  # type: ignore[return-value]

    @property
    def state(self) -> AgentState:
        self._need_reset()
        return self._state  # type: ignore[return-value]

    @property
    def free_space(self) -> FreeSpaceGrid:
        self._need_reset()
        return self._free  # type: ignore[return-value]

    @property
    def reachable(self) -> np.ndarray:
        """Mask of the free-space grid's largest connected region (where starts are drawn)."""
        self._need_reset()
        return self._reachable  # type: ignore[return-value]

    @property
    def intrinsics(self) -> Intrinsics:
        R = int(self.config.resolution)
        return intrinsics_from_fov(R, R, self.config.fov_y_deg)

    @property
    def step_count(self) -> int:
        return self._steps

    # ---- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"house_seed", "house", "state"}
        if unknown:
            raise ValueError(f"EmbodiedEnv.reset: unknown option(s) {sorted(unknown)}; valid: house_seed, house, state")
        house = options.get("house")
        if house is not None and not isinstance(house, House):
            raise TypeError(f"EmbodiedEnv.reset: options['house'] must be a House, got {type(house).__name__}")
        if house is None:
            hs = options.get("house_seed")
            if hs is None:
                hs = int(self.np_random.integers(2**31 - 1))
            cur = self._house
            if cur is not None and cur.seed == int(hs) and cur.config == self.config.house:
                house = cur  # same house again: keep the built renderer
            else:
                house = generate_house(int(hs), self.config.house)
        self._set_house(house)
        state = options.get("state")
        if state is None:
            x, y = self._free.sample_free(self.np_random, self._reachable)  # type: ignore[union-attr]
            state = AgentState(x, y, float(self.np_random.uniform(-math.pi, math.pi)))
        elif not isinstance(state, AgentState):
            raise TypeError(f"EmbodiedEnv.reset: options['state'] must be an AgentState, got {type(state).__name__}")
        self._state = state
        self._steps = 0
        obs = self._observe()
        return obs, self._info(collided=False)

    def step(self, action):
        self._need_reset()
        arr = np.asarray(action)
        if arr.size != 1:
            raise ValueError(f"EmbodiedEnv.step: expected a single action id, got {action!r}")
        try:
            a = int(Action.check(arr.reshape(-1))[0])
        except TypeError as e:
            raise ValueError(f"EmbodiedEnv.step: invalid action {action!r}") from e
        self._state, collided = move(self._state, a, self._free, self.config.actions)  # type: ignore[arg-type]
        self._steps += 1
        obs = self._observe()
        truncated = self._steps >= self.config.max_steps
        return obs, 0.0, False, truncated, self._info(collided=collided)

    def teleport(self, state: AgentState) -> dict:
        """Put the agent at ``state`` (no free-space check) and return the observation there."""
        self._need_reset()
        if not isinstance(state, AgentState):
            raise TypeError(f"EmbodiedEnv.teleport: expected an AgentState, got {type(state).__name__}")
        self._state = state
        return self._observe()

    def render(self):
        if self._last_obs is None:
            return None
        return self._last_obs["rgb"]

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---- helpers ------------------------------------------------------------------------------
    def pose_of(self, state: AgentState) -> np.ndarray:
        """Camera-to-world pose of the agent camera at ``state``."""
        return state.camera_pose(self.config.camera_height, math.radians(self.config.pitch_deg))

    def render_state(self, state: AgentState) -> dict:
        """The observation at ``state`` without moving the agent."""
        self._need_reset()
        pose = self.pose_of(state)
        rgb, depth = self._renderer.render(pose)  # type: ignore[union-attr]
        return {"rgb": rgb, "depth": depth, "pose": pose}

    def _set_house(self, house: House) -> None:
        if self._house is not None and house is self._house and self._renderer is not None:
            return
        R = int(self.config.resolution)
        if self._renderer is None:
            self._renderer = RGBDRenderer(house, R, R, self.config.fov_y_deg)
        else:
            self._renderer.set_house(house)
        self._house = house
        self._free = house.free_space(self.config.agent_radius, self.config.free_space_resolution)
        self._reachable = self._free.largest_component()

    def _observe(self) -> dict:
        obs = self.render_state(self._state)  # type: ignore[arg-type]
        self._last_obs = obs
        return obs

    def _info(self, collided: bool) -> dict:
        s = self._state
        return {
            "collided": bool(collided),
            "state": s,
            "step": self._steps,
            "room": self._house.room_at(s.x, s.y) if (self._house is not None and s is not None) else None,
        }
