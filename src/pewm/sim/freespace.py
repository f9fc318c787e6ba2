"""The free-space grid: where the agent's centre may be, and shortest paths through it.

A boolean occupancy raster of the floor plan (``True`` = the agent's centre can be there, obstacles
already dilated by the agent radius). Cell ``(i, j)`` (row ``i`` along world y, column ``j`` along
world x) covers ``[x0 + j*res, x0 + (j+1)*res) x [y0 + i*res, y0 + (i+1)*res)``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class FreeSpaceGrid:
    free: np.ndarray  # (rows, cols) bool
    origin: tuple[float, float]  # world (x0, y0) of the corner of cell (0, 0)
    resolution: float  # metres per cell

    def __post_init__(self) -> None:
        self.free = np.asarray(self.free, dtype=bool)
        if self.free.ndim != 2:
            raise ValueError(f"FreeSpaceGrid.free must be 2-D, got shape {self.free.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.free.shape  # type: ignore[return-value]

    def world_to_cell(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """``(row, col)`` integer indices of the cells holding world points (may be out of range)."""
        j = np.floor((np.asarray(x) - self.origin[0]) / self.resolution).astype(np.int64)
        i = np.floor((np.asarray(y) - self.origin[1]) / self.resolution).astype(np.int64)
        return i, j

    def cell_to_world(self, i, j) -> tuple[np.ndarray, np.ndarray]:
        """World ``(x, y)`` of cell centres."""
        x = self.origin[0] + (np.asarray(j) + 0.5) * self.resolution
        y = self.origin[1] + (np.asarray(i) + 0.5) * self.resolution
        return x, y

    def is_free(self, x, y) -> np.ndarray | bool:
        """Whether the agent's centre may be at world ``(x, y)`` (outside the grid is not free)."""
        i, j = self.world_to_cell(x, y)
        inside = (i >= 0) & (i < self.free.shape[0]) & (j >= 0) & (j < self.free.shape[1])
        out = np.zeros(np.shape(i), dtype=bool)
        ii, jj = np.broadcast_to(i, out.shape), np.broadcast_to(j, out.shape)
        out[inside] = self.free[ii[inside], jj[inside]]
        return bool(out) if out.ndim == 0 else out

    def segment_is_free(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the straight move from ``(x0, y0)`` to ``(x1, y1)`` stays in free space."""
        n = max(2, int(math.ceil(math.hypot(x1 - x0, y1 - y0) / (0.5 * self.resolution))) + 1)
        s = np.linspace(0.0, 1.0, n)
        return bool(np.all(self.is_free(x0 + s * (x1 - x0), y0 + s * (y1 - y0))))

    def nearest_free(self, x: float, y: float) -> tuple[float, float]:
        """Centre of the free cell nearest to world ``(x, y)`` (the point itself if already free)."""
        if self.is_free(x, y):
            return float(x), float(y)
        if not hasattr(self, "_nearest"):
            from scipy import ndimage

            if not self.free.any():
                raise ValueError("FreeSpaceGrid.nearest_free: no free cell")
            self._nearest = ndimage.distance_transform_edt(~self.free, return_distances=False, return_indices=True)
        i, j = self.world_to_cell(x, y)
        i = int(np.clip(i, 0, self.free.shape[0] - 1))
        j = int(np.clip(j, 0, self.free.shape[1] - 1))
        ni, nj = self._nearest[0][i, j], self._nearest[1][i, j]
        cx, cy = self.cell_to_world(ni, nj)
        return float(cx), float(cy)

    def downsampled(self, factor: int) -> "FreeSpaceGrid":
        """A coarser grid (``factor`` x the cell size) whose cell is free only if all its sub-cells are."""
        if factor <= 1:
            return self
        r, c = (n // factor * factor for n in self.free.shape)
        blocks = self.free[:r, :c].reshape(r // factor, factor, c // factor, factor)
        return FreeSpaceGrid(blocks.all(axis=(1, 3)), self.origin, self.resolution * factor)

    def largest_component(self) -> np.ndarray:
        """Mask of the largest 4-connected free region (where start/goal pairs are always connected)."""
        from scipy import ndimage

        labels, n = ndimage.label(self.free)
        if n == 0:
            return np.zeros_like(self.free)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        return labels == int(np.argmax(sizes))

    def sample_free(self, rng: np.random.Generator, mask: np.ndarray | None = None) -> tuple[float, float]:
        """A uniformly random free cell centre (from ``mask`` if given)."""
        m = self.free if mask is None else (self.free & mask)
        idx = np.flatnonzero(m)
        if idx.size == 0:
            raise ValueError("FreeSpaceGrid.sample_free: no free cell")
        k = int(idx[rng.integers(idx.size)])
        i, j = divmod(k, self.free.shape[1])
        x, y = self.cell_to_world(i, j)
        return float(x), float(y)

    def shortest_path(self, start: tuple[float, float], goal: tuple[float, float]) -> list[tuple[float, float]] | None:
        """A* over 8-connected free cells; world waypoints from start to goal, or ``None`` if unreachable.

        Diagonal moves may not cut corners. The path is then shortened by line-of-sight smoothing.
        """
        si, sj = (int(v) for v in self.world_to_cell(*start))
        gi, gj = (int(v) for v in self.world_to_cell(*goal))
        rows, cols = self.free.shape
        for (a, b), name in (((si, sj), "start"), ((gi, gj), "goal")):
            if not (0 <= a < rows and 0 <= b < cols and self.free[a, b]):
                raise ValueError(f"shortest_path: {name} {start if name == 'start' else goal} is not in free space")
        free = self.free
        g = {(si, sj): 0.0}
        parent: dict[tuple[int, int], tuple[int, int]] = {}
        h = lambda i, j: math.hypot(i - gi, j - gj)  # noqa: E731
        heap = [(h(si, sj), 0.0, si, sj)]
        steps = [(-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0)] + [
            (di, dj, math.sqrt(2.0)) for di in (-1, 1) for dj in (-1, 1)
        ]
        closed = np.zeros_like(free)
        while heap:
            _, gc, i, j = heapq.heappop(heap)
            if closed[i, j]:
                continue
            closed[i, j] = True
            if (i, j) == (gi, gj):
                break
            for di, dj, c in steps:
                ni, nj = i + di, j + dj
                if not (0 <= ni < rows and 0 <= nj < cols) or not free[ni, nj] or closed[ni, nj]:
                    continue
                if di and dj and not (free[i + di, j] and free[i, j + dj]):
                    continue
                ng = gc + c
                if ng < g.get((ni, nj), math.inf):
                    g[(ni, nj)] = ng
                    parent[(ni, nj)] = (i, j)
                    heapq.heappush(heap, (ng + h(ni, nj), ng, ni, nj))
        if not closed[gi, gj]:
            return None
        cells = [(gi, gj)]
        while cells[-1] != (si, sj):
            cells.append(parent[cells[-1]])
        cells.reverse()
        pts = [tuple(float(v) for v in self.cell_to_world(i, j)) for i, j in cells]
        pts[0], pts[-1] = (float(start[0]), float(start[1])), (float(goal[0]), float(goal[1]))
        return self._smooth(pts)

    def _smooth(self, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        """Greedy line-of-sight shortcutting: from each kept point, go as far as the view is free."""
        out = [pts[0]]
        k = 0
        while k < len(pts) - 1:
            m = k + 1
            while m + 1 < len(pts) and self.segment_is_free(*pts[k], *pts[m + 1]):
                m += 1
            out.append(pts[m])
            k = m
        return out


# ----------------------------------------------------------------------------------------------
# From a floor plan
# ----------------------------------------------------------------------------------------------


def _cell_range(lo: float, hi: float, origin: float, res: float, n: int, overlap: bool) -> slice:
    """Cells along one axis either overlapping ``[lo, hi]`` or with their centre inside it."""
    if overlap:
        a, b = math.floor((lo - origin) / res + 1e-9), math.ceil((hi - origin) / res - 1e-9)
    else:
        a, b = math.ceil((lo - origin) / res - 0.5 - 1e-9), math.floor((hi - origin) / res - 0.5 + 1e-9) + 1
    return slice(max(0, a), min(n, b))


def house_free_space(rooms, walls, objects, bounds, agent_radius: float, resolution: float) -> FreeSpaceGrid:
    """Where the agent's centre may be: room floors minus walls and furniture, dilated by ``agent_radius``
    (the grid of :meth:`pewm.sim.house.House.free_space`)."""
    from scipy import ndimage

    if agent_radius < 0 or resolution <= 0:
        raise ValueError(f"free_space: need agent_radius >= 0 and resolution > 0, got {agent_radius}, {resolution}")
    margin = 0.5
    x0, y0 = bounds[0] - margin, bounds[1] - margin
    cols = int(math.ceil((bounds[2] - bounds[0] + 2 * margin) / resolution))
    rows = int(math.ceil((bounds[3] - bounds[1] + 2 * margin) / resolution))
    floor = np.zeros((rows, cols), dtype=bool)
    for r in rooms:
        floor[_cell_range(r.y0, r.y1, y0, resolution, rows, False), _cell_range(r.x0, r.x1, x0, resolution, cols, False)] = True
    blocked = ~floor
    boxes = [(w.x0, w.y0, w.x1, w.y1) for w in walls if w.z0 < 1.0]
    for o in objects:
        if o.blocking:
            boxes.extend((b[0], b[1], b[3], b[4]) for b in (p.bbox() for p in o.parts) if b[2] < 1.8)
    for bx0, by0, bx1, by1 in boxes:
        blocked[_cell_range(by0, by1, y0, resolution, rows, True), _cell_range(bx0, bx1, x0, resolution, cols, True)] = True
    dist = ndimage.distance_transform_edt(~blocked) * resolution
    free = dist >= agent_radius + 0.5 * resolution
    return FreeSpaceGrid(free=free, origin=(float(x0), float(y0)), resolution=float(resolution))
