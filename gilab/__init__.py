"""gilab: learn, reproduce and use 2D-Gaussian image representations (Instant GaussianImage, ICCV 2025).

    import gilab
    image = gilab.io.load_image("photo.png")                 # (3, H, W) in [0, 1]
    result = gilab.fit(image, n=20_000, iters=500)          # GaussianImage's recipe
    gilab.render(result.gaussians, *image.shape[1:])         # (3, H, W)
"""

import importlib

from . import render
from .fitting import FitResult, fit, random_gaussians
from .gaussians import Gaussians2D, ndc_to_pixels, pixels_to_ndc

__version__ = "0.1.0"
__all__ = ["Gaussians2D", "render", "fit", "FitResult", "random_gaussians", "pixels_to_ndc", "ndc_to_pixels",
           "io", "metrics", "datasets", "placement", "generator", "plots", "__version__"]

# Submodules with heavy dependencies (scipy, numba, matplotlib) load on first use: `gilab.placement` just works,
# and `import gilab` stays fast.
_LAZY = {"io", "metrics", "datasets", "placement", "generator", "plots", "widgets", "reproduce"}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
