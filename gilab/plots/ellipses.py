"""Ellipses of Gaussians over an image: the one drawer every figure and widget uses.

    draw_ellipses(ax, gaussians)                   # at the cutoff, 3.33 standard deviations
    draw_ellipses(ax, gaussians, radius=1)         # at one standard deviation
    draw_ellipses(ax, (centres, semi_axes, angles), radius=1)   # ellipses as fit_ellipses gives them
    ellipse_outlines(gaussians)                    # (N, points, 2) pixel coordinates, for custom drawing
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..gaussians import CUTOFF_RADIUS, Gaussians2D


def ellipse_outlines(gaussians: Gaussians2D, radius: float = CUTOFF_RADIUS, points: int = 64) -> np.ndarray:
    """(N, points, 2) pixel coordinates (x, y) of each Gaussian's ellipse at Mahalanobis ``radius``.

    The default radius, sqrt(2 ln 255) = 3.33, is the cutoff: outside it a Gaussian of opacity 1 adds nothing.
    With Sigma = L L^T (Cholesky), the ellipse is mu + radius * L (cos t, sin t).
    """
    g = gaussians.detach().to("cpu", torch.float64).to_cholesky()
    l1, l2, l3 = g.cholesky.unbind(-1)
    t = torch.linspace(0, 2 * math.pi, points, dtype=torch.float64)
    c, s = torch.cos(t) * radius, torch.sin(t) * radius
    x = g.means[:, :1] + l1[:, None] * c
    y = g.means[:, 1:] + l2[:, None] * c + l3[:, None] * s
    return torch.stack([x, y], -1).numpy()


def as_gaussians(ellipses) -> Gaussians2D:
    """A :class:`Gaussians2D`, or ``(centres (T, 2), semi-axes (T, 2), angles (T,) radians)`` as Gaussians whose
    one-standard-deviation ellipses are those ellipses."""
    if isinstance(ellipses, Gaussians2D):
        return ellipses
    centres, axes, angles = (torch.as_tensor(t).detach().cpu().double() for t in ellipses)
    return Gaussians2D.from_scale_rotation(centres, axes, angles, torch.zeros(len(centres), 3, dtype=torch.float64))


def draw_ellipses(ax, ellipses, radius: float = CUTOFF_RADIUS, color="white", linewidth=0.8, alpha=0.8,
                  max_count: int | None = 2000, centers: bool = False):
    """Draw ellipses at Mahalanobis ``radius`` (default: the cutoff) onto an Axes that shows an image.

    ``ellipses``: a :class:`Gaussians2D` or a ``(centres, semi-axes, angles)`` tuple (see :func:`as_gaussians`).
    More than ``max_count`` are thinned to an even sample so that the plot stays readable. Works whichever way
    the image was shown: with ``imshow``'s default extent (pixel centres on integers) or with the extent
    (0, W, H, 0) of ``gilab.plots.placement`` (pixel centres at +0.5, as gilab's coordinates).
    """
    from matplotlib.collections import LineCollection

    g = as_gaussians(ellipses)
    if max_count is not None and len(g) > max_count:
        g = g[torch.linspace(0, len(g) - 1, max_count).round().long()]
    shift = _pixel_shift(ax)
    limits = ax.get_xlim(), ax.get_ylim()
    ax.add_collection(LineCollection(ellipse_outlines(g, radius) + shift, colors=color, linewidths=linewidth,
                                     alpha=alpha))
    if centers:
        means = g.means.detach().cpu().numpy() + shift
        ax.plot(means[:, 0], means[:, 1], "+", color=color, alpha=alpha, markersize=4)
    ax.set_xlim(*limits[0])  # the image's frame, not the ellipses' extent
    ax.set_ylim(*limits[1])
    return ax


def _pixel_shift(ax) -> float:
    """-0.5 where the Axes shows an image with imshow's default extent (pixel (i, j)'s centre drawn at (j, i)),
    0 where the extent puts it at (j + 0.5, i + 0.5) like gilab's pixel coordinates."""
    images = ax.get_images()
    return -0.5 if images and images[0].get_extent()[0] == -0.5 else 0.0
