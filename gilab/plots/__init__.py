"""One-call matplotlib figures: fits (``gilab.plots.fitting``) and placement (``gilab.plots.placement``)."""

from .placement import (  # noqa: F401 (re-exported)
    plot_ellipses,
    plot_placement,
    plot_points,
    plot_ppm,
    plot_quadtree,
    plot_triangulation,
)
