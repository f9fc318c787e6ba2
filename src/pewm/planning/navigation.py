"""How far is the goal through the mapped free space? A cost-to-go field from the persistent map.

Map surfaces between the floor and a little above the camera are obstacles (walls, furniture; a
door's lintel is above the band); they are dilated by the agent's radius on a 2-D grid, and a
Dijkstra search over the 8-connected remaining cells gives the free-space path length to the goal
from every cell (:class:`NavField`). Unobserved cells count as free (optimistic: the agent plans
through what it has not seen). A cell with no path (inside a dilated obstacle, or cut off) gets the
value of its nearest reachable cell plus the distance to it plus ``unreachable_penalty_m``, so the
field stays finite and leads out of obstacles.

:meth:`NavField.cost_to_go` turns agent poses into metres still to go (the planners' cost):
away from the goal (path length ``D`` > ``near_m``) ``D`` plus the turns still needed, in metres at
``turn_m_per_rad`` (one 15° turn = one 0.25 m step by default): turning to face down the field's
gradient now, and turning from the arrival direction into the goal's heading at the end; near the
goal ``D`` plus the turn into the goal's heading; linearly blended in between. Because the
far-away cost already includes the final turn, walking into the goal's neighbourhood never raises
the cost (a heading term alone would be a barrier for an agent that must arrive facing away from
the goal's heading).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NavConfig:
    """Settings of :class:`NavField` (metres; heights above the floor, the floor being
    ``camera_height_m`` below the camera)."""

    cell_m: float = 0.1
    camera_height_m: float = 1.25
    obstacle_min_m: float = 0.15
    obstacle_max_m: float = 1.8
    agent_radius_m: float = 0.15
    pad_m: float = 1.0
    unreachable_penalty_m: float = 0.5
    near_m: float = 0.5
    turn_m_per_rad: float = 0.25 / math.radians(15.0)

    def __post_init__(self) -> None:
        for name in ("cell_m", "camera_height_m", "pad_m", "near_m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"NavConfig.{name} must be a number > 0, got {v!r}")
        for name in ("agent_radius_m", "unreachable_penalty_m", "turn_m_per_rad", "obstacle_min_m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"NavConfig.{name} must be a number >= 0, got {v!r}")
        v = self.obstacle_max_m
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"NavConfig.obstacle_max_m must be a finite number, got {v!r}")
        if not self.obstacle_max_m > self.obstacle_min_m:
            raise ValueError(f"NavConfig: obstacle_max_m ({self.obstacle_max_m}) must exceed obstacle_min_m "
                             f"({self.obstacle_min_m})")


def wrap(a):
    """Absolute angle difference wrapped to ``[0, pi]``."""
    return np.abs((np.asarray(a) + np.pi) % (2 * np.pi) - np.pi)


def obstacle_grid(points: np.ndarray, floor_z: float, config: NavConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(blocked (rows, cols) bool, origin (x0, y0))``: cells (row along y) holding a map point in
    the obstacle band, dilated by the agent radius."""
    from scipy import ndimage

    pts = np.asarray(points, dtype=np.float64)
    lo = pts[:, :2].min(0) - config.pad_m
    hi = pts[:, :2].max(0) + config.pad_m
    cols, rows = (np.ceil((hi - lo) / config.cell_m).astype(np.int64) + 1)
    z = pts[:, 2] - floor_z
    obs = pts[(z >= config.obstacle_min_m) & (z <= config.obstacle_max_m)]
    occupied = np.zeros((rows, cols), bool)
    if len(obs):
        ij = np.floor((obs[:, :2] - lo) / config.cell_m).astype(np.int64)
        occupied[ij[:, 1], ij[:, 0]] = True
    r = int(math.ceil(config.agent_radius_m / config.cell_m - 1e-9))
    if r > 0:
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        occupied = ndimage.binary_dilation(occupied, structure=(xx ** 2 + yy ** 2) <= r * r)
    return occupied, lo


def path_lengths(free: np.ndarray, goal_ij: tuple[int, int], cell_m: float) -> np.ndarray:
    """Dijkstra path length (metres) from ``goal_ij`` to every cell over 8-connected ``free`` cells
    (diagonal moves cost sqrt 2 cells); ``inf`` where there is no path."""
    from scipy import sparse
    from scipy.sparse import csgraph

    R, C = free.shape
    idx = np.arange(R * C).reshape(R, C)
    src, dst, wts = [], [], []
    for di, dj, w in ((0, 1, 1.0), (1, 0, 1.0), (1, 1, math.sqrt(2.0)), (1, -1, math.sqrt(2.0))):
        a = (slice(0, R - di), slice(max(0, -dj), C - max(0, dj)))
        b = (slice(di, R), slice(max(0, dj), C - max(0, -dj) if dj < 0 else C))
        ok = free[a] & free[b]
        ia, ib = idx[a][ok], idx[b][ok]
        src += [ia, ib]
        dst += [ib, ia]
        wts += [np.full(ia.size, w * cell_m)] * 2
    graph = sparse.csr_matrix((np.concatenate(wts), (np.concatenate(src), np.concatenate(dst))), shape=(R * C, R * C))
    return csgraph.dijkstra(graph, indices=int(idx[goal_ij])).reshape(R, C)


def downhill_directions(D: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Per cell, the direction (radians, world frame) of steepest descent of the path length ``D``:
    central differences in which, for a free cell, a blocked neighbour counts as the cell itself (a
    gradient across a wall's filled-in values would point along a doorway instead of through it)."""
    Dp = np.pad(D, 1, mode="edge")
    Fp = np.pad(free, 1, constant_values=False)
    R, C = D.shape

    def neighbour(di: int, dj: int) -> np.ndarray:
        n = Dp[1 + di:1 + di + R, 1 + dj:1 + dj + C]
        return np.where(free & ~Fp[1 + di:1 + di + R, 1 + dj:1 + dj + C], D, n)

    gy = (neighbour(1, 0) - neighbour(-1, 0)) / 2.0
    gx = (neighbour(0, 1) - neighbour(0, -1)) / 2.0
    return np.arctan2(-gy, -gx)


class NavField:
    """The cost-to-go toward ``goal`` (``(x, y, yaw)``) over the free space of map ``points`` (module
    docstring). ``floor_z``: the floor's height (the camera's height minus ``camera_height_m``)."""

    def __init__(self, points: np.ndarray, goal: tuple[float, float, float], floor_z: float,
                 config: NavConfig = NavConfig()) -> None:
        from scipy import ndimage

        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or not len(pts):
            raise ValueError(f"NavField needs map points (V, 3) with V > 0, got shape {pts.shape}")
        self.config, self.goal = config, tuple(float(v) for v in goal)
        pts = np.concatenate([pts, [[self.goal[0], self.goal[1], floor_z]]])  # the goal is inside the grid
        blocked, self.origin = obstacle_grid(pts, floor_z, config)
        self.free = ~blocked
        gi, gj = self.cell(np.array(self.goal[:2]))
        if not self.free[gi, gj]:  # a goal inside a dilated obstacle: start from the nearest free cell
            fi, fj = np.nonzero(self.free)
            if not len(fi):
                raise ValueError("NavField: the map leaves no free cell")
            k = int(np.argmin((fi - gi) ** 2 + (fj - gj) ** 2))
            gi, gj = int(fi[k]), int(fj[k])
        D = path_lengths(self.free, (int(gi), int(gj)), config.cell_m)
        reach = np.isfinite(D)
        dist, nearest = ndimage.distance_transform_edt(~reach, return_indices=True)
        self.D = np.where(reach, D, D[tuple(nearest)] + dist * config.cell_m + config.unreachable_penalty_m)
        self.downhill = downhill_directions(self.D, self.free)

    def cell(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, col)`` of world points ``(..., 2)``, clipped to the grid."""
        ij = np.floor((np.asarray(xy) - self.origin) / self.config.cell_m).astype(np.int64)
        R, C = self.free.shape
        return np.clip(ij[..., 1], 0, R - 1), np.clip(ij[..., 0], 0, C - 1)

    def path_length(self, xy: np.ndarray) -> np.ndarray:
        """Free-space path length (metres) from world points ``(..., 2)`` to the goal."""
        return self.D[self.cell(xy)]

    def is_free(self, xy: np.ndarray) -> np.ndarray:
        """Whether the agent's centre may be at ``(..., 2)`` according to the map."""
        return self.free[self.cell(xy)]

    def cost_to_go(self, xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """Metres still to go from agent positions ``xy`` ``(..., 2)`` with headings ``yaw`` ``(...)``
        (path length plus the turns still needed; module docstring)."""
        cfg = self.config
        xy, yaw = np.asarray(xy, dtype=np.float64), np.asarray(yaw, dtype=np.float64)
        D = self.path_length(xy)
        gx, gy, gyaw = self.goal
        arrival = np.arctan2(gy - xy[..., 1], gx - xy[..., 0])
        far = D + cfg.turn_m_per_rad * (wrap(yaw - self.downhill[self.cell(xy)]) + wrap(arrival - gyaw))
        close = D + cfg.turn_m_per_rad * wrap(yaw - gyaw)
        near = np.clip(1.0 - D / cfg.near_m, 0.0, 1.0)
        return (1.0 - near) * far + near * close


__all__ = ["NavConfig", "NavField", "downhill_directions", "obstacle_grid", "path_lengths", "wrap"]
