"""Triangulation: points -> Delaunay triangles that tile the whole image (docs/method.md, section 4.4).

    tri = triangulate(points, height, width)      # tri.triangles (T, 3, 2), tri.neighbors (T, 3)

Each triangle later becomes one Gaussian, so the triangles must cover the image up to its edges:
points are added along the four edges (corners included), spaced 3x the mean nearest-neighbour distance
of the given points, so the border triangles are about as large as their neighbours. Input too small or too
flat to triangulate by itself (0-2 points, all on one line) gets the four corners only: P points strictly inside
then give 2 P + 2 triangles, so a target count of a few Gaussians stays reachable.

Qhull and regular grids. Dithered points sit exactly on a k-pixel grid, where many quadruples are
cocircular; Qhull then works ~2x harder. We triangulate a copy whose points strictly inside the image are
moved by at most 1e-3 px (seeded, so deterministic) and report the triangles with the exact coordinates. Measured on
a 768x512 map (scipy 1.17, one core):

    points     exact grid   jitter all points        jitter interior only (used)
    12k         68 ms        38 ms, 129 slivers        50 ms, 0 slivers
    25k        194 ms        81 ms, 118 slivers       109 ms, 0 slivers
    41k        433 ms       160 ms,  78 slivers       211 ms, 0 slivers

Jittering the boundary points too breaks their collinearity, and Qhull then closes the hull with
near-zero-area slivers between consecutive edge points (area < 1e-3 x the mean, 0 px^2 in exact
coordinates). Keeping the boundary exact keeps the hull the image rectangle, with no slivers; the extra
~30 % over jittering everything is the price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import Delaunay, QhullError, cKDTree
from torch import Tensor

BOUNDARY_SPACING = 3.0  # boundary points every 3 mean nearest-neighbour distances (the reference's choice)
JITTER_PX = 1e-3  # how far interior points move for Qhull (pixels); small against any triangle


@dataclass
class Triangulation:
    """A Delaunay triangulation of points covering the image [0, W] x [0, H].

    Attributes:
        points: (P, 2) float32 pixel (x, y): the input points (non-finite ones dropped, clipped into the
            image, deduplicated, in input order), then the added boundary points.
        simplices: (T, 3) int64 indices into ``points``, counter-clockwise in (x, y).
        triangles: (T, 3, 2) float32 vertex coordinates, ``points[simplices]``.
        neighbors: (T, 3) int64; ``neighbors[t, j]`` is the triangle across the edge opposite vertex j,
            or t itself on the image border (scipy gives -1 there).
        num_input: how many of ``points`` came from the input.
    """

    points: Tensor
    simplices: Tensor
    triangles: Tensor
    neighbors: Tensor
    num_input: int

    def __len__(self) -> int:
        return self.simplices.shape[0]


def mean_nn_distance(points: np.ndarray) -> float:
    """Mean distance from each point to its nearest other point (pixels); nan for fewer than 2 points."""
    if len(points) < 2:
        return math.nan
    distances, _ = cKDTree(points).query(points, k=2)
    return float(distances[:, 1].mean())


def boundary_points(height: int, width: int, spacing: float) -> np.ndarray:
    """(B, 2) points along the image edges, the 4 corners included, at most ``spacing`` px apart."""
    xs = np.linspace(0.0, width, max(1, math.ceil(width / spacing)) + 1)
    ys = np.linspace(0.0, height, max(1, math.ceil(height / spacing)) + 1)[1:-1]  # corners come with xs
    top, bottom = np.stack([xs, np.zeros_like(xs)], 1), np.stack([xs, np.full_like(xs, height)], 1)
    left, right = np.stack([np.zeros_like(ys), ys], 1), np.stack([np.full_like(ys, width), ys], 1)
    return np.concatenate([top, bottom, left, right])


def corner_points(height: int, width: int) -> np.ndarray:
    """(4, 2) the image corners (0, 0), (W, 0), (0, H), (W, H)."""
    return np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)


def is_degenerate(points: np.ndarray) -> bool:
    """Fewer than 3 distinct points, or all on one line: no 2D triangulation of them alone."""
    if len(points) < 3:
        return True
    centred = points - points.mean(0)
    singular = np.linalg.svd(centred, compute_uv=False)
    return bool(singular[-1] <= 1e-9 * max(singular[0], 1e-30))


def triangulate(points, height: int, width: int, boundary: str = "edges", jitter: float = JITTER_PX,
                seed: int = 0) -> Triangulation:
    """Delaunay triangulation of ``points`` plus boundary points, covering the whole image.

    Args:
        points: (M, 2) pixel (x, y), tensor or array; clipped into [0, W] x [0, H], duplicates dropped.
        height, width: the image size in pixels.
        boundary: "edges" adds points along the four edges spaced 3x the mean nearest-neighbour distance
            (Instant-GI); "corners" adds only the four corners (the quad-tree init).
        jitter: points strictly inside the image move by up to this many pixels, for Qhull only (see the
            module docstring); 0 disables it.
        seed: seeds the jitter, so a triangulation is reproducible.

    Degenerate input (0-2 points, all collinear) gets the four corners only, which always make a valid
    triangulation of the image (Qhull never raises), with 2 P + 2 triangles for P points strictly inside.
    """
    if boundary not in ("edges", "corners"):
        raise ValueError(f"boundary must be 'edges' or 'corners', got {boundary!r}")
    pts = _clean(points, height, width)
    num_input = len(pts)
    if boundary == "edges" and not is_degenerate(pts):
        spacing = max(1.0, BOUNDARY_SPACING * mean_nn_distance(pts))
        added = boundary_points(height, width, spacing)
    else:  # no spacing to follow, or not asked for: the corners make the hull the image rectangle
        added = corner_points(height, width)
    pts = np.concatenate([pts, _without(added, pts)])
    simplices, neighbors = _delaunay(pts, height, width, jitter, seed)
    points_t = torch.from_numpy(pts.astype(np.float32))
    simplices_t = torch.from_numpy(simplices.astype(np.int64))
    return Triangulation(points_t, simplices_t, points_t[simplices_t], torch.from_numpy(neighbors), num_input)


def _clean(points, height: int, width: int) -> np.ndarray:
    # float64 for Qhull; inside the image; first occurrence of each distinct point, in input order.
    pts = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    pts = np.clip(pts, 0, [width, height])
    # (x, y) viewed as one complex number: a 1-D unique, ~5x faster than np.unique(axis=0)
    _, first = np.unique(np.ascontiguousarray(pts).view(np.complex128).ravel(), return_index=True)
    return pts[np.sort(first)]


def _without(candidates: np.ndarray, existing: np.ndarray) -> np.ndarray:
    """The candidate points that do not coincide with any existing point (Qhull would drop a duplicate)."""
    if len(existing) == 0 or len(candidates) == 0:
        return candidates
    # a tree over the few candidates, queried by every existing point: cheaper than the other way round
    distance, nearest = cKDTree(candidates).query(existing, distance_upper_bound=1e-9)
    taken = np.zeros(len(candidates), dtype=bool)
    taken[nearest[np.isfinite(distance)]] = True
    return candidates[~taken]


def _delaunay(pts: np.ndarray, height: int, width: int, jitter: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Qhull on a copy whose points strictly inside the image are jittered; returns (simplices, neighbors).

    Points on the image border stay exact (also input points that lie there): jittering them would break
    their collinearity and leave slivers along the edge.
    """
    moved = pts.copy()
    inside = (pts[:, 0] > 0) & (pts[:, 0] < width) & (pts[:, 1] > 0) & (pts[:, 1] < height)
    if jitter > 0 and inside.any():
        rng = np.random.default_rng(seed)
        moved[inside] += rng.uniform(-jitter, jitter, size=(int(inside.sum()), 2))
    try:
        tri = Delaunay(moved)
        if jitter > 0 and not (_signed_areas(pts[tri.simplices]) > 0).all():
            # a triangle flat or flipped in the exact coordinates (only possible for input points closer to
            # collinear than the jitter): triangulate the exact points instead
            tri = Delaunay(pts)
    except QhullError:  # cannot happen with the corners present; kept so a triangulation never raises
        tri = Delaunay(pts, qhull_options="QJ")
    neighbors = tri.neighbors.astype(np.int64)
    own = np.arange(len(neighbors))[:, None].repeat(3, 1)
    return tri.simplices, np.where(neighbors < 0, own, neighbors)


def _signed_areas(triangles: np.ndarray) -> np.ndarray:
    """(T, 3, 2) -> (T,) signed areas (Qhull orders 2-D simplices counter-clockwise: positive)."""
    ab, ac = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    return 0.5 * (ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])
