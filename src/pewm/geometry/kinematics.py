"""Discrete navigation actions and their effect on the agent and camera pose.

Shared by the simulator (which also checks collisions) and the world model (which turns an action
sequence into the camera poses of the frames it generates). The rule, tested in
``tests/test_conventions.py``: ``action[t]`` moves the agent from the pose of frame ``t`` to the
pose of frame ``t + 1``, so an episode of ``T`` frames has ``T - 1`` actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from pewm.geometry.transforms import camera_pose_from_agent, make_pose


class Action(IntEnum):
    """Action ids, stored as integers in datasets."""

    FORWARD = 0
    TURN_LEFT = 1  # counter-clockwise seen from above (yaw increases)
    TURN_RIGHT = 2

    @classmethod
    def check(cls, actions) -> np.ndarray:
        """Return ``actions`` as an int64 array, or raise naming the first invalid id."""
        a = np.asarray(actions)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise ValueError(f"actions must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64)
        bad = np.flatnonzero((a < 0) | (a >= len(cls)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"invalid action id {int(a.flat[i])} at index {i}; valid ids: "
                + ", ".join(f"{m.value}={m.name}" for m in cls)
            )
        return a


@dataclass(frozen=True)
class ActionConfig:
    """Step sizes of the discrete actions (defaults: 0.25 m forward, 15 degree turns)."""

    forward_m: float = 0.25
    turn_deg: float = 15.0

    def __post_init__(self) -> None:
        if self.forward_m <= 0 or self.turn_deg <= 0:
            raise ValueError(f"ActionConfig: step sizes must be positive, got {self}")


@dataclass(frozen=True)
class AgentState:
    """Planar agent state: position on the floor (metres) and heading ``yaw`` (radians, CCW from +x)."""

    x: float
    y: float
    yaw: float

    def camera_pose(self, height: float, pitch: float = 0.0) -> np.ndarray:
        return camera_pose_from_agent(self.x, self.y, self.yaw, height, pitch)


def wrap_angle(a: float) -> float:
    """Wrap an angle to ``(-pi, pi]``."""
    return math.atan2(math.sin(a), math.cos(a))


def apply_action(state: AgentState, action: int, cfg: ActionConfig = ActionConfig()) -> AgentState:
    """The state after ``action`` with no obstacles (the simulator adds collision checks)."""
    a = Action(int(action))
    if a == Action.FORWARD:
        return AgentState(
            state.x + cfg.forward_m * math.cos(state.yaw), state.y + cfg.forward_m * math.sin(state.yaw), state.yaw
        )
    turn = math.radians(cfg.turn_deg) * (1.0 if a == Action.TURN_LEFT else -1.0)
    return AgentState(state.x, state.y, wrap_angle(state.yaw + turn))


def action_transform(action: int, cfg: ActionConfig = ActionConfig()) -> tuple[float, float]:
    """``(forward distance, yaw change)`` of one action."""
    a = Action(int(action))
    if a == Action.FORWARD:
        return cfg.forward_m, 0.0
    return 0.0, math.radians(cfg.turn_deg) * (1.0 if a == Action.TURN_LEFT else -1.0)


def poses_from_actions(start_pose: np.ndarray, actions, cfg: ActionConfig = ActionConfig()) -> np.ndarray:
    """Camera poses reached by executing ``actions`` from ``start_pose`` (no collisions).

    Returns ``(len(actions) + 1, 4, 4)``: index 0 is ``start_pose``, index ``t + 1`` the pose after
    ``actions[t]``. Forward moves along the camera's heading projected on the ground plane; turns
    rotate about the world z axis through the camera centre, so camera height and pitch are kept.
    """
    T = np.asarray(start_pose, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"start_pose must be 4x4, got shape {T.shape}")
    acts = Action.check(actions).reshape(-1)
    out = np.empty((len(acts) + 1, 4, 4))
    out[0] = T
    R, t = T[:3, :3].copy(), T[:3, 3].copy()
    for i, a in enumerate(acts):
        dist, dyaw = action_transform(int(a), cfg)
        if dist:
            fwd = R[:, 2].copy()
            fwd[2] = 0.0
            n = np.linalg.norm(fwd)
            if n < 1e-9:
                raise ValueError("poses_from_actions: camera looks straight up or down, forward is undefined")
            t = t + dist * fwd / n
        if dyaw:
            c, s = math.cos(dyaw), math.sin(dyaw)
            Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            R = Rz @ R
        out[i + 1] = make_pose(R, t)
    return out


def actions_from_poses(poses, cfg: ActionConfig = ActionConfig(), atol: float = 1e-6) -> np.ndarray | None:
    """The discrete actions that lead along ``poses`` ``(T + 1, 4, 4)`` camera-to-world, when every
    step is one (each pose within ``atol`` of :func:`poses_from_actions` of the action from the
    pose before it, on every matrix entry); else None (a stay, a collision, any real recording).
    A simulator episode whose actions were dropped gets them back; they lead to poses that equal
    the recorded ones up to float64 rounding (about 1e-14), not bit for bit."""
    P = np.asarray(poses, dtype=np.float64)
    if P.ndim != 3 or P.shape[1:] != (4, 4) or len(P) < 1:
        raise ValueError(f"actions_from_poses: poses must be (T + 1, 4, 4), got shape {P.shape}")
    out = np.empty(len(P) - 1, dtype=np.int64)
    for t in range(len(P) - 1):
        for a in Action:
            try:
                nxt = poses_from_actions(P[t], [int(a)], cfg)[1]
            except ValueError:  # forward undefined (the camera looks straight up or down)
                continue
            if np.abs(nxt - P[t + 1]).max() <= atol:
                out[t] = int(a)
                break
        else:
            return None
    return out
