"""Jupyter widgets and display helpers for the notebooks (ipywidgets 8, JupyterLab 4).

    from gilab.widgets import GaussianPlayground, FitMonitor
    GaussianPlayground()                              # sliders -> live render of a few Gaussians
    monitor = FitMonitor(image, n=2000, iters=1000)   # a fit in the background, render + PSNR curve live
    monitor.start()
    monitor                                           # (display it); the Stop button ends the fit early
    result = await monitor                            # (a later cell) the FitResult, once the fit has ended

``await monitor`` waits without blocking the kernel, so Stop works even under *Run All*; ``monitor.wait()``
blocks it (for scripts). See :class:`~gilab.widgets.common.BackgroundWork` for why.

Both widgets draw into :class:`ipywidgets.Image` (PNG or JPEG bytes): one message per update, no matplotlib
figure to re-create in the browser, so a render reaches the screen within milliseconds of the slider.
Every part carries a CSS class (``gilab-playground``, ``gilab-pg-g0-x``, ``gilab-fit-stop``, ...) so that
tests and style sheets can find it.

The static helpers (:func:`image_to_png`, :func:`image_to_bytes`, :func:`ellipse_outlines`, :func:`draw_ellipses`, :func:`show_fit`)
work without ipywidgets.
"""

from .common import draw_ellipses, ellipse_outlines, image_to_bytes, image_to_png, show_fit
from .fit_monitor import FitMonitor
from .playground import DEFAULT_PLAYGROUND, GaussianPlayground, playground_gaussians

# Widgets that pull in heavier parts of gilab (the codec, placement, the generator) load on first use.
_LAZY = {"CodecExplorer": "codec", "PlacementExplorer": "placement_explorer", "StartComparison": "compare"}

__all__ = ["DEFAULT_PLAYGROUND", "CodecExplorer", "FitMonitor", "GaussianPlayground", "PlacementExplorer",
           "StartComparison", "draw_ellipses", "ellipse_outlines", "image_to_bytes", "image_to_png",
           "playground_gaussians", "show_fit"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
