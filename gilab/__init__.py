"""gilab: learn, reproduce and use 2D-Gaussian image representations (Instant GaussianImage, ICCV 2025).

    import gilab
    image = gilab.io.load_image("photo.png")                 # (3, H, W) in [0, 1]
    result = gilab.fit(image, n=20_000, iters=500)          # GaussianImage's recipe
    gilab.render(result.gaussians, *image.shape[1:])         # (3, H, W)
"""

import importlib
import os

# torch's OpenMP runtime (which numba's "omp" layer shares) spins idle threads; on a machine whose cores are
# busy with other work that made small renders up to 30x slower here. Passive waiting costs nothing measurable
# on an idle machine. Only effective when gilab is imported before torch; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import render
from .fitting import FitResult, fit, random_gaussians
from .gaussians import Gaussians2D, ndc_to_pixels, pixels_to_ndc

__version__ = "0.1.0"
__all__ = [
    "FitResult",
    "Gaussians2D",
    "__version__",
    "datasets",
    "fit",
    "generator",
    "io",
    "metrics",
    "ndc_to_pixels",
    "pixels_to_ndc",
    "placement",
    "plots",
    "random_gaussians",
    "render",
]

# Submodules with heavy dependencies (scipy, numba, matplotlib) load on first use: `gilab.placement` just works,
# and `import gilab` stays fast.
_LAZY = {"io", "metrics", "datasets", "placement", "generator", "plots", "widgets", "reproduce", "training", "starts", "codec",
         "files", "errors"}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
