"""One multiplicative colour step after the fields: every Gaussian's colour is rescaled so that, over its own
footprint, the render matches the image.

    g = apply_colour_step(gaussians, image)                                 # a new Gaussians2D
    ratio = colour_step_ratio(means, conics, colors, opacities, image)     # or the factors alone, (N,)

Why: sum blending adds overlapping Gaussians, so the colour a Gaussian should carry depends on how much its
neighbours already put on its pixels. The opacity field predicts a factor on the RGB sampled at the mean without
seeing that overlap, and `benchmarks/generator_bound.py` measured what this costs: with the generator's own
Gaussians, the best factor per Gaussian renders 2.4 dB better than the network's.

The step is one iteration of ISRA, the image-space reconstruction algorithm (Daube-Witherspoon and
Muehllehner, 1986), on the per-Gaussian factors a (all 1 before the step), with G_i the Gaussian's footprint:

    ratio_i = <G_i c_i, image> / <G_i c_i, render>,     render = sum_j G_j c_j

Both inner products are gradients of one render (d<render, X>/dc_i = sum_p G_i(p) X(p)), so the step costs a
render and two backward passes. It is not an optimisation loop: no learning rate, one fixed step, its time is part
of the generator's. Ratios are clipped to ``limits`` so that a Gaussian almost off the canvas cannot blow up.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..gaussians import Gaussians2D
from ..render import rasterize

LIMITS = (0.5, 2.0)


def colour_step_ratio(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, image: Tensor,
                      limits: tuple[float, float] = LIMITS, backend: str = "auto") -> Tensor:
    """The ISRA factor per Gaussian, (N,), without a graph: multiply ``colors`` by it.

    means (N, 2) px, conics (N, 3), colors (N, 3), opacities (N,): a sum-blended set on the canvas of
    ``image`` (3, H, W), the target in [0, 1]. A Gaussian that covers no pixel keeps its colour (ratio 1).
    """
    height, width = image.shape[-2:]
    with torch.enable_grad():
        c = colors.detach().clone().requires_grad_(True)
        render = rasterize(means.detach(), conics.detach(), c, opacities.detach(), height, width, "sum", backend)
        # d<render, X>/dc_i = sum_p G_i(p) X(p); dotted with c_i it is <G_i c_i, X>.
        wanted, drawn = [(torch.autograd.grad(render, c, grad_outputs=x, retain_graph=True)[0] * c.detach()).sum(1)
                         for x in (image.detach().to(render.dtype), render.detach())]
    ratio = torch.where(drawn > 1e-12, wanted / drawn.clamp(min=1e-12), torch.ones_like(drawn))
    return ratio.clamp(*limits)


def apply_colour_step(gaussians: Gaussians2D, image: Tensor, limits: tuple[float, float] = LIMITS,
                      backend: str = "auto") -> Gaussians2D:
    """The same Gaussians with every colour multiplied by :func:`colour_step_ratio` against ``image`` (3, H, W).

    Returns a new set; its colours keep their graph (the ratio has none), the other tensors are shared.
    """
    g = gaussians
    ratio = colour_step_ratio(g.means, g.conics(), g.colors, g.opacities, image, limits, backend)
    return replace(g, colors=g.colors * ratio[:, None])
