"""Ellipses: one per triangle, the shape its Gaussian starts from (docs/method.md, section 4.5).

    centres, axes, angles = fit_ellipses(triangles)     # (T, 2) px, (T, 2) semi-axes px, (T,) radians

The reference fits a least-squares conic through each triangle's 3 vertices and 3 edge midpoints
(OpenCV's ``fitEllipse``: centre the 6 points on their mean, fit a general conic, take its centre, refit
the quadratic part about that centre). We use the closed form of that same fit, which is cheaper, exact,
vectorised and differentiable:

* Every step of that fit is a linear least-squares problem whose design columns (x^2, xy, y^2, x, y after
  centring) span a space that an invertible linear map of the coordinates leaves unchanged, so the fitted
  ellipse is *affine covariant*: the fit of an affine image of a triangle is the affine image of its fit.
* Every triangle is an affine image of the equilateral one. There, symmetry forces a circle about the
  centroid, and the refit of a x^2 + a y^2 = 1 through 3 points at radius R and 3 at R/2 gives
  1/a = (17/20) R^2, i.e. the circumcircle shrunk by sqrt(17/20).
* The circumcircle of the equilateral triangle maps to the Steiner circumellipse of the triangle (the
  smallest-area ellipse through its vertices): {x : (x - g)^T S^-1 (x - g) <= 1} with g the centroid and
  S = 2/3 sum_i (v_i - g)(v_i - g)^T.

So the least-squares ellipse is centred on the centroid with shape matrix (17/20) S = (17/30) sum_i d_i d_i^T.
Its area is 0.85 of the Steiner circumellipse's and 3.4 times the Steiner inellipse's (through the midpoints).
tests/test_placement_ellipses.py checks it against an independent NumPy least-squares fit.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: (squared radius of the 6-point least-squares circle) / (circumradius^2) on the equilateral triangle.
LEAST_SQUARES_SHRINK = 17 / 20


def triangle_areas(triangles: Tensor) -> Tensor:
    """(T, 3, 2) vertices -> (T,) signed areas, px^2 (positive when counter-clockwise in (x, y))."""
    a, b, c = triangles.unbind(-2)
    ab, ac = b - a, c - a
    return 0.5 * (ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0])


def ellipse_shape_matrices(triangles: Tensor) -> tuple[Tensor, Tensor]:
    """(T, 3, 2) vertices -> centroids (T, 2) and shape matrices M (T, 2, 2), px^2.

    The ellipse is {x : (x - centroid)^T M^-1 (x - centroid) = 1}; M = (17/30) sum_i d_i d_i^T,
    d_i = vertex i - centroid (see the module docstring for why this is the least-squares fit).
    """
    centroids = triangles.mean(-2)
    d = triangles - centroids[..., None, :]
    return centroids, (LEAST_SQUARES_SHRINK * 2 / 3) * d.transpose(-1, -2) @ d


def fit_ellipses(triangles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares ellipse through each triangle's vertices and edge midpoints.

    Args:
        triangles: (T, 3, 2) vertex coordinates, pixels (x, y).

    Returns:
        centres (T, 2) pixels (the centroids), axes (T, 2) semi-axes in pixels with the major first,
        angles (T,) radians in (-pi/2, pi/2], the direction of the major axis from +x towards +y.
        Differentiable; a circle (equal axes) gets angle 0 and a zero angle gradient.
    """
    centres, m = ellipse_shape_matrices(triangles)
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 1, 1]
    mean = 0.5 * (a + c)
    half_diff = 0.5 * (a - c)
    spread_sq = half_diff * half_diff + b * b
    round_ = spread_sq <= 1e-12 * mean * mean  # a circle: no direction, and sqrt'(0) would be infinite
    spread = torch.sqrt(torch.where(round_, torch.ones_like(spread_sq), spread_sq))
    spread = torch.where(round_, torch.zeros_like(spread), spread)
    # the floor keeps sqrt's gradient finite for a collinear (zero-area) triangle; its minor axis is then 1e-6 px
    major = torch.sqrt((mean + spread).clamp(min=1e-12))
    minor = torch.sqrt((mean - spread).clamp(min=1e-12))
    angles = 0.5 * torch.atan2(torch.where(round_, torch.zeros_like(b), 2 * b),
                               torch.where(round_, torch.ones_like(a), a - c))
    return centres, torch.stack([major, minor], -1), angles
