"""Placement: PPM -> points -> triangles -> ellipses -> Gaussians, and the count control (docs/method.md, 4.3-4.5).

    g = place(ppm, image, kernel_size=3)               # N follows the PPM's mass
    g = place(ppm, image, target_count=20_000)         # N within 2 % of 20,000

This is the non-learned half of Instant GaussianImage: the network only predicts the PPM (and later
refines each Gaussian inside its triangle). Each triangle becomes one Gaussian: the least-squares ellipse
of the triangle gives its mean and shape, the image at the mean gives its colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..errors import ArgumentError
from ..gaussians import Gaussians2D, pixels_to_ndc
from .dither import dither, floyd_steinberg, pool_cells
from .ellipses import fit_ellipses
from .triangulate import Triangulation, triangulate

#: Gaussian standard deviations = this x the ellipse semi-axes. The reference's quad-tree init multiplies
#: the *full* axes of cv2.fitEllipse by 0.27, i.e. the semi-axes by 0.54; we use it for every placement.
#: Under sum blending a Gaussian adds 2 pi s1 s2 x its colour, and the ellipse's area is 2.06x its
#: triangle's, so at 0.54 the Gaussians of a flat region sum to about 1.2x its colour (0.493 would keep
#: the mean); the sum is also uneven (triangle vertices get least), so an untrained placement renders at
#: ~15-20 dB on Kodak: it is a start for the learned fields or the fine-tuner, not a finished picture.
AXIS_SCALE = 0.54
MAX_AXIS_RATIO = 10.0  # thinner ellipses are dropped (the reference's rule)
COUNT_RTOL = 0.02  # target_count is met within 2 %


# ----------------------------------------------------------------- Gaussians
def sample_colors(image: Tensor, xy: Tensor) -> Tensor:
    """Bilinear colours of ``image`` (3, H, W) at pixel positions ``xy`` (N, 2) -> (N, 3).

    Pixel (i, j) holds the colour at its centre (j + 0.5, i + 0.5); positions beyond the outer pixel
    centres take the edge colour. Differentiable in both arguments.
    """
    height, width = image.shape[-2:]
    grid = pixels_to_ndc(xy.to(image.dtype), height, width)  # align_corners=False: -1 is the image's left edge
    sampled = F.grid_sample(image[None], grid[None, None], mode="bilinear", padding_mode="border",
                            align_corners=False)
    return sampled[0, :, 0].T


def ellipse_keep_mask(centres: Tensor, axes: Tensor, height: int, width: int, drop_outside: bool = True,
                      max_axis_ratio: float = MAX_AXIS_RATIO) -> Tensor:
    """(T,) bool: the ellipses worth a Gaussian: not too thin (major <= ratio x minor) and,
    with ``drop_outside``, centred inside the image [0, W] x [0, H]."""
    keep = axes[:, 0] <= max_axis_ratio * axes[:, 1]
    if drop_outside:
        x, y = centres.unbind(-1)
        keep &= (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    return keep


def gaussians_from_triangles(triangles: Tensor, image: Tensor, axis_scale: float = AXIS_SCALE,
                             drop_outside: bool = True, max_axis_ratio: float = MAX_AXIS_RATIO,
                             height: int | None = None, width: int | None = None) -> Gaussians2D:
    """One Gaussian per triangle: its least-squares ellipse, scaled, coloured by the image.

    Args:
        triangles: (T, 3, 2) vertices, pixels (x, y).
        image: (3, H, W) in [0, 1]; colours are sampled (bilinear) at each ellipse centre.
        axis_scale: standard deviations = semi-axes x this (the ellipse is a triangle-sized region;
            a Gaussian of that standard deviation would smear over its neighbours under sum blending).
        drop_outside, max_axis_ratio: see :func:`ellipse_keep_mask`.
        height, width: the canvas (default: the image's).

    Returns:
        A rotation-scale :class:`Gaussians2D` with ``size=(H, W)``, opacities 1, at most T Gaussians.
        Differentiable in ``triangles`` and ``image`` (the drop mask is not).
    """
    height = image.shape[-2] if height is None else height
    width = image.shape[-1] if width is None else width
    centres, axes, angles = fit_ellipses(triangles.to(image.device, image.dtype))
    keep = ellipse_keep_mask(centres, axes, height, width, drop_outside, max_axis_ratio)
    centres, axes, angles = centres[keep], axes[keep], angles[keep]
    return Gaussians2D.from_scale_rotation(centres, axes * axis_scale, angles, sample_colors(image, centres),
                                           size=(height, width))


# ------------------------------------------------------------------- place
@dataclass
class Placement:
    """What :func:`place_steps` made on the way: ``points`` (M, 2) px from the dithering, the
    :class:`~gilab.placement.Triangulation` (those points + boundary points), the ``gaussians`` (one per kept
    triangle) and the density ``gain`` used."""

    points: Tensor
    triangulation: Triangulation
    gaussians: Gaussians2D
    gain: float


def place(ppm: Tensor, image: Tensor, kernel_size: int = 3, density: float = 1.0, target_count: int | None = None,
          axis_scale: float = AXIS_SCALE, max_axis_ratio: float = MAX_AXIS_RATIO, seed: int = 0) -> Gaussians2D:
    """Gaussians from a position probability map: dither -> triangulate -> ellipses -> Gaussians.

    Args:
        ppm: (H, W) in [0, 1], where the Gaussians should be dense.
        image: (3, H, W) in [0, 1], for the colours.
        kernel_size: k; at most one point per k x k cell, so N <= about 2 H W / k^2 (two triangles per point).
        density: gain on the pooled PPM (more or fewer points); ignored when ``target_count`` is given.
        target_count: wanted number of Gaussians; the density gain is searched so that N lands within 2 %.
            A count the PPM cannot give at this k raises ValueError.
        axis_scale, max_axis_ratio: see :func:`gaussians_from_triangles`.
        seed: seeds the triangulation's jitter (the result is deterministic for a given seed).
    """
    return place_steps(ppm, image, kernel_size, density, target_count, axis_scale, max_axis_ratio, seed).gaussians


def place_steps(ppm: Tensor, image: Tensor, kernel_size: int = 3, density: float = 1.0,
                target_count: int | None = None, axis_scale: float = AXIS_SCALE,
                max_axis_ratio: float = MAX_AXIS_RATIO, seed: int = 0) -> Placement:
    """:func:`place`, keeping the points and triangles it made on the way (for pictures); same arguments."""
    height, width = ppm.shape[-2:]
    if image.shape[-2:] != ppm.shape[-2:]:
        raise ValueError(f"ppm {tuple(ppm.shape)} and image {tuple(image.shape)} must have the same H, W")
    made: dict[int, Placement] = {}  # id(gaussians) -> its Placement, for every build the search tries

    def build(gain: float) -> Gaussians2D:
        points = dither(ppm, kernel_size, gain)
        tri = triangulate(points, height, width, seed=seed)
        g = gaussians_from_triangles(tri.triangles, image, axis_scale, True, max_axis_ratio, height, width)
        made[id(g)] = Placement(points, tri, g, gain)
        return g

    if target_count is None:
        return made[id(build(density))]
    g = search_count(build, count_estimate(ppm, kernel_size), target_count,
                     low=1e-6, high=saturating_density(ppm, kernel_size), increasing=True,
                     what=f"place() with kernel_size={kernel_size} (at most about 2 H W / k^2 = "
                          f"{2 * height * width // kernel_size ** 2:,} on this {height}x{width} image)")
    return made[id(g)]


def count_estimate(ppm: Tensor, kernel_size: int) -> Callable[[float], float]:
    """The search's cheap prediction of N at a density gain: 2 x the dithered points.

    A Delaunay triangulation of P points with h of them on the hull has exactly 2 P - h - 2 triangles, so two
    per point predicts N well; the border points and dropped ellipses are corrected for after each full build.
    The map is pooled once here, and each call only dithers (~100x cheaper than the whole chain). Equal to
    ``2 * len(dither(ppm, kernel_size, gain))``.
    """
    pooled = pool_cells(ppm, kernel_size).cpu().numpy()  # float32, scaled and clipped as dither() does

    def estimate(gain: float) -> float:
        return 2 * int(floyd_steinberg(np.clip(pooled * np.float32(gain), 0, 1)).sum())

    return estimate


def saturating_density(ppm: Tensor, kernel_size: int) -> float:
    """The smallest density gain at which every cell with a positive pooled value is marked (1 if none is)."""
    pooled = pool_cells(ppm, kernel_size)
    positive = pooled[pooled > 0]
    return 1.0 / float(positive.min()) if positive.numel() else 1.0


# ------------------------------------------------------------ count control
def search_count(build: Callable[[float], Gaussians2D], estimate: Callable[[float], float], target: int,
              low: float, high: float, increasing: bool, what: str, rtol: float = COUNT_RTOL,
              attempts: int = 4) -> Gaussians2D:
    """Search x in [low, high] for a ``build(x)`` with ``target`` Gaussians within ``rtol``; returns that build.

    ``estimate(x)`` is a cheap, monotone prediction of ``len(build(x))`` (``increasing`` says which way).
    "Within" is ``rtol`` of the target or one Gaussian, whichever is more (a triangulation's count has a
    parity, so a small odd target may be out of reach by one). Each attempt bisects the estimate onto a goal,
    builds once, and moves the goal by what the estimate missed. Raises ArgumentError, with the reachable
    range, when no x gets close enough.
    """
    if target < 1:
        raise ArgumentError(f"target_count must be >= 1, got {target}")
    goal, counts, tried = float(target), {}, set()  # counts: N -> a build with that many Gaussians
    for _ in range(attempts):
        x = bisect_geometric(estimate, goal, low, high, increasing, rtol / 4)
        if x in tried:  # the goal moved but the estimate cannot follow it: the count is out of reach
            break
        tried.add(x)
        result = build(x)
        counts.setdefault(len(result), result)
        if abs(len(result) - target) <= max(rtol * target, 1):
            return result
        # what the estimate misses (edge points, dropped ellipses) is about a constant number of Gaussians
        goal = max(goal + target - len(result), 1.0)
    below = max((n for n in counts if n < target), default=None)
    above = min((n for n in counts if n > target), default=None)
    if below is not None and above is not None:  # N jumps at small counts (and is not monotone): both sides
        found = f"the settings tried gave {below:,} and {above:,} Gaussians here, none within {rtol:.0%}"
    else:
        found = (f"it gives {'at most' if above is None else 'at least'} about {(below or above):,} Gaussians here "
                 f"(tolerance {rtol:.0%})")
    raise ArgumentError(f"target_count={target:,} is out of reach for {what}: {found}")


def bisect_geometric(estimate: Callable[[float], float], goal: float, low: float, high: float,
                     increasing: bool, rtol: float, steps: int = 60) -> float:
    """x in [low, high] (bisected on a log scale) with estimate(x) within ``rtol`` of ``goal``, or the closest."""
    best_x, best_gap = low, math.inf
    lo, hi = math.log(low), math.log(high)
    for _ in range(steps):
        x = math.exp(0.5 * (lo + hi))
        value = estimate(x)
        if abs(value - goal) < best_gap:
            best_x, best_gap = x, abs(value - goal)
        if best_gap <= rtol * goal or hi - lo < 1e-9:
            break
        if (value < goal) == increasing:
            lo = math.log(x)
        else:
            hi = math.log(x)
    for end in (low, high):  # the interval's ends themselves (bisection only tries inner points)
        if best_gap <= rtol * goal:
            break
        value = estimate(end)
        if abs(value - goal) < best_gap:
            best_x, best_gap = end, abs(value - goal)
    return best_x
