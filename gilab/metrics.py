"""Image quality metrics, computed as GaussianImage and Instant-GI evaluate (docs/method.md, section 3.4).

    psnr(render, target)      # dB, 10 log10(1 / MSE)
    ms_ssim(render, target)   # pytorch_msssim.ms_ssim(data_range=1, size_average=True)
    ssim(render, target)      # pytorch_msssim.ssim(data_range=1, size_average=True)

Every function takes ``(prediction, target)``: images (3, H, W) or batches (B, 3, H, W) (any channel count works)
with values in [0, 1]. The **first argument is clamped to [0, 1]**, because the papers score the clamped render;
the target is used as given. A batch gives the mean over its images (the papers average over the test set).
Results are 0-d tensors on the inputs' device, in their (promoted) floating dtype, and differentiable.

MS-SSIM needs images whose smaller side exceeds (11 - 1) * 2**4 = 160 pixels (five scales, four halvings, an
11-pixel window). For smaller images :func:`ms_ssim` raises :class:`~gilab.errors.ImageError` unless you choose
a fallback: ``fallback="scales"`` (as many scales as fit, weights renormalised; not comparable with the papers'
numbers) or ``fallback="ssim"`` (plain SSIM).
"""

from __future__ import annotations

import pytorch_msssim
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ImageError

__all__ = ["MS_SSIM_WEIGHTS", "WIN_SIZE", "ms_ssim", "mse", "psnr", "ssim"]

# Wang, Simoncelli and Bovik (2003), as in pytorch_msssim: the weight of each scale, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11  # Gaussian window, sigma 1.5 (pytorch_msssim's default)
WIN_SIGMA = 1.5


def _prepare(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(B, C, H, W) pair in a common float dtype, the prediction clamped to [0, 1]."""
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim not in (3, 4):
        raise ValueError(f"expected images (C, H, W) or (B, C, H, W), got shape {tuple(a.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"expected float images in [0, 1], got {a.dtype} and {b.dtype}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype).clamp(0, 1), b.to(dtype)
    return (a[None], b[None]) if a.ndim == 3 else (a, b)


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error per image, (B,) (or 0-d for a single image), after clamping ``a`` to [0, 1]."""
    single = a.ndim == 3
    a, b = _prepare(a, b)
    per_image = (a - b).square().flatten(1).mean(1)
    return per_image[0] if single else per_image


def psnr(a: Tensor, b: Tensor, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB: 10 log10(1 / MSE), peak 1, with ``a`` clamped to [0, 1].

    Args:
        a: prediction (3, H, W) or (B, 3, H, W); clamped to [0, 1] first.
        b: target, same shape, in [0, 1].
        reduction: "mean" (the mean of the per-image PSNRs, as the papers average) or "none" ((B,) values).

    Returns:
        0-d tensor (or (B,) with reduction="none"). Identical images give ``inf`` (MSE = 0), and so does
        the mean of a batch that contains such a pair.
    """
    per_image = mse(a, b)
    value = 10 * torch.log10(1 / per_image)  # 1 / 0 = inf, log10(inf) = inf: no special case needed
    if reduction == "none":
        return value
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return value.mean()


def _check_side(a: Tensor, need: int, what: str, hint: str = ""):
    height, width = a.shape[-2:]
    if min(height, width) < need:
        raise ImageError(f"image is {width}x{height} px: {what} needs the smaller side >= {need} px{hint}")


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity, ``pytorch_msssim.ssim(a.clamp(0, 1), b, data_range=1, size_average=True)``.

    Gaussian window 11 px, sigma 1.5, K = (0.01, 0.03). Images (3, H, W) or (B, 3, H, W), both sides >= 11 px.
    Returns a 0-d tensor, the mean over channels, pixels and images; 1 for identical images.
    """
    a, b = _prepare(a, b)
    _check_side(a, WIN_SIZE, "SSIM (11-pixel window)")
    return pytorch_msssim.ssim(a, b, data_range=1.0, size_average=True, win_size=WIN_SIZE, win_sigma=WIN_SIGMA)


def ms_ssim(a: Tensor, b: Tensor, fallback: str | None = None) -> Tensor:
    """Multi-scale SSIM as the papers compute it: ``pytorch_msssim.ms_ssim(data_range=1, size_average=True)``.

    Five scales with weights :data:`MS_SSIM_WEIGHTS`, so the smaller side must exceed 160 px. Images that
    large are always scored this way, whatever ``fallback`` says.

    Args:
        a: prediction (3, H, W) or (B, 3, H, W); clamped to [0, 1] first.
        b: target, same shape, in [0, 1].
        fallback: what to do with images whose smaller side is <= 160 px:
            None (default) raises :class:`ImageError`;
            "scales" uses the largest number of scales L that fits (side > 10 * 2**(L-1)) with the first L
            weights renormalised to sum 1;
            "ssim" returns :func:`ssim` instead.

    Returns:
        0-d tensor in [0, 1]; 1 for identical images.
    """
    if fallback not in (None, "scales", "ssim"):
        raise ValueError(f"fallback must be None, 'scales' or 'ssim', got {fallback!r}")
    a, b = _prepare(a, b)
    side = min(a.shape[-2:])
    levels = len(MS_SSIM_WEIGHTS)
    if side > (WIN_SIZE - 1) * 2 ** (levels - 1):
        return pytorch_msssim.ms_ssim(a, b, data_range=1.0, size_average=True, win_size=WIN_SIZE,
                                      win_sigma=WIN_SIGMA, weights=list(MS_SSIM_WEIGHTS))
    if fallback == "ssim":
        return ssim(a, b)
    if fallback is None:
        _check_side(a, (WIN_SIZE - 1) * 2 ** (levels - 1) + 1, "MS-SSIM (5 scales)",
                    "; pass fallback='scales' or fallback='ssim' to score smaller images")
    _check_side(a, WIN_SIZE, "MS-SSIM (one scale at least)")
    while side <= (WIN_SIZE - 1) * 2 ** (levels - 1):
        levels -= 1
    return _ms_ssim(a, b, MS_SSIM_WEIGHTS[:levels])


# The fewer-scales fallback: the same computation as pytorch_msssim (which hard-codes its size check for five
# scales), written out so that any number of scales works. tests/test_metrics.py checks it against the package.

def _gaussian_window(dtype, device) -> Tensor:
    x = torch.arange(WIN_SIZE, dtype=dtype, device=device) - WIN_SIZE // 2
    g = torch.exp(-x.square() / (2 * WIN_SIGMA**2))
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur, 'valid' convolution (no padding), per channel. x: (B, C, H, W)."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _ssim_and_cs(x: Tensor, y: Tensor, g: Tensor, k1: float = 0.01, k2: float = 0.03) -> tuple[Tensor, Tensor]:
    """Per-(image, channel) SSIM and contrast-structure term, (B, C) each, for data range 1."""
    c1, c2 = k1**2, k2**2
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    var_x = _blur(x * x, g) - mu_x.square()
    var_y = _blur(y * y, g) - mu_y.square()
    cov = _blur(x * y, g) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1) * cs
    return ssim_map.flatten(2).mean(-1), cs.flatten(2).mean(-1)


def _ms_ssim(x: Tensor, y: Tensor, weights) -> Tensor:
    """MS-SSIM over len(weights) scales, the weights renormalised to sum 1; mean over images and channels."""
    g = _gaussian_window(x.dtype, x.device)
    w = x.new_tensor(weights)
    w = w / w.sum()
    factors = []
    for level in range(len(weights)):
        s, cs = _ssim_and_cs(x, y, g)
        if level < len(weights) - 1:
            factors.append(torch.relu(cs))
            pad = [side % 2 for side in x.shape[-2:]]  # odd sides: pad, as pytorch_msssim does
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    factors.append(torch.relu(s))
    per_channel = torch.prod(torch.stack(factors) ** w.view(-1, 1, 1), dim=0)
    return per_channel.mean()
