"""Quad-tree init: a non-learned start for GaussianImage, the reference's baseline (docs/method.md, section 5.4).

    g = quadtree_init(image)                          # N adapts to the image's detail
    g = quadtree_init(image, target_count=20_000)     # N within 2 % of 20,000

Split the image into cells, breadth first, until a cell is flat enough (its largest per-channel standard
deviation, on a slightly blurred copy, is under a threshold that falls with the cell's size) or small
(its shorter side <= 4 px). Flat regions end in big cells, detail in small ones. The cell centres and the
image's boundary are then triangulated, and each triangle becomes one Gaussian (as in :func:`place`).

Where gilab differs from the reference code (on purpose):

* The reference pads the image to a square with black and splits that square; cells straddling the
  image's edge then see an artificial black step and split to the smallest size along the whole edge.
  We split the same square (so cells stay square, e.g. down to 3x3 on a 768x512 image) but measure each
  cell only over its part inside the image, and drop the cells wholly outside.
* The reference also tries to keep half-cells (left/right, top/bottom pairs) before splitting into four,
  and adds extra round Gaussians at vertices with a large surrounding area. We keep the plain four-way
  split of docs/method.md (section 5.4) and no extra Gaussians; ``target_count`` is the control over N.
* The reference triangulates the cell centres with the 4 image corners only. Its triangles along the
  border then fan out from the corners: they are thin (dropped by the axis-ratio rule, so a strip half a
  cell wide along every edge gets no Gaussian) and, jittered, often flat in exact coordinates, which sends
  the triangulation to its exact (2x slower) fallback. By default we add the same boundary points as
  :func:`place` (every 3 mean nearest-neighbour distances); on kodim13 (39k cells) the triangulation
  takes 0.41 s instead of 1.36 s, and PSNR rises 0.1-0.2 dB. ``boundary="corners"`` gives the reference's.
* Positions follow our pixel convention: a cell over columns [x0, x1) has its centre at (x0 + x1) / 2.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..gaussians import Gaussians2D
from .place import AXIS_SCALE, MAX_AXIS_RATIO, gaussians_from_triangles, search_count
from .triangulate import triangulate

# The reference's size-dependent threshold on the std (image in [0, 1]): 0.02 at 4 px, 0.001 at 100 px,
# negative (always split) beyond 105 px.
THRESHOLD_SLOPE = -0.0001979
THRESHOLD_INTERCEPT = 0.0207916
MIN_SIDE = 4  # a cell whose shorter side is <= 4 px is not split further
BLUR_SIGMA = 1.0  # px; the reference blurs with PIL's GaussianBlur(1), so that noise alone does not split cells


def gaussian_blur(image: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """(C, H, W) -> (C, H, W) separable Gaussian blur, standard deviation ``sigma`` px, edges replicated."""
    if sigma <= 0:
        return image
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    x = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return x[0]


def uniformity_threshold(side, scale: float = 1.0):
    """The largest per-channel std (image in [0, 1]) at which a cell of longest side ``side`` px stays whole."""
    return scale * (THRESHOLD_SLOPE * side + THRESHOLD_INTERCEPT)


def integral_images(image: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) -> summed-area tables of the values and their squares, (C, H + 1, W + 1) float64 each,
    so that any rectangle's sum is 4 lookups."""
    values = image.detach().cpu().double().numpy()
    pad = ((0, 0), (1, 0), (1, 0))
    return (np.pad(values.cumsum(1).cumsum(2), pad), np.pad((values * values).cumsum(1).cumsum(2), pad))


def box_std(tables: tuple[np.ndarray, np.ndarray], x0, y0, x1, y1) -> np.ndarray:
    """Largest per-channel standard deviation over each box [x0, x1) x [y0, y1) (arrays of B boxes) -> (B,)."""
    sums, sums_sq = (t[:, y1, x1] - t[:, y0, x1] - t[:, y1, x0] + t[:, y0, x0] for t in tables)
    count = (x1 - x0) * (y1 - y0)
    variance = sums_sq / count - (sums / count) ** 2
    return np.sqrt(np.clip(variance, 0, None)).max(0)  # rounding can make a flat box's variance -1e-17


def quadtree_cells(image: Tensor, threshold_scale: float = 1.0, min_side: int = MIN_SIDE,
                   blur_sigma: float = BLUR_SIGMA) -> np.ndarray:
    """The leaves of the quad-tree of ``image`` (3, H, W) -> (C, 4) int64 boxes (x0, y0, x1, y1), pixels.

    The tree splits the square [0, S)^2, S = max(H, W), into four (halves rounded down first), level by
    level; a cell is a leaf when its shorter side is <= ``min_side`` or when its largest per-channel std
    over its part inside the image is below ``uniformity_threshold(longest side) * threshold_scale``.
    The returned boxes are clipped to the image. Larger ``threshold_scale`` -> fewer, larger cells.
    """
    tables = integral_images(gaussian_blur(image, blur_sigma))
    return split_cells(tables, image.shape[1], image.shape[2], threshold_scale, min_side)


def split_cells(tables: tuple[np.ndarray, np.ndarray], height: int, width: int, threshold_scale: float = 1.0,
                min_side: int = MIN_SIDE) -> np.ndarray:
    """:func:`quadtree_cells` on precomputed :func:`integral_images` (the count search reuses them)."""
    x, y = np.zeros(1, np.int64), np.zeros(1, np.int64)
    w, h = np.full(1, max(height, width)), np.full(1, max(height, width))
    leaves = []
    while len(x):  # one level of the tree per pass, all its cells at once
        x1, y1 = np.minimum(x + w, width), np.minimum(y + h, height)
        flat = box_std(tables, x, y, x1, y1) < uniformity_threshold(np.maximum(w, h), threshold_scale)
        leaf = (np.minimum(w, h) <= min_side) | flat
        leaves.append(np.stack([x, y, x1, y1], 1)[leaf])
        x, y, w, h = _split_in_four(x[~leaf], y[~leaf], w[~leaf], h[~leaf])
        inside = (x < width) & (y < height)  # children wholly outside the image are dropped
        x, y, w, h = x[inside], y[inside], w[inside], h[inside]
    return np.concatenate(leaves)


def _split_in_four(x, y, w, h):
    """Children of cells (x, y, w, h): top-left, top-right, bottom-left, bottom-right."""
    left, top = w // 2, h // 2
    xs = np.concatenate([x, x + left, x, x + left])
    ys = np.concatenate([y, y, y + top, y + top])
    ws = np.concatenate([left, w - left, left, w - left])
    hs = np.concatenate([top, top, h - top, h - top])
    return xs, ys, ws, hs


def cell_centres(cells: np.ndarray) -> np.ndarray:
    """(C, 4) boxes (x0, y0, x1, y1) -> (C, 2) centres (x, y), pixels."""
    return np.stack([cells[:, 0] + cells[:, 2], cells[:, 1] + cells[:, 3]], 1) / 2


def quadtree_init(image: Tensor, target_count: int | None = None, threshold_scale: float = 1.0,
                  axis_scale: float = AXIS_SCALE, max_axis_ratio: float = MAX_AXIS_RATIO, min_side: int = MIN_SIDE,
                  blur_sigma: float = BLUR_SIGMA, boundary: str = "edges", seed: int = 0) -> Gaussians2D:
    """Gaussians from a quad-tree of the image: cells -> centres + corners -> Delaunay -> ellipses -> Gaussians.

    Args:
        image: (3, H, W) in [0, 1].
        target_count: wanted number of Gaussians; ``threshold_scale`` is searched so that N lands within 2 %.
        threshold_scale: multiplies the reference's uniformity threshold (1 = the reference).
        axis_scale: standard deviations = ellipse semi-axes x this (0.54 = the reference's 0.27 x full axes).
        max_axis_ratio: thinner ellipses are dropped.
        min_side, blur_sigma: see :func:`quadtree_cells`.
        boundary: "edges" (default: boundary points along the edges, as :func:`place` adds them) or
            "corners" (the reference: cell centres + the 4 image corners only). With "corners" the
            triangles fanning from the corners along the border are thin and dropped, leaving a dim strip
            half a cell wide at the image edge, and the nearly collinear rows of centres there make Qhull's
            work 2-3x longer (see the module docstring); "edges" avoids both (+0.1-0.2 dB on Kodak).
        seed: seeds the triangulation's jitter.

    Returns:
        A rotation-scale :class:`Gaussians2D`, opacities 1, colours sampled from the (unblurred) image.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    _, height, width = image.shape

    tables = integral_images(gaussian_blur(image, blur_sigma))

    def build(scale: float) -> Gaussians2D:
        cells = split_cells(tables, height, width, scale, min_side)
        tri = triangulate(cell_centres(cells), height, width, boundary=boundary, seed=seed)
        return gaussians_from_triangles(tri.triangles, image, axis_scale, True, max_axis_ratio, height, width)

    if target_count is None:
        return build(threshold_scale)
    # C cell centres plus B boundary points (the hull) give exactly 2 C + B - 2 triangles, about 2 C; the
    # boundary points and the few thin triangles dropped are corrected for after each full build.
    return search_count(build, lambda scale: 2 * len(split_cells(tables, height, width, scale, min_side)) + 2,
                        target_count, low=1e-4, high=1e4, increasing=False,
                        what=f"quadtree_init on this {height}x{width} image (min_side={min_side})")
