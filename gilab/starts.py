"""Where a fit starts: GaussianImage's random start, the quad-tree, or the network, chosen by name.

    gaussians, seconds = make_start("net", image)                  # the generator picks N
    gaussians, seconds = make_start("quadtree", image, n=40_000)   # the same N for every start
    gaussians = random_gaussians(40_000, 512, 768)                 # GaussianImage's own start

The fitter (``gilab.fit(image, init="net")``), the time-to-quality study, the start-comparison widget and the
CLI all make their starts here, so a "net start" means the same thing everywhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
from torch import Tensor

from .errors import ArgumentError
from .gaussians import Gaussians2D

STARTS = ("net", "quadtree", "random")
#: Every start make_start() builds: the study's three and "net-zoom", the network shown the image downscaled by
#: one of ZOOM_FACTORS, for counts far below its own (a codec's; figures/codec_start_scale.json).
KINDS = (*STARTS, "net-zoom")
ZOOM_FACTORS = (1, 2, 4, 8)
#: Pixels per Gaussian the shipped generator places at density 1 (Kodak: 393,216 / 49,107 on average).
PIXELS_PER_GAUSSIAN = 8.0
#: GaussianImage's random start: Cholesky (l1, l2, l3) = U[0,1)^3 + CHOLESKY_BOUND, scales |U[0,1)^2 + SCALE_BOUND|.
CHOLESKY_BOUND = (0.5, 0.0, 0.5)
SCALE_BOUND = 0.5


def random_gaussians(n: int, height: int, width: int, param: str = "cholesky", seed: int = 0,
                     device=None, dtype=torch.float32) -> Gaussians2D:
    """GaussianImage's random start: means uniform over the image, colours U[0,1)^3, opacity 1;
    Cholesky (l1, l2, l3) = U[0,1)^3 + (0.5, 0, 0.5) px, or scales |U[0,1)^2 + 0.5| px and
    angle 2 pi sigmoid(U[0,1)) radians."""
    if param not in ("cholesky", "rs"):
        raise ArgumentError(f"param must be 'cholesky' or 'rs', got {param!r}")
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen, dtype=dtype)
    means = rand(n, 2) * torch.tensor([width, height], dtype=dtype)
    colors = rand(n, 3)
    if param == "cholesky":
        g = Gaussians2D.from_cholesky(means, rand(n, 3) + torch.tensor(CHOLESKY_BOUND, dtype=dtype), colors,
                                      size=(height, width))
    else:
        g = Gaussians2D.from_scale_rotation(means, (rand(n, 2) + SCALE_BOUND).abs(),
                                            2 * math.pi * torch.sigmoid(rand(n)), colors, size=(height, width))
    return g.to(device) if device is not None else g


def make_start(kind: str, image: Tensor, n: int | None = None, *, param: str = "cholesky", seed: int = 0,
               kernel_size: int = 3, density: float = 1.0, generator=None) -> tuple[Gaussians2D, float]:
    """(Gaussians2D, seconds it took) for the start ``kind`` on ``image`` (3, H, W) in [0, 1].

    Args:
        kind: "net" (the generator; ``n`` is its target count, else ``kernel_size`` and ``density`` set N),
            "quadtree" (at ``n`` if given), "random" (``n`` Gaussians, default H W / 40) or "net-zoom" (the
            generator at ``n`` far below its own count: see :func:`zoomed_net_start`; without ``n``, as "net").
        param: the random start's parametrisation, "cholesky" or "rs".
        seed: the random start's seed.
        generator: a :class:`gilab.generator.Generator` to use (default: the shipped weights).
    """
    if kind not in KINDS:
        raise ArgumentError(f"unknown start {kind!r}; choose one of {', '.join(KINDS)}")
    _, height, width = image.shape
    tic = time.perf_counter()
    if kind in ("net", "net-zoom"):
        if generator is None:
            from .generator import Generator

            generator = Generator.from_pretrained()
        if kind == "net-zoom" and n is not None:
            gaussians, _ = zoomed_net_start(generator, image, n)
        else:
            gaussians = generator(image, kernel_size=kernel_size, density=density, target_count=n)
    elif kind == "quadtree":
        from .placement import quadtree_init

        gaussians = quadtree_init(image.cpu(), target_count=n)
    else:
        n = n if n is not None else max(1, height * width // 40)
        gaussians = random_gaussians(n, height, width, param=param, seed=seed)
    return gaussians, time.perf_counter() - tic


def zoomed_net_start(generator, image: Tensor, n: int, own: int | None = None) -> tuple[Gaussians2D, int]:
    """(Gaussians2D at full size, the downscale factor): about ``n`` Gaussians from the generator shown ``image``
    (3, H, W) area-downscaled by the factor in ZOOM_FACTORS at which its own count is nearest to ``n``, zoomed back
    up, with the colour step at full size.

    Why: asked for far fewer Gaussians than it places by itself (a codec's 1-6k on a Kodak image, against
    40-59k), the generator otherwise lowers the density of its position map, and its fields then work at a
    density they never saw in training; at a smaller scale the same count is its usual density. Measured on 5
    Kodak images: 1-2 dB better starts in half to a fifth of the time (``benchmarks/codec_start_scale.py``).

    Args:
        generator: a :class:`gilab.generator.Generator`.
        image: (3, H, W) float in [0, 1].
        n: the number of Gaussians wanted (reached within the generator's 2 % count tolerance).
        own: the generator's own count on the full image if known (else estimated as H W / PIXELS_PER_GAUSSIAN).
    """
    import torch.nn.functional as F

    from .generator.colour_step import apply_colour_step

    height, width = image.shape[-2:]
    own = own if own is not None else height * width / PIXELS_PER_GAUSSIAN
    factor = min(ZOOM_FACTORS, key=lambda f: abs(math.log(own / f**2 / n)))
    while True:
        small = image if factor == 1 else F.interpolate(image[None], size=(height // factor, width // factor),
                                                         mode="area")[0]
        try:
            gaussians = generator(small, target_count=n)
            break
        except ArgumentError:  # more than this scale can hold: look closer
            if factor == 1:
                raise
            factor //= 2
    if factor == 1:
        return gaussians, 1
    # zoom by the exact ratio of the sizes (H // factor may round): means and spreads, then the size the render uses
    zoomed = gaussians.scaled(height / small.shape[-2])
    return apply_colour_step(replace(zoomed, size=(height, width)), image), factor
