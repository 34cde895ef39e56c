"""Deprecated: the study moved to :mod:`gilab.study` (protocol, analysis, tables) and its figures to
:mod:`gilab.plots.study`. This module re-exports them for old code and notebooks and will be removed."""

import warnings

from .plots.study import COLORS, plot_n_vs_detail, plot_ppm_overlay, plot_psnr_vs_time, plot_visual_grid
from .study import *
from .study import __all__ as _moved

warnings.warn("gilab.reproduce is now gilab.study (figures: gilab.plots.study)", DeprecationWarning, stacklevel=2)

__all__ = [*_moved, "COLORS", "plot_n_vs_detail", "plot_ppm_overlay", "plot_psnr_vs_time",  # noqa: PLE0604
           "plot_visual_grid"]
