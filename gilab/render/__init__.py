"""Rendering 2D Gaussians to images: one function, several interchangeable backends.

    image = gilab.render(gaussians, height, width, blend="sum", backend="auto")   # (3, H, W)

Backends (each a module with ``available()`` and ``rasterize(...)``, all differentiable):

- ``dense``  every pixel x every Gaussian in plain PyTorch; the reference the others are tested against.
- ``torch``  sparse PyTorch: per-Gaussian footprints inside the cutoff ellipse, scattered with
             ``index_add_``; CPU and CUDA.
- ``cpu``    fused numba kernels on all CPU cores (the fast path on a laptop).
- ``gsplat`` gsplat's CUDA tile rasterizer (alpha blending only; CUDA only).
- ``triton`` a Triton tile rasterizer (sum blending only; CUDA, or CPU through Triton's interpreter for tests).

``backend="auto"`` picks: CUDA + alpha -> gsplat, CUDA + sum -> triton, CPU -> cpu (each falling back to
torch when its dependency is missing). :func:`available_backends` says what this machine has, and why not the rest.

This package is also callable (``gilab.render(...)`` is :func:`render`), so that ``gilab.render``
can be both the function users call and the namespace that holds ``available_backends``.
"""

from __future__ import annotations

import importlib
import math
import sys
import types

import torch
from torch import Tensor

from ..errors import ArgumentError, BackendError
from ..gaussians import Gaussians2D

BACKENDS = ("dense", "torch", "cpu", "gsplat", "triton")
_MODULES = {"dense": "dense", "torch": "sparse", "cpu": "cpu", "gsplat": "gsplat", "triton": "triton"}


def backend_module(name: str):
    """The module implementing backend ``name`` (imported lazily: gsplat and numba are heavy)."""
    if name not in _MODULES:
        raise ArgumentError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} or 'auto'")
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


def available_backends(device: torch.device | str | None = None) -> dict[str, tuple[bool, str]]:
    """{backend: (usable, why)} for this machine (and ``device``, default CUDA when present)."""
    out = {}
    for name in BACKENDS:
        try:
            out[name] = backend_module(name).available()
        except ImportError as exc:  # a backend whose optional dependency is missing
            out[name] = (False, f"cannot import: {exc}")
    return out


def pick_backend(device: torch.device, blend: str) -> str:
    """The backend ``"auto"`` chooses for tensors on ``device`` and this blend mode."""
    if device.type == "cuda":
        fast = "gsplat" if blend == "alpha" else "triton"
        return fast if backend_module(fast).available()[0] else "torch"
    return "cpu" if backend_module("cpu").available()[0] else "torch"  # without importing triton and gsplat


def rasterize(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, height: int, width: int,
              blend: str = "sum", backend: str = "auto", background: Tensor | None = None) -> Tensor:
    """Render raw tensors to (3, H, W): means (N,2) px, conics (N,3) = (a, b, c), colors (N,3), opacities (N,)."""
    if blend not in ("sum", "alpha"):
        raise ArgumentError(f"blend must be 'sum' or 'alpha', got {blend!r}")
    if height < 1 or width < 1:
        raise ArgumentError(f"image size must be positive, got {height}x{width}")
    if backend == "auto":
        backend = pick_backend(means.device, blend)
    try:
        module = backend_module(backend)
        ok, why = module.available()
    except ImportError as exc:
        ok, why = False, f"cannot import: {exc}"
    if not ok:
        raise BackendError(f"render backend {backend!r} is not available here: {why}")
    return module.rasterize(means, conics, colors, opacities, int(height), int(width),
                            blend=blend, background=background)


def render(gaussians: Gaussians2D, height: int | None = None, width: int | None = None, blend: str = "sum",
           backend: str = "auto", scale: float = 1.0, background: Tensor | None = None) -> Tensor:
    """Render a :class:`~gilab.Gaussians2D` to an image.

    Args:
        gaussians: the set to draw (any parametrisation; gradients flow to all of its tensors).
        height, width: the canvas the Gaussians live on, pixels (default: ``gaussians.size``).
        blend: ``"sum"`` (GaussianImage's accumulated sum) or ``"alpha"`` (front-to-back, index order).
        backend: ``"auto"``, ``"dense"``, ``"torch"``, ``"cpu"``, ``"gsplat"`` or ``"triton"``.
        scale: render at ``scale`` times the resolution: the output is round(H*scale) x round(W*scale)
            and means and standard deviations are multiplied by ``scale``.
        background: (3,) colour behind the Gaussians, alpha blending only (default black).

    Returns:
        (3, H', W') tensor on the Gaussians' device and dtype, unclamped.

    Raises:
        ArgumentError: a size or scale that gives no pixel, or more than ``gilab.io.max_pixels_limit()``.
        NonFiniteError: NaN or infinity in the Gaussians (they would paint black holes).
    """
    if height is None or width is None:
        if gaussians.size is None:
            raise ArgumentError("give height and width (these Gaussians carry no canvas size)")
        height, width = gaussians.size
    height, width = _output_size(height, width, scale)
    gaussians.check()
    if scale != 1.0:
        gaussians = gaussians.scaled(scale)
    return rasterize(gaussians.means, gaussians.conics(), gaussians.colors, gaussians.opacities,
                     height, width, blend=blend, backend=backend, background=background)


def _output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(round(H scale), round(W scale)), checked: at least one pixel, at most the image pixel limit."""
    from ..io import max_pixels_limit

    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ArgumentError(f"scale must be a positive finite number, got {scale!r}")
    if int(height) < 1 or int(width) < 1:
        raise ArgumentError(f"image size must be positive, got {height}x{width}")
    out_h, out_w = round(height * scale), round(width * scale)
    if out_h < 1 or out_w < 1:
        raise ArgumentError(f"scale {scale:g} makes the {height}x{width} canvas smaller than one pixel")
    limit = max_pixels_limit()
    if out_h * out_w > limit:
        raise ArgumentError(f"scale {scale:g} gives {out_w}x{out_h} = {out_h * out_w:,} pixels, over the limit of "
                            f"{limit:,} (set GILAB_MAX_PIXELS to allow it)")
    return out_h, out_w


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Tensor:
        return render(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
