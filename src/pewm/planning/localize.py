"""Where was the goal image taken? Registering the goal RGB-D against the persistent map.

The paper ranks candidates by comparing each imagined frame with the goal image (arXiv 2505.05495
§4.2). Measured on pewm's houses (``benchmarks/goal_cost_quality.py``), image costs recognise the
goal view once a candidate reaches it but barely order views a metre or more away (Spearman ρ ≈ 0.3
with pose error), so a goal 1-4 m away and behind the agent gives the planner no direction. The
persistent map (§3.3) holds the surfaces the goal image shows whenever the goal was seen before,
so the goal can be *found in memory*: back-project the goal's depth into a point cloud, and search
the agent poses ``(x, y, yaw)`` (the camera's height and pitch are the agent's own) for the one
that lays the cloud on the map's surfaces with the map's colours.

Score of a pose (higher is better, in ``[0, 1]``): the mean over goal points of
``exp(-d^2 / 2 sigma^2) exp(-|c - c_map|^2 / 2 sigma_c^2)``, with ``d`` the distance from the
transformed point to the nearest map surface and ``c_map`` that surface's colour (a Euclidean
distance transform of a 3-D occupancy grid gives both for every cell at once). Search: coarse
(``coarse_step_m`` x ``coarse_step_deg``, ``coarse_points`` goal points, the looser distance
tolerance ``coarse_sigma_m``: a coarse pose off by half a step and 5° moves a point 8 m away by
0.7 m) over map cells at least
``clearance_m`` from any surface at camera height, then fine (``fine_step_m`` x ``fine_step_deg``,
``fine_points`` points) around the ``refine_top`` best coarse poses.

Without a map (the ``none`` memory) there is nothing to register against: :func:`localize_goal`
returns None. Pure numpy/scipy; no model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pewm.geometry import heading_of_pose
from pewm.geometry.projection import camera_rays


def _positive(owner: str, name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
        raise ValueError(f"{owner}.{name} must be a number > 0, got {v!r}")


@dataclass(frozen=True)
class LocalizeConfig:
    """Settings of the goal registration (module docstring). Lengths in metres, angles in degrees."""

    grid_m: float = 0.1
    sigma_m: float = 0.1
    sigma_color: float = 0.15
    max_depth_m: float = 8.0
    clearance_m: float = 0.2
    coarse_step_m: float = 0.2
    coarse_step_deg: float = 10.0
    coarse_points: int = 64
    coarse_sigma_m: float = 0.3
    refine_top: int = 16
    fine_step_m: float = 0.05
    fine_step_deg: float = 2.5
    fine_points: int = 256

    def __post_init__(self) -> None:
        for name in ("grid_m", "sigma_m", "sigma_color", "max_depth_m", "clearance_m", "coarse_step_m",
                     "coarse_step_deg", "coarse_sigma_m", "fine_step_m", "fine_step_deg"):
            _positive("LocalizeConfig", name, getattr(self, name))
        for name in ("coarse_points", "refine_top", "fine_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LocalizeConfig.{name} must be a positive integer, got {v!r}")


@dataclass(frozen=True)
class GoalEstimate:
    """The registered goal: agent position ``(x, y)``, heading ``yaw`` (radians), ``score`` in [0, 1]
    (the fraction of goal points that land on a map surface of their colour), ``pose`` the camera
    pose ``(4, 4)`` with the reference camera's height and pitch."""

    x: float
    y: float
    yaw: float
    score: float
    pose: np.ndarray

    @property
    def state(self) -> tuple[float, float, float]:
        return (self.x, self.y, self.yaw)


def _colour_map(pmap):
    """The :class:`~pewm.memory.VoxelMap` :func:`map_surface` reads (None without one)."""
    if pmap is None:
        return None
    maps = pmap.maps
    names = (["surface"] if "surface" in maps else []) + [n for n in maps if n != "surface"]
    for name in names:
        if "color" in maps[name].attributes and len(maps[name]):
            return maps[name]
    return None


def map_size(pmap) -> int:
    """How many points :func:`map_surface` would return (cheap: nothing is copied)."""
    vm = _colour_map(pmap)
    return 0 if vm is None else len(vm)


def map_surface(pmap) -> tuple[np.ndarray, np.ndarray] | None:
    """``(points (V, 3), colours (V, 3) in [0, 1])`` of a :class:`~pewm.memory.PersistentMap`: its
    ``surface`` map when it has one, else its first map with colours; None when there is no map or
    it is empty."""
    vm = _colour_map(pmap)
    if vm is None:
        return None
    return (vm.points().detach().cpu().numpy().astype(np.float64),
            vm.get("color").detach().cpu().numpy().astype(np.float64))


class SurfaceGrid:
    """A 3-D occupancy grid of map points with, for every cell, the distance to the nearest occupied
    cell (metres) and that cell's mean colour."""

    def __init__(self, points: np.ndarray, colors: np.ndarray, cell: float = 0.1, pad: float = 0.5) -> None:
        from scipy import ndimage

        pts = np.asarray(points, dtype=np.float64)
        col = np.asarray(colors, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or not len(pts):
            raise ValueError(f"SurfaceGrid needs points (V, 3) with V > 0, got shape {pts.shape}")
        if col.shape != pts.shape:
            raise ValueError(f"SurfaceGrid: colours have shape {col.shape}, expected {pts.shape}")
        self.cell = float(cell)
        self.lo = pts.min(0) - pad
        self.shape = np.ceil((pts.max(0) + pad - self.lo) / self.cell).astype(np.int64) + 1
        idx = tuple(np.floor((pts - self.lo) / self.cell).astype(np.int64).T)
        occupied = np.zeros(self.shape, bool)
        occupied[idx] = True
        total = np.zeros((*self.shape, 3))
        np.add.at(total, idx, col)
        count = np.zeros(self.shape)
        np.add.at(count, idx, 1.0)
        color = total / np.maximum(count, 1.0)[..., None]
        dist, nearest = ndimage.distance_transform_edt(~occupied, return_indices=True)
        self.distance = (dist * self.cell).astype(np.float32)
        self.color = color[tuple(nearest)].astype(np.float32)

    def lookup(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(distance (...,), colour (..., 3))`` at world ``points`` ``(..., 3)``; outside the grid
        the distance is ``inf``."""
        idx = np.floor((points - self.lo) / self.cell).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < self.shape), axis=-1)
        idx = tuple(np.moveaxis(np.clip(idx, 0, self.shape - 1), -1, 0))
        return np.where(inside, self.distance[idx], np.inf), self.color[idx]


def goal_cloud(goal_rgb, goal_depth, K, reference_pose, max_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """The goal's valid pixels as points in the reference camera's *agent frame* (its position at
    the origin, its heading along +x: only height and pitch kept) and their colours in [0, 1]."""
    depth = np.asarray(goal_depth, dtype=np.float64)
    rgb = np.asarray(goal_rgb)
    h, w = depth.shape
    rays = camera_rays(np.asarray(K, dtype=np.float64), h, w).numpy().astype(np.float64)  # (h, w, 3)
    ok = np.isfinite(depth) & (depth > 0) & (depth <= max_depth)
    cam = rays[ok] * depth[ok][:, None]
    T = np.asarray(reference_pose, dtype=np.float64)
    yaw = float(heading_of_pose(T))
    c, s = math.cos(-yaw), math.sin(-yaw)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    R = Rz @ T[:3, :3]  # the camera's rotation with its heading removed
    pts = cam @ R.T + np.array([0.0, 0.0, T[2, 3]])
    return pts, rgb[ok].astype(np.float64) / 255.0


def _subsample(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``range(n_total)`` (all when fewer)."""
    if n_total <= n:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(np.int64))


def score_poses(grid: SurfaceGrid, pts: np.ndarray, col: np.ndarray, xy: np.ndarray, yaws: np.ndarray,
                config: LocalizeConfig, chunk: int = 128, sigma_m: float | None = None) -> np.ndarray:
    """``(P, Y)`` registration scores of agent positions ``xy`` ``(P, 2)`` x headings ``yaws`` ``(Y,)``
    (distance tolerance ``sigma_m``, default ``config.sigma_m``)."""
    sigma = config.sigma_m if sigma_m is None else sigma_m
    c, s = np.cos(yaws), np.sin(yaws)
    rx = c[:, None] * pts[None, :, 0] - s[:, None] * pts[None, :, 1]  # (Y, n)
    ry = s[:, None] * pts[None, :, 0] + c[:, None] * pts[None, :, 1]
    out = np.empty((len(xy), len(yaws)))
    for i in range(0, len(xy), chunk):
        p = xy[i:i + chunk]
        world = np.empty((len(p), len(yaws), len(pts), 3))
        world[..., 0] = rx[None] + p[:, None, None, 0]
        world[..., 1] = ry[None] + p[:, None, None, 1]
        world[..., 2] = pts[:, 2]
        d, cm = grid.lookup(world)
        w = np.exp(-np.square(d) / (2 * sigma ** 2))
        w *= np.exp(-np.square(cm - col).sum(-1) / (2 * config.sigma_color ** 2))
        out[i:i + chunk] = w.mean(-1)
    return out


def localize_goal(points, colors, goal_rgb, goal_depth, K, reference_pose,
                  config: LocalizeConfig = LocalizeConfig(), grid: SurfaceGrid | None = None) -> GoalEstimate | None:
    """Register the goal RGB-D against map ``points``/``colors`` (see the module docstring).
    ``reference_pose``: a camera pose of the agent (its height and pitch are the goal camera's).
    Returns None when the goal has no valid depth or there is no map point."""
    if points is None or not len(points):
        return None
    grid = grid or SurfaceGrid(points, colors, config.grid_m)
    pts, col = goal_cloud(goal_rgb, goal_depth, K, reference_pose, config.max_depth_m)
    if not len(pts):
        return None
    ref = np.asarray(reference_pose, dtype=np.float64)
    z = float(ref[2, 3])
    pmin, pmax = np.asarray(points)[:, :2].min(0), np.asarray(points)[:, :2].max(0)
    gx, gy = np.meshgrid(np.arange(pmin[0], pmax[0], config.coarse_step_m),
                         np.arange(pmin[1], pmax[1], config.coarse_step_m))
    xy = np.stack([gx.ravel(), gy.ravel()], -1)
    clear, _ = grid.lookup(np.concatenate([xy, np.full((len(xy), 1), z)], 1))
    xy = xy[clear >= config.clearance_m]
    if not len(xy):
        return None
    yaws = np.radians(np.arange(0.0, 360.0, config.coarse_step_deg))
    sel = _subsample(len(pts), config.coarse_points)
    coarse = score_poses(grid, pts[sel], col[sel], xy, yaws, config, sigma_m=config.coarse_sigma_m)
    top = np.argsort(coarse.ravel())[::-1][: config.refine_top]
    sel = _subsample(len(pts), config.fine_points)
    best = (-1.0, 0.0, 0.0, 0.0)
    half_m, half_deg = config.coarse_step_m / 2, config.coarse_step_deg / 2
    offs = np.arange(-half_m, half_m + 1e-9, config.fine_step_m)
    doffs = np.radians(np.arange(-half_deg, half_deg + 1e-9, config.fine_step_deg))
    for flat in top:
        pi, yi = np.unravel_index(flat, coarse.shape)
        ox, oy = np.meshgrid(offs, offs)
        cand = xy[pi] + np.stack([ox.ravel(), oy.ravel()], -1)
        cyaw = yaws[yi] + doffs
        fine = score_poses(grid, pts[sel], col[sel], cand, cyaw, config)
        k = np.unravel_index(int(np.argmax(fine)), fine.shape)
        if fine[k] > best[0]:
            best = (float(fine[k]), float(cand[k[0], 0]), float(cand[k[0], 1]), float(cyaw[k[1]]))
    score, x, y, yaw = best
    yaw = math.atan2(math.sin(yaw), math.cos(yaw))
    ref_yaw = float(heading_of_pose(ref))
    c, s = math.cos(yaw - ref_yaw), math.sin(yaw - ref_yaw)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    pose = np.eye(4)
    pose[:3, :3] = Rz @ ref[:3, :3]
    pose[:3, 3] = (x, y, z)
    return GoalEstimate(x, y, yaw, score, pose)


__all__ = ["GoalEstimate", "LocalizeConfig", "SurfaceGrid", "goal_cloud", "localize_goal", "map_size", "map_surface",
           "score_poses"]
