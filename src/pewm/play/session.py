"""One play session: a person walks through an imagined house, with the real house beside it.

A :class:`PlaySession` owns a simulator (:class:`~pewm.sim.EmbodiedEnv`, the ground truth) and a
:class:`~pewm.rollout.WorldModelEnv` (the imagination, Algorithm 1 of arXiv 2505.05495 with one
persistent 3D memory, §3.3). Each :meth:`~PlaySession.step` moves the real agent first (walls
block it), then imagines the frame at the pose the agent reached, so the imagined and the real view
are always of the same pose and can be compared (PSNR). The memory can be switched off (the model
then reads an empty memory: the paper's "w/o memory") and anchoring and the number of DDIM steps
changed between steps.

Everything here is synchronous and not thread-safe: the server (:mod:`pewm.play.server`) runs all
sessions' work on one worker thread, which is also the thread that owns the MuJoCo renderers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pewm.eval.episode_map import CEILING_MARGIN
from pewm.eval.metrics import psnr
from pewm.eval.walks import demo_house_seed
from pewm.geometry import Action
from pewm.memory import VoxelMap, VoxelMapConfig, map_top_down_image
from pewm.model import SamplingConfig, WorldModel
from pewm.model.config import ANCHORS
from pewm.rollout import WorldModelEnv
from pewm.sim import EmbodiedEnv, SimConfig, generate_house
from pewm.video import colorize_depth, fit_into, hstack_panels, label, resize_nearest, write_video

ACTIONS = {"forward": int(Action.FORWARD), "left": int(Action.TURN_LEFT), "right": int(Action.TURN_RIGHT)}
MAX_SAMPLING_STEPS = 50
DEPTH_DISPLAY_MAX = 8.0  # metres at the far end of the depth colour map (same for real and imagined)


@dataclass
class PlayConfig:
    """Settings of a play session. ``house_seed``: the house (default: the demo's unseen house of
    ``seed``, ``pewm.eval.walks.demo_house_seed``; "new house" moves on to the next seed of that
    stream, never a training house); ``sampling_steps`` / ``anchor``: the model's defaults when
    None; ``memory``: start with the memory on; ``max_recorded``: steps kept for the session video
    (older ones are dropped); ``px_per_m``: scale of the top-down map."""

    house_seed: int | None = None
    seed: int = 0
    sampling_steps: int | None = None
    anchor: str | None = None
    memory: bool = True
    max_recorded: int = 1000
    px_per_m: float = 16.0

    def __post_init__(self) -> None:
        if self.house_seed is not None and (not isinstance(self.house_seed, int) or self.house_seed < 0):
            raise ValueError(f"--house-seed must be an integer >= 0, got {self.house_seed!r}")
        check_steps(self.sampling_steps, allow_none=True)
        check_anchor(self.anchor, allow_none=True)
        if self.max_recorded < 1:
            raise ValueError(f"max_recorded must be >= 1, got {self.max_recorded}")


def check_steps(steps, allow_none: bool = False) -> int | None:
    if steps is None and allow_none:
        return None
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_SAMPLING_STEPS:
        raise ValueError(f"sampling steps must be an integer from 1 to {MAX_SAMPLING_STEPS}, got {steps!r}")
    return int(steps)


def check_anchor(anchor, allow_none: bool = False) -> str | None:
    if anchor is None and allow_none:
        return None
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {list(ANCHORS)}, got {anchor!r}")
    return anchor


@dataclass
class Frame:
    """What one step shows: ``imagined_rgb`` / ``real_rgb`` ``(h, w, 3)`` uint8, depths ``(h, w)``
    metres, the camera ``pose`` (4, 4), the PSNR of imagined vs real RGB, whether a wall blocked
    the move, and the seconds the imagination took (0 for the start frame, which is real)."""

    step: int
    imagined_rgb: np.ndarray
    imagined_depth: np.ndarray
    real_rgb: np.ndarray
    real_depth: np.ndarray
    pose: np.ndarray
    psnr: float | None
    collided: bool
    seconds: float
    memory: bool


class PlaySession:
    """A walk through one house: real simulator and imagination side by side (see the module doc)."""

    def __init__(self, model: WorldModel, config: PlayConfig | None = None) -> None:
        self.model = model
        self.config = config or PlayConfig()
        res = model.config.image_height
        if model.config.image_width != res:
            raise ValueError(f"pewm play needs a square model, got {model.config.image_height}x{model.config.image_width}")
        self.sim = EmbodiedEnv(SimConfig(resolution=res))
        self._house_index = 0
        self.house_seed = self.config.house_seed if self.config.house_seed is not None else demo_house_seed(self.config.seed)
        sampling = SamplingConfig(steps=self.config.sampling_steps, anchor=self.config.anchor, seed=self.config.seed)
        self.wm = WorldModelEnv(model, 1, K=self.sim.intrinsics.matrix.astype(np.float32)[None], sampling=sampling,
                                seed=self.config.seed)
        self.wm.use_memory = bool(self.config.memory)
        self._display_map: VoxelMap | None = None
        self.reset()

    # -- settings ------------------------------------------------------------------------------------
    @property
    def memory(self) -> bool:
        return self.wm.use_memory

    @memory.setter
    def memory(self, on: bool) -> None:
        self.wm.use_memory = bool(on)

    @property
    def sampling_steps(self) -> int:
        return self.wm.sampling.resolve(self.model.config.diffusion).steps

    @sampling_steps.setter
    def sampling_steps(self, steps: int) -> None:
        self.wm.sampling = dataclasses.replace(self.wm.sampling, steps=check_steps(steps))

    @property
    def anchor(self) -> str:
        return self.wm.sampling.resolve(self.model.config.diffusion).anchor

    @anchor.setter
    def anchor(self, anchor: str) -> None:
        self.wm.sampling = dataclasses.replace(self.wm.sampling, anchor=check_anchor(anchor))

    @property
    def can_anchor(self) -> bool:
        """Whether anchoring does anything for this model's reader."""
        return bool(self.model.reader.can_anchor)

    # -- walking --------------------------------------------------------------------------------------
    def reset(self, new_house: bool = False) -> Frame:
        """Back to the start of the house (``new_house``: the next unseen house), memory empty."""
        if new_house:
            self._house_index += 1
            self.house_seed = demo_house_seed(self.config.seed + 1_000_003 * self._house_index)
        obs, _ = self.sim.reset(seed=self.config.seed, options={"house": generate_house(self.house_seed)})
        # reseeded: the same house walked the same way with the same settings imagines the same frames
        self.wm.reset(seed=self.config.seed, options={"rgb": obs["rgb"][None], "depth": obs["depth"][None],
                                                      "pose": obs["pose"][None]})
        self.z_max = float(self.sim.house.wall_height) - CEILING_MARGIN
        self.bounds = tuple(float(v) for v in self.sim.house.bounds)
        self._display_map = None if self._memory_surface() is not None else VoxelMap(VoxelMapConfig.surface())
        if self._display_map is not None:
            self._display_map.integrate(obs["rgb"], obs["depth"], self.sim.intrinsics.matrix, obs["pose"])
        self.frames: list[Frame] = []
        self.dropped = 0
        first = Frame(0, obs["rgb"], obs["depth"], obs["rgb"], obs["depth"], obs["pose"], None, False, 0.0, self.memory)
        self._record(first)
        return first

    def step(self, action: str | int) -> Frame:
        """Move the real agent by ``action`` ("forward", "left", "right" or its id) and imagine the
        view at the pose it reached."""
        a = ACTIONS.get(action, action) if isinstance(action, str) else action
        if isinstance(a, str) or isinstance(a, bool) or not isinstance(a, (int, np.integer)) or int(a) not in ACTIONS.values():
            raise ValueError(f"unknown action {action!r}; valid: {sorted(ACTIONS)}")
        obs, _, _, _, info = self.sim.step(int(a))
        wobs, _, _, _, winfo = self.wm.step_poses(obs["pose"][None, None])
        rgb, depth = wobs["rgb"][0, 0], wobs["depth"][0, 0]
        if self._display_map is not None:
            self._display_map.integrate(rgb, depth, self.sim.intrinsics.matrix, obs["pose"])
        f = Frame(len(self.frames), rgb, depth, obs["rgb"], obs["depth"], obs["pose"],
                  float(psnr(rgb[None], obs["rgb"][None])[0]), bool(info["collided"]), float(winfo["seconds"]),
                  self.memory)
        self._record(f)
        return f

    @property
    def step_count(self) -> int:
        return len(self.frames) - 1 + self.dropped

    def _record(self, f: Frame) -> None:
        self.frames.append(f)
        if len(self.frames) > self.config.max_recorded:  # keep the newest; the count stays right
            self.frames.pop(0)
            self.dropped += 1

    # -- the map -------------------------------------------------------------------------------------
    def _memory_surface(self) -> VoxelMap | None:
        pmap = self.wm.memories[0].pmap
        return getattr(pmap, "surface", None) if pmap is not None else None

    @property
    def surface_map(self) -> VoxelMap:
        """The coloured surface map of everything imagined: the model's own memory map when its
        reader keeps one (what it reads), else a display map fused from the same frames."""
        m = self._memory_surface()
        return m if m is not None else self._display_map  # type: ignore[return-value]

    def map_points(self, start: int = 0, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Map points from row ``start`` on: ``(n, 3)`` float32 positions (metres, world frame) and
        ``(n, 3)`` uint8 colours. Rows are appended as the map grows, so ``start`` = the number
        already sent gives the new ones."""
        m = self.surface_map
        n = len(m)
        stop = n if limit is None else min(n, start + int(limit))
        if start >= stop:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        p = m.points()[start:stop].float().cpu().numpy().astype(np.float32)
        c = (m.get("color")[start:stop].float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        return p, c

    def top_down(self) -> np.ndarray:
        """The map from above over the whole house's extent (``px_per_m``), ceiling cut away."""
        m = self.surface_map
        if len(m) == 0:
            return np.full((2, 2, 3), 255, np.uint8)
        return map_top_down_image(m, px_per_m=self.config.px_per_m, z_max=self.z_max, bounds=self.bounds)

    def fov_deg(self) -> float:
        K = self.sim.intrinsics.matrix
        return math.degrees(2 * math.atan(self.sim.intrinsics.width / (2 * float(K[0, 0]))))

    # -- downloads -----------------------------------------------------------------------------------
    def _panel(self, f: Frame, size: int = 192) -> np.ndarray:
        real = label(resize_nearest(f.real_rgb, size), "real")
        imag = label(resize_nearest(f.imagined_rgb, size), f"imagined ({'memory' if f.memory else 'no memory'})")
        return hstack_panels([real, imag])

    def export_video(self, path, fps: int = 5) -> Path:
        """The session so far as a video: real | imagined | the map at the end (mp4 or gif by suffix)."""
        top = label(fit_into(self.top_down(), 192, 192), "map")
        return write_video(path, (hstack_panels([self._panel(f), top]) for f in self.frames), fps=fps)

    def export_ply(self, path) -> Path:
        """The surface map as a coloured point cloud (``.ply``)."""
        return self.surface_map.export_ply(path)

    def depth_image(self, depth: np.ndarray) -> np.ndarray:
        return colorize_depth(depth, max_depth=DEPTH_DISPLAY_MAX)

    def close(self) -> None:
        self.sim.close()


__all__ = ["ACTIONS", "Frame", "MAX_SAMPLING_STEPS", "PlayConfig", "PlaySession", "check_anchor", "check_steps"]
