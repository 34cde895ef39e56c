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

import torch
from torch import Tensor

from .errors import ArgumentError
from .gaussians import Gaussians2D

STARTS = ("net", "quadtree", "random")
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
            "quadtree" (at ``n`` if given) or "random" (``n`` Gaussians, default H W / 40).
        param: the random start's parametrisation, "cholesky" or "rs".
        seed: the random start's seed.
        generator: a :class:`gilab.generator.Generator` to use (default: the shipped weights).
    """
    if kind not in STARTS:
        raise ArgumentError(f"unknown start {kind!r}; choose one of {', '.join(STARTS)}")
    _, height, width = image.shape
    tic = time.perf_counter()
    if kind == "net":
        if generator is None:
            from .generator import Generator

            generator = Generator.from_pretrained()
        gaussians = generator(image, kernel_size=kernel_size, density=density, target_count=n)
    elif kind == "quadtree":
        from .placement import quadtree_init

        gaussians = quadtree_init(image.cpu(), target_count=n)
    else:
        n = n if n is not None else max(1, height * width // 40)
        gaussians = random_gaussians(n, height, width, param=param, seed=seed)
    return gaussians, time.perf_counter() - tic
