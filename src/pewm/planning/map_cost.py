"""The ``map`` goal cost: find the goal in the persistent map, then score candidates by the
free-space distance still to go (plus, optionally, how the imagined last frame matches the goal).

Image costs alone give the planners no direction toward a goal out of view (``docs/results.md``,
planning). A persistent memory can: the goal view was seen during exploration, so its surfaces
are in the map. Per episode, :class:`MapGoalCost`

1. registers the goal RGB-D against the map (:func:`~pewm.planning.localize.localize_goal`, on
   first use; until the goal is found, again whenever the map has grown);
2. builds the cost-to-go field of the map's free space (:class:`~pewm.planning.navigation.NavField`;
   rebuilt whenever the map has grown, i.e. after real frames were fused);
3. scores each candidate (:meth:`trajectory_costs`): the cost-to-go at its last imagined pose,
   plus ``blocked_penalty_m`` if any imagined pose lies in a mapped obstacle (the world model's
   poses follow the actions and do not know the walls), plus ``image_weight`` x (near the goal)
   x the image cost of its last imagined frame.

Without a map (the ``none`` memory: the same weights with nothing remembered), or when the
registration scores below ``min_score``, the candidates are scored by the image cost alone
(the paper's §4.2 rule) -- so the gain of memory is measured, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pewm.geometry import heading_of_pose
from pewm.planning.localize import GoalEstimate, LocalizeConfig, localize_goal, map_size, map_surface
from pewm.planning.navigation import NavConfig, NavField


@dataclass(frozen=True)
class MapCostConfig:
    """Settings of :class:`MapGoalCost` (module docstring). ``min_score`` 0.6: goals registered in
    the map of their exploration prefix scored 0.85-0.96 on 16 validation tasks, a view of a room
    the map never saw 0.37-0.38 (``tests/test_planning_map_cost.py``)."""

    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    nav: NavConfig = field(default_factory=NavConfig)
    min_score: float = 0.6
    blocked_penalty_m: float = 5.0
    image_weight: float = 0.0

    def __post_init__(self) -> None:
        v = self.min_score
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ValueError(f"MapCostConfig.min_score must be in [0, 1], got {self.min_score!r}")
        for name in ("blocked_penalty_m", "image_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"MapCostConfig.{name} must be a number >= 0, got {v!r}")


class MapGoalCost:
    """One episode's ``map`` cost. ``image_cost``: the goal cost of :mod:`pewm.planning.costs` used
    for the image term and as the fallback; ``memory_map``: a callable returning the world's current
    :class:`~pewm.memory.PersistentMap` (or None: no memory); ``goal_rgb``/``goal_depth``/``K``: the
    goal image and its intrinsics; ``reference_pose``: a camera pose of the agent (height, pitch).

    Called like any goal cost (``cost(rgb, depth, goal_rgb, goal_depth)``) it is the image cost
    (the stop rule compares real views); planners call :meth:`trajectory_costs`.
    """

    name = "map"

    def __init__(self, image_cost, memory_map: Callable[[], object], goal_rgb, goal_depth, K, reference_pose,
                 config: MapCostConfig = MapCostConfig()) -> None:
        self.image_cost = image_cost
        self.memory_map = memory_map
        self.goal_rgb, self.goal_depth = np.asarray(goal_rgb), np.asarray(goal_depth, dtype=np.float32)
        self.K = np.asarray(K, dtype=np.float64)
        self.reference_pose = np.asarray(reference_pose, dtype=np.float64)
        self.config = config
        self.estimate: GoalEstimate | None = None
        self._field: NavField | None = None
        self._seen_size = -1  # map size at the last field() call
        self.fallbacks = 0  # decisions scored by the image cost alone

    def __call__(self, rgb, depth, goal_rgb, goal_depth) -> np.ndarray:
        return self.image_cost(rgb, depth, goal_rgb, goal_depth)

    @property
    def floor_z(self) -> float:
        return float(self.reference_pose[2, 3]) - self.config.nav.camera_height_m

    def field(self) -> NavField | None:
        """The current cost-to-go field (None without a map or a registered goal). The map is read
        (copied) only when it has changed size since the last call."""
        pmap = self.memory_map()
        size = map_size(pmap)
        if size == self._seen_size:
            return self._field
        self._seen_size = size
        surface = map_surface(pmap)
        if surface is None:
            return None
        points, colors = surface
        if self.estimate is None:  # first try, or more map since the last failed one
            est = localize_goal(points, colors, self.goal_rgb, self.goal_depth, self.K, self.reference_pose,
                                self.config.localize)
            self.estimate = est if est is not None and est.score >= self.config.min_score else None
        if self.estimate is not None:
            self._field = NavField(points, self.estimate.state, self.floor_z, self.config.nav)
        return self._field

    def pose_cost(self, pose) -> float:
        """Metres still to go from camera ``pose`` ``(4, 4)`` (the stop rule); NaN without a field."""
        nav = self.field()
        if nav is None:
            return float("nan")
        P = np.asarray(pose, dtype=np.float64)
        return float(nav.cost_to_go(P[:2, 3], heading_of_pose(P)))

    def trajectory_costs(self, imagined) -> np.ndarray:
        """``(N,)`` costs of the candidates of ``imagined`` (:class:`~pewm.planning.worlds.Imagined`)."""
        image = None
        nav = self.field()
        if self.config.image_weight > 0 or nav is None:
            image = np.asarray(self.image_cost(imagined.last_rgb, imagined.last_depth, self.goal_rgb,
                                               self.goal_depth), dtype=np.float64)
        if nav is None:
            self.fallbacks += 1
            return image
        poses = np.asarray(imagined.poses, dtype=np.float64)
        xy, yaw = poses[..., :2, 3], heading_of_pose(poses)
        cost = nav.cost_to_go(xy[:, -1], yaw[:, -1])
        cost = cost + self.config.blocked_penalty_m * (~nav.is_free(xy)).any(axis=1)
        if image is not None:
            near = np.clip(1.0 - nav.path_length(xy[:, -1]) / self.config.nav.near_m, 0.0, 1.0)
            cost = cost + self.config.image_weight * near * image
        return cost


__all__ = ["MapCostConfig", "MapGoalCost"]
