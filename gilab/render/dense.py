"""The ``dense`` backend: every pixel against every Gaussian, in plain PyTorch.

This is the rendering model of docs/method.md, section 2, written as directly as it can be,
and the reference every fast backend is tested against. It holds an (H*W, N) tensor
per intermediate, so it refuses work above ``max_evaluations`` pixel-Gaussian pairs.

Model, for pixel centre p and Gaussian i (mean mu, conic Q, colour c, opacity o):
    sigma_i(p) = 1/2 d^T Q d,  d = p - mu,   v_i(p) = o exp(-sigma_i(p)),
    v_i(p) is set to exactly 0 where v_i(p) < 1/255 (the cutoff).
Sum blending:   C(p) = sum_i c_i min(1, v_i(p)).
Alpha blending: alpha_i = min(0.999, v_i), Gaussians composited front to back in index order
    (Gaussian 0 in front), T_0 = 1, C = sum_i c_i alpha_i T_i, T_{i+1} = T_i (1 - alpha_i);
    a Gaussian whose T_{i+1} would fall to 1e-4 or below is not composited and ends the pixel
    (gsplat 1.5.3's rule); finally C += T background.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..gaussians import CUTOFF, pixel_centres

#: Default limit on H * W * N; above it the dense backend refuses (each float32 intermediate is 4 bytes per pair).
MAX_EVALUATIONS = int(os.environ.get("GILAB_DENSE_MAX_EVALUATIONS", str(2**26)))

ALPHA_MAX = 0.999
T_MIN = 1e-4


def available() -> tuple[bool, str]:
    return True, "always (every pixel x every Gaussian; small problems only)"


def gaussian_values(means: Tensor, conics: Tensor, opacities: Tensor, pixels: Tensor) -> Tensor:
    """(P, N) o_i exp(-sigma_i(p)) with the 1/255 cutoff applied (exact zeros below it)."""
    d = pixels[:, None, :] - means[None, :, :]
    dx, dy = d[..., 0], d[..., 1]
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    v = opacities * torch.exp(-sigma)
    return torch.where(v >= CUTOFF, v, torch.zeros_like(v))


def rasterize(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, height: int, width: int,
              blend: str = "sum", background: Tensor | None = None,
              max_evaluations: int | None = None) -> Tensor:
    """Render (3, H, W). means (N,2) px, conics (N,3), colors (N,3), opacities (N,); background (3,) for alpha."""
    limit = MAX_EVALUATIONS if max_evaluations is None else max_evaluations
    n = means.shape[0]
    if height * width * n > limit:
        raise MemoryError(
            f"dense backend: {height}x{width} pixels x {n} Gaussians = {height * width * n:,} evaluations "
            f"exceeds its limit of {limit:,} (set GILAB_DENSE_MAX_EVALUATIONS to raise it); "
            "use backend='cpu' or 'torch' for problems of this size")
    pixels = pixel_centres(height, width, means.device, means.dtype)
    v = gaussian_values(means, conics, opacities, pixels)  # (P, N)
    if blend == "sum":
        image = torch.clamp(v, max=1.0) @ colors  # (P, 3)
    elif blend == "alpha":
        image = _alpha_composite(v, colors, background)
    else:
        raise ValueError(f"blend must be 'sum' or 'alpha', got {blend!r}")
    return image.T.reshape(3, height, width)


def _alpha_composite(v: Tensor, colors: Tensor, background: Tensor | None) -> Tensor:
    alpha = torch.clamp(v, max=ALPHA_MAX)
    one_minus = 1 - alpha
    t_after = torch.cumprod(one_minus, dim=1)                       # T_{i+1}
    t_before = torch.cat([torch.ones_like(alpha[:, :1]), t_after[:, :-1]], 1)  # T_i
    # T never increases, so the composited Gaussians are a prefix: all those with T_{i+1} > T_MIN.
    included = t_after > T_MIN
    weights = torch.where(included, alpha * t_before, torch.zeros_like(alpha))
    image = weights @ colors
    if background is not None:
        t_final = torch.where(included, one_minus, torch.ones_like(one_minus)).prod(dim=1)
        image = image + t_final[:, None] * background.to(image)[None, :]
    return image
