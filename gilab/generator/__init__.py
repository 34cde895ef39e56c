"""Instant GaussianImage's generator: one network pass places and shapes the Gaussians (docs/method.md, section 4).

    from gilab.generator import Generator
    gen = Generator.from_pretrained()          # the compact model shipped in gilab/weights/
    gaussians = gen(image)                     # Gaussians2D, N adapts to the image's content

Modules: ``config`` (sizes), ``model`` (ConvNeXt-UNet + position head), ``fields`` (per-triangle MLPs),
``colour_step`` (one ISRA rescaling of the colours after the fields), ``generator`` (the pipeline, weights I/O).
Training lives in :mod:`gilab.training`.
"""

from .config import GeneratorConfig
from .fields import GaussianFields, Mesh
from .generator import Generator
from .model import ConvNeXtBlock, FeatureNet

__all__ = ["ConvNeXtBlock", "FeatureNet", "GaussianFields", "Generator", "GeneratorConfig", "Mesh"]
