"""One goal-reaching episode: plan, execute the first chunk in the real simulator, observe, re-plan
(model-predictive control, arXiv 2505.05495 §5.1 Fig. 6a) until the planner stops or the step
budget is spent; then score the final pose (:mod:`pewm.planning.metrics`).

The planner is a callable ``decide(world, step) -> Decision`` (ranking, CEM or the random
baseline, bound to their settings by :mod:`pewm.planning.benchmark`); the world is what it
imagines through (:class:`~pewm.planning.worlds.ModelWorld` with or without memory, the
:class:`~pewm.planning.worlds.SimulatorWorld` oracle, or :class:`Blind` for the baseline that does
not imagine). Execution is always the real simulator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from pewm.geometry import AgentState
from pewm.planning.metrics import episode_metrics
from pewm.planning.planners import Decision, StopRule
from pewm.planning.tasks import GoalTask, TaskConfig, TaskFrames, is_success, pose_error
from pewm.planning.worlds import Frame, SimulatorWorld, execute
from pewm.sim import EmbodiedEnv
from pewm.sim.topdown import top_down_image, world_to_topdown_pixel
from pewm.video import hstack_panels, label, resize_nearest

PANEL = 160  # pixels of each video panel


class Blind:
    """A world that only knows the real observation: for planners that do not imagine."""

    name = "blind"

    def __init__(self, frame: Frame) -> None:
        self.current = frame

    def imagine(self, actions):
        raise RuntimeError("the blind baseline does not imagine")

    def observe(self, rgb, depth, poses) -> None:
        self.current = Frame(np.asarray(rgb)[-1], np.asarray(depth)[-1], np.asarray(poses)[-1])


@dataclass
class EpisodeResult:
    """What one episode did: its metrics, the executed agent states, the decisions' seconds and
    imagined counts, whether the planner stopped itself, and (when recorded) the video frames."""

    task_id: str
    metrics: dict
    states: list[tuple[float, float, float]]
    decision_seconds: list[float]
    imagined: list[int]
    stopped: bool
    steps: int
    video: list[np.ndarray] = field(default_factory=list)

    def to_dict(self) -> dict:
        sec = self.decision_seconds
        return {"task_id": self.task_id, **self.metrics, "stopped": self.stopped, "steps": self.steps,
                "decisions": len(sec), "seconds_per_decision": float(np.mean(sec)) if sec else 0.0,
                "imagined_per_decision": float(np.mean(self.imagined)) if self.imagined else 0.0,
                "states": [list(s) for s in self.states]}


def _topdown(env: EmbodiedEnv, states, candidates_xy, goal_state, px_per_m: float = 24.0,
             window_m: float = 6.0) -> np.ndarray:
    """The house from above, cropped to a ``window_m`` square around the start and the goal (wider
    when the path strays): executed path, where the last decision's candidates end (dots), the
    goal (square)."""
    path = [(s[0], s[1]) for s in states]
    img = Image.fromarray(top_down_image(env.house, path=path, px_per_m=px_per_m,
                                         agent_state=AgentState(*states[-1])))
    draw = ImageDraw.Draw(img)
    if candidates_xy is not None and len(candidates_xy):
        cols, rows = world_to_topdown_pixel(env.house, candidates_xy[:, 0], candidates_xy[:, 1], px_per_m)
        for c, r in zip(cols, rows):
            draw.ellipse([c - 2, r - 2, c + 2, r + 2], fill=(80, 170, 255))
    gc, gr = world_to_topdown_pixel(env.house, goal_state[0], goal_state[1], px_per_m)
    draw.rectangle([float(gc) - 4, float(gr) - 4, float(gc) + 4, float(gr) + 4], outline=(255, 220, 0), width=2)
    # crop: the square around the start, the goal and the path so far (at least window_m wide)
    pc, pr = world_to_topdown_pixel(env.house, np.array([p[0] for p in path] + [goal_state[0]]),
                                    np.array([p[1] for p in path] + [goal_state[1]]), px_per_m)
    half = max(window_m * px_per_m / 2, (pc.max() - pc.min()) / 2 + px_per_m, (pr.max() - pr.min()) / 2 + px_per_m)
    cx, cy = (pc.max() + pc.min()) / 2, (pr.max() + pr.min()) / 2
    box = [int(cx - half), int(cy - half), int(cx + half), int(cy + half)]
    img = img.crop(box)  # outside the image: filled with black
    arr = np.asarray(img)
    s = PANEL / max(arr.shape[:2])
    small = np.asarray(img.resize((max(1, int(arr.shape[1] * s)), max(1, int(arr.shape[0] * s))), Image.BILINEAR))
    canvas = np.full((PANEL, PANEL, 3), 40, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small[..., :3]
    return canvas


def _frame(goal_rgb, real_rgb, imagined_rgb, top, step: int, cost: float | None) -> np.ndarray:
    blank = np.zeros_like(real_rgb)
    panels = [label(resize_nearest(goal_rgb, PANEL), "goal"),
              label(resize_nearest(real_rgb, PANEL), f"real, step {step}"),
              label(resize_nearest(imagined_rgb if imagined_rgb is not None else blank, PANEL),
                    "best imagined" + (f" {cost:.3f}" if cost is not None and np.isfinite(cost) else "")),
              label(top, "path, candidates, goal")]
    return hstack_panels(panels)


def run_episode(task: GoalTask, frames: TaskFrames, env: EmbodiedEnv, world, decide: Callable[[object, int], Decision],
                cost_fn, stop: StopRule = StopRule(), config: TaskConfig = TaskConfig(), execute_k: int = 8,
                record: bool = False) -> EpisodeResult:
    """Run one episode of ``task`` in ``env`` (already reset in the task's house); ``world`` has been
    reset to the task's start (and prefix). Returns its :class:`EpisodeResult`."""
    start = AgentState(*task.start_state)
    env.teleport(start)
    states = [tuple(task.start_state)]
    seconds, imagined, video = [], [], []
    steps, stopped = 0, False
    goal_rgb, goal_depth = frames.goal_rgb, frames.goal_depth
    if record:
        video.append(_frame(goal_rgb, frames.start_rgb, None, _topdown(env, states, None, task.goal_state), 0, None))
    while steps < config.budget:
        arrived, _ = stop.check(world, cost_fn, goal_rgb, goal_depth)
        if arrived:
            stopped = True
            break
        t0 = time.perf_counter()
        d = decide(world, steps)
        seconds.append(time.perf_counter() - t0)
        imagined.append(d.imagined_count)
        acts = np.asarray(d.actions)[: min(execute_k, config.budget - steps)]
        ex = execute(env, acts)
        if isinstance(world, SimulatorWorld):
            world.observe(ex.rgb, ex.depth, ex.poses, state=ex.states[-1])
        else:
            world.observe(ex.rgb, ex.depth, ex.poses)
        for i, s in enumerate(ex.states):
            states.append((s.x, s.y, s.yaw))
            if record:
                cand = None if d.candidate_poses is None else d.candidate_poses[:, -1, :2, 3]
                im = None if d.imagined is None else d.imagined.rgb[0, min(i, d.imagined.rgb.shape[1] - 1)]
                video.append(_frame(goal_rgb, ex.rgb[i], im, _topdown(env, states, cand, task.goal_state),
                                    steps + i + 1, d.best_cost if d.imagined is not None else None))
        steps += len(acts)
    final = states[-1]
    dist, ang = pose_error(final, task.goal_state)
    success = is_success(final, task.goal_state, config)
    ref = env.free_space.shortest_path(tuple(task.start_state[:2]), tuple(task.goal_state[:2]))
    ref_xy = np.asarray(ref if ref else [task.start_state[:2], task.goal_state[:2]], dtype=np.float64)
    metrics = episode_metrics(np.asarray([s[:2] for s in states]), ref_xy, dist, ang, success, task.path_length_m)
    return EpisodeResult(task.task_id, metrics, states, seconds, imagined, stopped, steps, video)


__all__ = ["Blind", "EpisodeResult", "run_episode"]
