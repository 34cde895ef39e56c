"""The ``gsplat`` backend: gsplat 1.5.3's CUDA tile rasterizer, alpha blending only.

gsplat composites 2D Gaussians front to back in 16x16-pixel tiles with exactly our alpha model
(docs/method.md, section 2.5): alpha = min(0.999, o exp(-sigma)), contributions below 1/255 skipped, a Gaussian whose
T_{i+1} would be <= 1e-4 ends the pixel, pixel centres at (j + 0.5, i + 0.5), conics packed (a, b, c). We call its
three stages directly with our 2D means, conics, colours and opacities (no camera, no projection):

    isect_tiles          which tiles each Gaussian's box touches, sorted by (tile, depth)
    isect_offset_encode  where each tile's list starts
    rasterize_to_pixels  the per-pixel compositing, forward and backward (differentiable)

The "depth" only orders the Gaussians inside a tile. gsplat sorts by its raw 32 bits, so we pass the Gaussian's
index as those bits: Gaussian 0 is in front, the index order of our model, exact for any N.

gsplat has **no sum blending**; on CUDA, sum blending goes through backend ``"torch"`` (``backend="auto"``
picks it). gsplat computes in float32 (other dtypes are cast, and the result cast back) with CUDA's fast
``__expf``, so it agrees with the dense reference to float32 rounding rather than bit for bit.
Its CUDA code is compiled on first use (minutes, needs the CUDA toolkit) unless a prebuilt wheel is installed;
nothing here touches gsplat's CUDA parts unless CUDA is available.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math

import torch
from torch import Tensor

from ..gaussians import CUTOFF

#: gsplat's tile edge, pixels.
TILE_SIZE = 16
SUPPORTED = "1.5"


def available() -> tuple[bool, str]:
    """(usable, why): needs CUDA and gsplat 1.5.x. Never imports gsplat's CUDA code (its JIT build fails
    with a misleading error on a machine without CUDA)."""
    if not torch.cuda.is_available():
        return False, "needs CUDA (torch.cuda.is_available() is False); gsplat has no CPU path"
    if importlib.util.find_spec("gsplat") is None:
        return False, "gsplat is not installed (pip install gsplat==1.5.3)"
    version = importlib.metadata.version("gsplat")
    from packaging.version import Version

    if not (Version(SUPPORTED) <= Version(version) < Version("1.6")):
        return False, f"gsplat {version} found; this backend is written against gsplat {SUPPORTED}.x"
    return True, f"gsplat {version} on {torch.cuda.get_device_name()}"


def rasterize(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, height: int, width: int,
              blend: str = "alpha", background: Tensor | None = None) -> Tensor:
    """Alpha-blend N Gaussians to a (3, H, W) image with gsplat on CUDA, differentiably.

    Args:
        means: (N, 2) centres (x, y), pixels, CUDA.
        conics: (N, 3) inverse covariances (a, b, c) for Q = [[a, b], [b, c]], 1 / pixels^2.
        colors: (N, 3) colours.
        opacities: (N,) opacities.
        height, width: image size, pixels.
        blend: must be ``"alpha"``; ``"sum"`` raises (sum on CUDA goes through backend ``"torch"``).
        background: (3,) colour behind the Gaussians (default black).

    Returns:
        (3, H, W) image in the dtype of ``means`` (computed in float32).
    """
    if blend != "alpha":
        raise ValueError(f"backend 'gsplat' only does alpha blending (got blend={blend!r}); sum blending on CUDA "
                         "goes through backend 'triton' (backend 'torch' without triton; backend='auto' picks it)")
    if means.device.type != "cuda":
        raise ValueError(f"backend 'gsplat' renders CUDA tensors, got {means.device}; use backend 'cpu' or 'auto'")
    ok, why = available()
    if not ok:
        raise RuntimeError(f"backend 'gsplat' is not available: {why}")
    from gsplat import isect_offset_encode, isect_tiles, rasterize_to_pixels

    dtype, n = means.dtype, means.shape[0]
    if n == 0:
        image = means.new_zeros(3, height, width)
        return image + background.to(image).view(3, 1, 1) if background is not None else image
    means, conics, colors, opacities = (t.float().contiguous() for t in (means, conics, colors, opacities))
    radii = footprint_radii(conics.detach(), opacities.detach())
    order_bits = depth_order(n, means.device)
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    # one image: gsplat's leading batch dimension is 1
    _, isect_ids, flatten_ids = isect_tiles(means.detach()[None], radii[None], order_bits[None], TILE_SIZE,
                                            tiles_x, tiles_y)
    offsets = isect_offset_encode(isect_ids, 1, tiles_x, tiles_y)
    backgrounds = None if background is None else background.float().reshape(1, 3)
    image, _ = rasterize_to_pixels(means[None], conics[None], colors[None], opacities[None], width, height,
                                   TILE_SIZE, offsets, flatten_ids, backgrounds=backgrounds)
    return image[0].permute(2, 0, 1).to(dtype)  # (1, H, W, 3) -> (3, H, W)


def depth_order(n: int, device=None) -> Tensor:
    """(N,) float32 "depths" whose bit patterns are 0, 1, ..., N - 1: gsplat sorts a tile's Gaussians by the raw
    32 bits of their depth (zero-extended), so this puts them in index order, Gaussian 0 in front, for any N
    (float values i would lose integers above 2^24)."""
    return torch.arange(n, dtype=torch.int32, device=device).view(torch.float32)


def footprint_radii(conics: Tensor, opacities: Tensor) -> Tensor:
    """(N, 2) int32 half-extents (x, y), pixels, of each Gaussian's cutoff ellipse, for gsplat's tile binning.

    The ellipse d^T Q d <= 2 ln(255 o) has half-widths sqrt(2 ln(255 o) Sigma_xx) and sqrt(2 ln(255 o) Sigma_yy)
    with Sigma = Q^-1; rounded up and padded by a pixel so that rounding never drops a tile (gsplat then tests
    every pixel exactly). Zero (gsplat skips the Gaussian) where o < 1/255, where the conic is not positive
    definite, or where a parameter is not finite.
    """
    q, o = conics.double(), opacities.double()
    a, b, c = q.unbind(-1)
    det = a * c - b * b
    level = 2 * torch.log(torch.clamp(o, min=CUTOFF) * 255.0)
    valid = (o >= CUTOFF) & (a > 0) & (det > 0) & torch.isfinite(q).all(-1) & torch.isfinite(o)
    safe_det = torch.where(valid, det, torch.ones_like(det))
    half = torch.sqrt(level[:, None] * torch.stack([c, a], -1) / safe_det[:, None])
    radii = torch.ceil(half) + 1
    radii = torch.where(valid[:, None], radii.clamp(max=2**30), torch.zeros_like(radii))
    return radii.nan_to_num(0.0).to(torch.int32)
