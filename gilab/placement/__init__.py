"""Placement: Instant GaussianImage's non-learned half, and the quad-tree baseline (docs/method.md, 4.3-4.5, 5.3-5.4).

    ppm -> dither -> points -> triangulate -> triangles -> fit_ellipses -> Gaussians
    g = gilab.placement.place(ppm, image, kernel_size=3)          # from a position probability map
    g = gilab.placement.quadtree_init(image)                      # from the image alone

One idea per module:

- ``dither``       pool the PPM over k x k cells, Floyd-Steinberg, cell centres -> points
- ``triangulate``  boundary points + Delaunay (scipy) -> triangles and their neighbours
- ``ellipses``     the least-squares ellipse of each triangle (closed form, differentiable)
- ``place``        ellipses -> Gaussians (colours from the image), ``place()``, the count control
- ``quadtree``     the quad-tree init (cells -> centres -> the same triangles-to-Gaussians chain)
- ``pseudo_ppm``   the PPM that fitted Gaussians imply (the generator's training target, made in
                   ``gilab.training.targets``)
"""

from .dither import cell_centres, dither, floyd_steinberg, pool_cells
from .ellipses import fit_ellipses, triangle_areas
from .place import (
    AXIS_SCALE,
    MAX_AXIS_RATIO,
    Placement,
    ellipse_keep_mask,
    gaussians_from_triangles,
    place,
    place_steps,
    sample_colors,
    saturating_density,
    search_count,
)
from .pseudo_ppm import pseudo_ppm
from .quadtree import gaussian_blur, quadtree_cells, quadtree_init, uniformity_threshold
from .triangulate import Triangulation, boundary_points, mean_nn_distance, triangulate

__all__ = [
    "AXIS_SCALE",
    "MAX_AXIS_RATIO",
    "Placement",
    "Triangulation",
    "boundary_points",
    "cell_centres",
    "dither",
    "ellipse_keep_mask",
    "fit_ellipses",
    "floyd_steinberg",
    "gaussian_blur",
    "gaussians_from_triangles",
    "mean_nn_distance",
    "place",
    "place_steps",
    "pool_cells",
    "pseudo_ppm",
    "quadtree_cells",
    "quadtree_init",
    "sample_colors",
    "saturating_density",
    "search_count",
    "triangle_areas",
    "triangulate",
    "uniformity_threshold",
]
