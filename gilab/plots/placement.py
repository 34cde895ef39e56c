"""Pictures of placement: the PPM, the dithered points, the triangles, the Gaussians, the quad-tree cells.

Each function draws one picture and returns its Figure; pass ``ax`` to draw into an existing Axes instead
(the Figure returned is then that Axes' figure). Coordinates are pixels with y down, as the image shows.

    fig = plot_placement(ppm, image)          # the whole chain in four panels
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..gaussians import Gaussians2D
from .ellipses import as_gaussians, draw_ellipses
from .fitting import to_numpy_image

__all__ = ["plot_ellipses", "plot_placement", "plot_points", "plot_ppm", "plot_quadtree", "plot_triangulation"]


def _canvas(image: Tensor | None, ax=None, size: tuple[int, int] | None = None, width: float = 6.0,
            title: str | None = None):
    """(fig, ax) with ``image`` (3, H, W) shown (or an empty H x W frame), y down, no ticks."""
    import matplotlib.pyplot as plt

    height, width_px = image.shape[-2:] if image is not None else size
    if ax is None:
        _, ax = plt.subplots(figsize=(width, width * height / width_px + 0.3), layout="constrained")
    if image is not None:
        ax.imshow(to_numpy_image(image), extent=(0, width_px, height, 0), interpolation="nearest")
    ax.set_xlim(0, width_px)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax.figure, ax


def plot_ppm(ppm: Tensor, ax=None, title: str = "position probability map", cmap: str = "magma",
             colorbar: bool = True):
    """Heat map of a PPM (H, W) in [0, 1]. Returns the Figure."""
    ppm = ppm.detach().cpu().float()
    fig, ax = _canvas(None, ax, size=tuple(ppm.shape), title=title)
    shown = ax.imshow(ppm.numpy(), extent=(0, ppm.shape[1], ppm.shape[0], 0), cmap=cmap, vmin=0, vmax=1,
                      interpolation="nearest")
    if colorbar:
        fig.colorbar(shown, ax=ax, shrink=0.8)
    return fig


def plot_points(image: Tensor, points: Tensor, ax=None, size: float = 1.0, color: str = "red",
                title: str | None = None):
    """Points (M, 2) pixel (x, y), e.g. from ``dither``, over the image (3, H, W). Returns the Figure."""
    points = torch.as_tensor(points).detach().cpu().reshape(-1, 2).numpy()
    fig, ax = _canvas(image, ax, title=title if title is not None else f"{len(points):,} points")
    ax.scatter(points[:, 0], points[:, 1], s=size, c=color, linewidths=0)
    return fig


def plot_triangulation(image: Tensor, triangulation, ax=None, linewidth: float = 0.3, color: str = "white",
                       title: str | None = None):
    """The triangles of a ``Triangulation`` (or a (T, 3, 2) tensor of vertices) over the image. Returns the Figure."""
    from matplotlib.collections import PolyCollection

    triangles = getattr(triangulation, "triangles", triangulation)
    triangles = torch.as_tensor(triangles).detach().cpu().numpy()
    fig, ax = _canvas(image, ax, title=title if title is not None else f"{len(triangles):,} triangles")
    ax.add_collection(PolyCollection(triangles, facecolors="none", edgecolors=color, linewidths=linewidth))
    return fig


def plot_ellipses(image: Tensor, ellipses, ax=None, n_std: float = 1.0, linewidth: float = 0.4,
                  color: str = "cyan", max_count: int | None = None, title: str | None = None):
    """Ellipse outlines over the image. Returns the Figure.

    ``ellipses`` is either a :class:`~gilab.Gaussians2D` (drawn at ``n_std`` standard deviations) or the
    tuple ``(centres (T, 2), semi-axes (T, 2), angles (T,) radians)`` from ``fit_ellipses`` (drawn as is).
    ``max_count`` draws an evenly spaced subset (tens of thousands of outlines are slow to draw).
    """
    g = as_gaussians(ellipses)
    radius = n_std if isinstance(ellipses, Gaussians2D) else 1.0
    what = f"{len(g):,} Gaussians ({n_std:g} std)" if isinstance(ellipses, Gaussians2D) else f"{len(g):,} ellipses"
    fig, ax = _canvas(image, ax, title=title if title is not None else what)
    draw_ellipses(ax, g, radius=radius, color=color, linewidth=linewidth, alpha=1.0, max_count=max_count)
    return fig


def plot_quadtree(image: Tensor, cells: np.ndarray, ax=None, linewidth: float = 0.3, color: str = "white",
                  title: str | None = None):
    """Quad-tree cells (C, 4) boxes (x0, y0, x1, y1), from ``quadtree_cells``, over the image. Returns the Figure."""
    from matplotlib.collections import PolyCollection

    cells = np.asarray(cells, dtype=np.float64)
    x0, y0, x1, y1 = cells.T
    boxes = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)], 1)
    fig, ax = _canvas(image, ax, title=title if title is not None else f"{len(cells):,} quad-tree cells")
    ax.add_collection(PolyCollection(boxes, facecolors="none", edgecolors=color, linewidths=linewidth))
    return fig


def plot_placement(ppm: Tensor, image: Tensor, kernel_size: int = 3, density: float = 1.0,
                   max_ellipses: int | None = 20_000, width: float = 5.0):
    """The whole chain in four panels: PPM, dithered points, triangles, Gaussians (1 std). Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..placement import dither, gaussians_from_triangles, triangulate

    height, width_px = image.shape[-2:]
    points = dither(ppm, kernel_size, density)
    tri = triangulate(points, height, width_px)
    gaussians = gaussians_from_triangles(tri.triangles, image)
    fig, axes = plt.subplots(2, 2, figsize=(2 * width, 2 * width * height / width_px + 0.8), layout="constrained")
    plot_ppm(ppm, ax=axes[0, 0], colorbar=False)
    plot_points(image, points, ax=axes[0, 1], size=max(0.2, 4.0 / math.sqrt(max(len(points), 1)) * 20))
    plot_triangulation(image, tri, ax=axes[1, 0])
    plot_ellipses(image, gaussians, ax=axes[1, 1], max_count=max_ellipses)
    return fig
