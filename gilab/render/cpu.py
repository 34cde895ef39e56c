"""The ``cpu`` backend: fused numba kernels on every CPU core, the fast path without a GPU.

The model is exactly the dense reference's (:mod:`gilab.render.dense`, docs/method.md, section 2): pixel centres at
(j + 0.5, i + 0.5), sigma = 1/2 d^T Q d, v = o exp(-sigma) with contributions below 1/255 exactly zero;
sum blending C = sum_i c_i min(1, v_i); alpha blending front to back in index order with gsplat's stopping rule.
Only pixels inside each Gaussian's cutoff ellipse are visited (exact row spans), and there every pixel takes the
same floating-point test as the dense reference, so the two agree to float32 rounding, images and gradients.

Cost is linear in pixels plus pixel-Gaussian evaluations; memory is a few arrays the size of the image plus a few
numbers per Gaussian, whatever the Gaussians' sizes. The kernels live in :mod:`gilab.render._cpu_kernels`; this
module wraps them in a :class:`torch.autograd.Function` that returns gradients for means, conics, colours,
opacities (and the background, alpha only); the parametrisation's chain rule (Cholesky, rotation-scale) stays in
PyTorch. numba compiles each kernel on its first use per dtype (float32, float64), tens of seconds once, then
loads it from its on-disk cache (``cache=True``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor


def available() -> tuple[bool, str]:
    """(usable, why): needs numba; runs on CPU tensors only."""
    if importlib.util.find_spec("numba") is None:
        return False, "numba is not installed (pip install numba)"
    import numba

    return True, f"numba {numba.__version__} on {numba.config.NUMBA_NUM_THREADS} CPU threads"


def rasterize(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, height: int, width: int,
              blend: str = "sum", background: Tensor | None = None) -> Tensor:
    """Render N Gaussians to a (3, H, W) image on the CPU, differentiably.

    Args:
        means: (N, 2) centres (x, y), pixels.
        conics: (N, 3) inverse covariances (a, b, c) for Q = [[a, b], [b, c]], 1 / pixels^2.
        colors: (N, 3) colours.
        opacities: (N,) opacities (sum blending clamps o w at 1, alpha blending at 0.999).
        height, width: image size, pixels.
        blend: ``"sum"`` or ``"alpha"`` (index order, Gaussian 0 in front).
        background: (3,) colour behind the Gaussians, alpha blending only (ignored by sum blending).

    Returns:
        (3, H, W) image in the dtype of ``means`` (float32 or float64; the other tensors are cast to it).
    """
    if blend not in ("sum", "alpha"):
        raise ValueError(f"blend must be 'sum' or 'alpha', got {blend!r}")
    tensors = (means, conics, colors, opacities) + ((background,) if background is not None else ())
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(f"backend 'cpu' renders CPU tensors, got one on {t.device}; on a GPU use backend "
                             "'gsplat' (alpha) or 'torch', or 'auto' to pick one")
    dtype = means.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"backend 'cpu' computes in float32 or float64, got {dtype}")
    n = means.shape[0]
    expected = {"means": (means, (n, 2)), "conics": (conics, (n, 3)), "colors": (colors, (n, 3)),
                "opacities": (opacities, (n,))}
    if background is not None:
        expected["background"] = (background.reshape(-1), (3,))
    for name, (t, shape) in expected.items():  # the kernels index without bounds checks
        if tuple(t.shape) != shape:
            raise ValueError(f"backend 'cpu': {name} must have shape {shape}, got {tuple(t.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    conics, colors, opacities = (t.to(dtype) for t in (conics, colors, opacities))
    if blend == "sum" or background is None:
        background = None
    else:
        background = background.to(dtype).reshape(3)
    return _RasterizeCPU.apply(means, conics, colors, opacities, background, int(height), int(width), blend)


def evaluations(means: Tensor, conics: Tensor, opacities: Tensor, height: int, width: int) -> int:
    """Pixel-Gaussian pairs with o exp(-sigma) >= 1/255: the work any exact sum-blend render must do (counted with
    the kernels' own test, not timed). Divided by H W, it is how many Gaussians cover a pixel on average.

    Args:
        means: (N, 2) pixels; conics: (N, 3) 1 / pixels^2; opacities: (N,); height, width: pixels.
    """
    import numba

    k = _kernels()
    m = _numpy(means)
    q, o = _numpy(conics).astype(m.dtype, copy=False), _numpy(opacities).reshape(-1).astype(m.dtype, copy=False)
    level2, rows, band_start, band_ids, _ = k.plan(m, q, o, height, float(np.finfo(m.dtype).eps))
    inside, _ = k.count_evaluations(m, q, o, level2, rows, band_start, band_ids, height, width,
                                    numba.get_num_threads())
    return int(inside)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _kernels():
    from . import _cpu_kernels  # imported on first use: numba takes a second to load

    return _cpu_kernels


# Between the kernels, only numpy (single-threaded) touches the arrays: a multi-threaded torch op on a busy
# machine waits for every thread of its pool, and a handful of them cost more than the kernels themselves.
class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, conics, colors, opacities, background, height, width, blend):
        import numba

        k = _kernels()
        m, q, c, o = (_numpy(t) for t in (means, conics, colors, opacities))
        plan = k.plan(m, q, o, height, float(np.finfo(m.dtype).eps))
        level2, rows, band_start, band_ids, _ = plan
        if blend == "sum":
            padded = np.zeros((3, height, width + k.LANES), m.dtype)  # rows padded: see forward_sum
            k.forward_sum(m, q, c, o, level2, rows, band_start, band_ids, height, width, padded.reshape(-1),
                          numba.get_num_threads())
            image = np.ascontiguousarray(padded[:, :, :width])
            ctx.state = None
        else:
            image = np.zeros((3, height, width), m.dtype)
            transmittance = np.ones((height, width), np.float64)
            stop = np.full((height, width), o.shape[0], np.int32)
            k.forward_alpha(m, q, c, o, level2, rows, band_start, band_ids, height, width, image.reshape(-1),
                            transmittance.reshape(-1), stop.reshape(-1), numba.get_num_threads())
            if background is not None:
                image += (transmittance[None] * _numpy(background).astype(np.float64)[:, None, None]).astype(m.dtype)
            ctx.state = (transmittance, stop)
        ctx.plan, ctx.size, ctx.blend = plan, (height, width), blend
        ctx.save_for_backward(means, conics, colors, opacities, background)
        return torch.from_numpy(image)

    @staticmethod
    def backward(ctx, grad_image):
        import numba

        k = _kernels()
        means, conics, colors, opacities, background = ctx.saved_tensors
        height, width = ctx.size
        level2, rows, band_start, band_ids, order = ctx.plan
        m, q, c, o = (_numpy(t) for t in (means, conics, colors, opacities))
        grad = grad_image.detach().numpy()  # (3, H, W), possibly strided (e.g. the expanded grad of .sum())
        sums = np.zeros((o.shape[0], k.N_SUMS), np.float64)
        grad_background = None
        if ctx.blend == "sum":
            padded = np.zeros((3, height, width + k.LANES), m.dtype)
            padded[:, :, :width] = grad
            k.backward_sum(m, q, c, o, level2, rows, order, padded.reshape(-1), height, width, sums,
                           32 * numba.get_num_threads(), numba.get_num_threads())
        else:
            transmittance, stop = ctx.state
            if background is not None:
                behind = transmittance[None] * _numpy(background).astype(np.float64)[:, None, None]
                if ctx.needs_input_grad[4]:
                    grad_background = torch.from_numpy((grad * transmittance[None]).sum((1, 2)).astype(m.dtype))
            else:
                behind = np.zeros((3, height, width), np.float64)
            partial = np.empty((band_ids.shape[0], k.N_SUMS), np.float64)
            k.backward_alpha(m, q, c, o, level2, rows, band_start, band_ids, height, width,
                             np.ascontiguousarray(grad, m.dtype).reshape(-1), transmittance.reshape(-1).copy(),
                             behind.reshape(-1), stop.reshape(-1), partial, numba.get_num_threads())
            k.reduce_partials(band_ids, partial, sums)
        grads = (np.empty_like(m), np.empty_like(q), np.empty_like(c), np.empty_like(o))
        k.gradients_from_sums(sums, q, o, *grads)
        return (*(torch.from_numpy(g) for g in grads), grad_background, None, None, None)
