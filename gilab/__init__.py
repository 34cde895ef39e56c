"""gilab: learn, reproduce and use 2D-Gaussian image representations (Instant GaussianImage, ICCV 2025)."""

from . import render
from .gaussians import Gaussians2D, ndc_to_pixels, pixels_to_ndc

__version__ = "0.1.0"
__all__ = ["Gaussians2D", "render", "pixels_to_ndc", "ndc_to_pixels", "__version__"]
