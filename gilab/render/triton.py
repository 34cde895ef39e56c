"""The ``triton`` backend: a 16x16-tile rasterizer for sum blending, forward and backward, in Triton.

The model is exactly the dense reference's (:mod:`gilab.render.dense`), sum blending only: pixel centres at
(j + 0.5, i + 0.5), sigma = 1/2 d^T Q d, v = o exp(-sigma), exactly zero where v < 1/255 (the same float32 test),
C = sum_i c_i min(1, v_i). Every Gaussian over a tile counts (no cap), at any image size, with means off the image
and Gaussians larger than a tile or the image. Alpha blending stays with ``gsplat`` (CUDA) and ``cpu``.

Why Triton rather than a hand-written CUDA extension: the kernels are one Python file with no build step, compiled
for the GPU on first use (torch's CUDA wheels bring triton with them), and Triton's interpreter runs the very same
kernels on CPU tensors in NumPy, so the suite holds them to the dense reference on every machine, GPU or not.

Three stages (N Gaussians; T = ceil(H/16) x ceil(W/16) tiles, row-major; P (tile, Gaussian) pairs):

1. :func:`bin_tiles`, PyTorch ops on the device: each Gaussian's cutoff box in tiles (:func:`tile_boxes`), the P
   pairs expanded with ``repeat_interleave``, one sort of tile * N + index, each tile's range of the sorted list.
2. ``_forward_kernel``, one program per tile: its 256 pixels against its Gaussians, BLOCK at a time, summed in
   registers, stored to the (3, H, W) image.
3. ``_backward_kernel``, one program per tile: for each Gaussian of a block, its gradient terms summed over the
   tile's pixels (``tl.sum``), then added into an (N, 9) float32 buffer with ``tl.atomic_add``.

Units: means (x, y) in pixels, conics (a, b, c) of Q = [[a, b], [b, c]] in 1 / pixels^2. Computes in float32:
other float dtypes are cast, and the image and every gradient come back in the inputs' dtypes (as gsplat does).
On a GPU ``tl.exp`` is the fast hardware exponential (gsplat's ``__expf`` too), so a contribution within about
1e-6 (relative) of the cutoff can fall the other way than in dense; in the interpreter it is NumPy's float32 exp.

Where it runs: CUDA tensors when triton is installed; CPU tensors only through Triton's interpreter (hundreds of
times slower than backend ``cpu``: it is for tests). The mode is per process and fixed when triton is first
imported: ``@triton.jit`` reads TRITON_INTERPRET when it wraps a function, and triton.language wraps its own
helpers (``tl.sum``, ...) on import, so for the interpreter set ``TRITON_INTERPRET=1`` before anything imports
triton (or this module); :func:`available` says when the two were loaded in different modes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..gaussians import CUTOFF

try:
    import triton
    import triton.language as tl

    _MISSING = None
except Exception as exc:  # noqa: BLE001 - not installed, or an install that fails to load: available() says which
    triton = tl = None
    _MISSING = ("triton is not installed (pip install triton, or gilab's 'gpu' extra; CUDA builds of torch "
                "bring it)" if isinstance(exc, ModuleNotFoundError) else f"cannot import triton: {exc}")

#: Tile edge, pixels (a program renders TILE x TILE pixels).
TILE = 16
#: Columns of the packed parameter rows: mean x, y; conic a, b, c; opacity; colour r, g, b.
PARAMS = 9
#: Gaussians per loop step (BLOCK) and warps per program, per mode and kernel. No GPU has timed the compiled ones
#: yet: they are the largest blocks that compile for sm_90 without spilling registers (cuobjdump -res-usage: 62
#: registers a thread forward, 121 backward); benchmarks/fitting_gpu.py sweeps them on a GPU. The interpreter
#: runs NumPy once per step, so fewer, larger steps are faster there.
LAUNCH = {"compiled": {"forward": {"BLOCK": 16, "num_warps": 8}, "backward": {"BLOCK": 8, "num_warps": 8}},
          "interpreter": {"forward": {"BLOCK": 64}, "backward": {"BLOCK": 64}}}
#: The cutoff as the kernels and dense compare it (float32), as a Python float.
_CUTOFF32 = float(torch.tensor(CUTOFF, dtype=torch.float32))


def _jit(fn):
    """``triton.jit`` (compiled, or wrapped for the interpreter under TRITON_INTERPRET=1); ``fn`` itself, never
    called, without triton. The image size is not specialized on: one compile serves every size (the image is
    read or written once per pixel, so knowing that the width divides by 16 would buy nothing)."""
    return fn if triton is None else triton.jit(fn, do_not_specialize=["height", "width", "tiles_x"])


def mode() -> str | None:
    """How the kernels run in this process: "compiled", "interpreter", "mixed" (this module's kernels and
    triton.language were wrapped under different TRITON_INTERPRET settings: unusable) or None (no triton)."""
    if triton is None:
        return None
    ours, theirs = (isinstance(f, triton.JITFunction) for f in (_forward_kernel, tl.sum))
    return "mixed" if ours != theirs else "compiled" if ours else "interpreter"


def available() -> tuple[bool, str]:
    """(usable, why): triton on CUDA, or on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1)."""
    how = mode()
    if how is None:
        return False, _MISSING
    if how == "mixed":
        return False, ("triton was imported with another TRITON_INTERPRET than this module saw: set it (or unset it) "
                       "before the first import of triton, in a fresh process")
    if how == "interpreter":
        return True, (f"triton {triton.__version__} interpreter (TRITON_INTERPRET=1): NumPy on the CPU, hundreds "
                      "of times slower than backend 'cpu'; for tests")
    if torch.cuda.is_available():
        return True, f"triton {triton.__version__} on {torch.cuda.get_device_name()}"
    return False, ("needs CUDA; on a CPU only Triton's interpreter runs the kernels (TRITON_INTERPRET=1 set before "
                   "triton is first imported: slow, for tests; backend 'cpu' is the fast path there)")


def rasterize(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, height: int, width: int,
              blend: str = "sum", background: Tensor | None = None) -> Tensor:
    """Sum-blend N Gaussians to a (3, H, W) image with Triton, differentiably.

    Args:
        means: (N, 2) centres (x, y), pixels.
        conics: (N, 3) inverse covariances (a, b, c) for Q = [[a, b], [b, c]], 1 / pixels^2.
        colors: (N, 3) colours.
        opacities: (N,) opacities (o w is clamped at 1).
        height, width: image size, pixels.
        blend: must be ``"sum"``.
        background: ignored (sum blending has none), as in the other backends.

    Returns:
        (3, H, W) image in the dtype of ``means`` (computed in float32), on the inputs' device.
    """
    if blend != "sum":
        raise ValueError(f"backend 'triton' only does sum blending (got blend={blend!r}); alpha blending goes "
                         "through backend 'gsplat' on CUDA or 'cpu' on the CPU (backend='auto' picks)")
    device, how = means.device, mode()
    if device.type not in ("cuda", "cpu") or (device.type == "cpu" and how == "compiled"):
        raise ValueError(f"backend 'triton' renders CUDA tensors (got {device}); CPU tensors only through Triton's "
                         "interpreter (TRITON_INTERPRET=1 before triton is imported; slow, for tests): use backend "
                         "'cpu' or 'auto'")
    if how in (None, "mixed"):
        raise RuntimeError(f"backend 'triton' is not available: {available()[1]}")
    n = means.shape[0]
    for name, t, shape in [("means", means, (n, 2)), ("conics", conics, (n, 3)), ("colors", colors, (n, 3)),
                           ("opacities", opacities, (n,))]:
        if tuple(t.shape) != shape:
            raise ValueError(f"backend 'triton': {name} must have shape {shape}, got {tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"backend 'triton': {name} is on {t.device}, means on {device}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"backend 'triton': {name} must be a float tensor, got {t.dtype}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    image = _SumRasterize.apply(pack(means, conics, colors, opacities), int(height), int(width))
    return image.to(means.dtype)


def pack(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor) -> Tensor:
    """(N, 9) contiguous float32 rows (mean x, y; conic a, b, c; opacity; colour r, g, b), differentiable.

    One row per Gaussian keeps a kernel's loads of it together, and autograd splits the (N, 9) gradient back into
    the four tensors, and their dtypes, through the cat and the cast."""
    return torch.cat([means, conics, opacities[:, None], colors], 1).float().contiguous()


# ------------------------------------------------------------------------------------------------------- binning
def tile_boxes(params: Tensor, height: int, width: int) -> Tensor:
    """(N, 4) int64 inclusive tile ranges (tx0, ty0, tx1, ty1) holding every pixel centre where a Gaussian passes
    the cutoff; empty (tx1 < tx0) where it passes nowhere in the image.

    The ellipse o exp(-d^T Q d / 2) >= cutoff is d^T Q d <= 2 ln(o / cutoff): half-widths
    sqrt(2 ln(o / cutoff) Sigma_xx) and sqrt(2 ln(o / cutoff) Sigma_yy), Sigma = Q^-1. Computed in float64 from
    the float32 parameters and padded by a pixel, so float32 rounding in the kernels never reaches past it. A conic
    that is not positive definite has no ellipse: it is binned to the whole image (the per-pixel test stays exact).
    """
    mx, my, a, b, c, o = params.detach().double()[:, :6].unbind(-1)
    det = a * c - b * b
    level = 2 * torch.log(o / _CUTOFF32)
    definite = (a > 0) & (det > 0)
    # with Q positive definite sigma >= 0, so v <= o: below the cutoff everywhere when o is; otherwise sigma can be
    # negative and v > o somewhere. Comparisons with NaN are false: NaN parameters are binned nowhere, or (a NaN
    # conic) everywhere, where v is NaN and the kernels' test drops it, as dense renders nothing for them.
    passes = torch.where(definite, o >= _CUTOFF32, o > 0)
    safe_det = torch.where(definite, det, torch.ones_like(det))
    half_x = torch.sqrt(level * c / safe_det) + 1
    half_y = torch.sqrt(level * a / safe_det) + 1
    # pixel j's centre is j + 0.5: those within [m - r, m + r] are j in [ceil(m - r - 0.5), floor(m + r - 0.5)]
    x0 = torch.where(definite, torch.ceil(mx - half_x - 0.5), 0.0)
    x1 = torch.where(definite, torch.floor(mx + half_x - 0.5), width - 1.0)
    y0 = torch.where(definite, torch.ceil(my - half_y - 0.5), 0.0)
    y1 = torch.where(definite, torch.floor(my + half_y - 0.5), height - 1.0)
    visible = (passes & (x0 <= x1) & (y0 <= y1) & (x1 >= 0) & (y1 >= 0)
               & (x0 <= width - 1) & (y0 <= height - 1))
    boxes = torch.stack([x0.clamp(0, width - 1), y0.clamp(0, height - 1), x1.clamp(0, width - 1),
                         y1.clamp(0, height - 1)], -1)
    boxes = boxes.nan_to_num(0.0).long() // TILE
    empty = torch.tensor([0, 0, -1, -1], device=boxes.device)
    return torch.where(visible[:, None], boxes, empty)


def bin_tiles(params: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The Gaussians of every tile: (gids (P,) int32, starts (T + 1,) int32); tile t's Gaussians, in index order,
    are ``gids[starts[t]:starts[t + 1]]``. One host sync: the number of pairs P, to allocate them."""
    n, device = params.shape[0], params.device
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    tx0, ty0, tx1, ty1 = tile_boxes(params, height, width).unbind(-1)
    cols = (tx1 - tx0 + 1).clamp(min=0)
    counts = cols * (ty1 - ty0 + 1).clamp(min=0)
    total = int(counts.sum())
    gid = torch.repeat_interleave(torch.arange(n, device=device), counts, output_size=total)
    k = torch.arange(total, device=device) - (torch.cumsum(counts, 0) - counts)[gid]  # pair's place in its box
    tile = (ty0[gid] + k // cols[gid]) * tiles_x + tx0[gid] + k % cols[gid]
    keys, _ = torch.sort(tile * max(n, 1) + gid)
    # Tile t's pairs are the keys in [t N, (t + 1) N): searchsorted gives every start at once (bincount + cumsum
    # would too, but CUDA's bincount reads its input's maximum back to the host, a second sync).
    bounds = torch.arange(tiles_x * tiles_y + 1, device=device) * max(n, 1)
    starts = torch.searchsorted(keys, bounds)
    return (keys % max(n, 1)).int(), starts.int()


# ------------------------------------------------------------------------------------------------------ autograd
class _SumRasterize(torch.autograd.Function):
    """(N, PARAMS) packed float32 parameters -> (3, H, W) float32 image; backward: the (N, PARAMS) gradient."""

    @staticmethod
    def forward(ctx, params, height, width):
        gids, starts = bin_tiles(params, height, width)
        image = params.new_empty(3, height, width)
        tiles_x, tiles = _grid(height, width)
        _forward_kernel[(tiles,)](params, gids, starts, image, height, width, tiles_x, CUTOFF=_CUTOFF32, TILE=TILE,
                                  PARAMS=PARAMS, **LAUNCH[mode()]["forward"])
        ctx.save_for_backward(params, gids, starts)
        ctx.size = (height, width)
        return image

    @staticmethod
    def backward(ctx, grad_image):
        params, gids, starts = ctx.saved_tensors
        height, width = ctx.size
        grads = torch.zeros_like(params)
        grad_image = grad_image.float().contiguous()  # e.g. the stride-0 gradient of .sum()
        tiles_x, tiles = _grid(height, width)
        _backward_kernel[(tiles,)](params, gids, starts, grad_image, grads, height, width, tiles_x, CUTOFF=_CUTOFF32,
                                   TILE=TILE, PARAMS=PARAMS, **LAUNCH[mode()]["backward"])
        return grads, None, None


def _grid(height: int, width: int) -> tuple[int, int]:
    """(tiles per row, tiles): one program per tile."""
    tiles_x = -(-width // TILE)
    return tiles_x, tiles_x * -(-height // TILE)


# ------------------------------------------------------------------------------------------------------- kernels
# Both kernels evaluate a (TILE * TILE, BLOCK) block of pixel-Gaussian pairs exactly as dense does (the same
# operations in the same order); padding lanes of a block load opacity 0, so v = 0 < cutoff and they add nothing.
# Pixels of edge tiles outside the image are computed but never stored and (backward) see a zero gradient.
@_jit
def _forward_kernel(params, gids, starts, image, height, width, tiles_x,
                    CUTOFF: tl.constexpr, TILE: tl.constexpr, PARAMS: tl.constexpr, BLOCK: tl.constexpr):
    tile = tl.program_id(0)
    p = tl.arange(0, TILE * TILE)
    row = (tile // tiles_x) * TILE + p // TILE
    col = (tile % tiles_x) * TILE + p % TILE
    px = col.to(tl.float32) + 0.5
    py = row.to(tl.float32) + 0.5
    red = tl.zeros([TILE * TILE], dtype=tl.float32)
    green = tl.zeros([TILE * TILE], dtype=tl.float32)
    blue = tl.zeros([TILE * TILE], dtype=tl.float32)
    start = tl.load(starts + tile)
    end = tl.load(starts + tile + 1)
    for first in range(start, end, BLOCK):
        j = first + tl.arange(0, BLOCK)
        valid = j < end
        row_ptr = params + tl.load(gids + j, mask=valid, other=0) * PARAMS
        dx = px[:, None] - tl.load(row_ptr + 0, mask=valid, other=0.0)[None, :]
        dy = py[:, None] - tl.load(row_ptr + 1, mask=valid, other=0.0)[None, :]
        a = tl.load(row_ptr + 2, mask=valid, other=0.0)[None, :]
        b = tl.load(row_ptr + 3, mask=valid, other=0.0)[None, :]
        c = tl.load(row_ptr + 4, mask=valid, other=0.0)[None, :]
        o = tl.load(row_ptr + 5, mask=valid, other=0.0)[None, :]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        v = o * tl.exp(-sigma)
        alpha = tl.where(v >= CUTOFF, tl.minimum(v, 1.0), 0.0)
        red += tl.sum(alpha * tl.load(row_ptr + 6, mask=valid, other=0.0)[None, :], axis=1)
        green += tl.sum(alpha * tl.load(row_ptr + 7, mask=valid, other=0.0)[None, :], axis=1)
        blue += tl.sum(alpha * tl.load(row_ptr + 8, mask=valid, other=0.0)[None, :], axis=1)
    inside = (row < height) & (col < width)
    pixel = row * width + col
    tl.store(image + pixel, red, mask=inside)
    tl.store(image + height * width + pixel, green, mask=inside)
    tl.store(image + 2 * height * width + pixel, blue, mask=inside)


@_jit
def _backward_kernel(params, gids, starts, grad_image, grads, height, width, tiles_x,
                     CUTOFF: tl.constexpr, TILE: tl.constexpr, PARAMS: tl.constexpr, BLOCK: tl.constexpr):
    # Chain rule of dense's ops: alpha = min(1, v) passes the gradient where v <= 1 (torch's clamp);
    # dv/do = exp(-sigma), dv/dsigma = -v; dsigma/da = dx^2 / 2, /db = dx dy, /dc = dy^2 / 2,
    # dsigma/dmean = -(Q d) (d = pixel - mean).
    tile = tl.program_id(0)
    p = tl.arange(0, TILE * TILE)
    row = (tile // tiles_x) * TILE + p // TILE
    col = (tile % tiles_x) * TILE + p % TILE
    px = col.to(tl.float32) + 0.5
    py = row.to(tl.float32) + 0.5
    inside = (row < height) & (col < width)
    pixel = row * width + col
    g_red = tl.load(grad_image + pixel, mask=inside, other=0.0)[:, None]
    g_green = tl.load(grad_image + height * width + pixel, mask=inside, other=0.0)[:, None]
    g_blue = tl.load(grad_image + 2 * height * width + pixel, mask=inside, other=0.0)[:, None]
    start = tl.load(starts + tile)
    end = tl.load(starts + tile + 1)
    for first in range(start, end, BLOCK):
        j = first + tl.arange(0, BLOCK)
        valid = j < end
        gid = tl.load(gids + j, mask=valid, other=0)
        row_ptr = params + gid * PARAMS
        dx = px[:, None] - tl.load(row_ptr + 0, mask=valid, other=0.0)[None, :]
        dy = py[:, None] - tl.load(row_ptr + 1, mask=valid, other=0.0)[None, :]
        a = tl.load(row_ptr + 2, mask=valid, other=0.0)[None, :]
        b = tl.load(row_ptr + 3, mask=valid, other=0.0)[None, :]
        c = tl.load(row_ptr + 4, mask=valid, other=0.0)[None, :]
        o = tl.load(row_ptr + 5, mask=valid, other=0.0)[None, :]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        e = tl.exp(-sigma)
        v = o * e
        keep = v >= CUTOFF
        alpha = tl.where(keep, tl.minimum(v, 1.0), 0.0)
        d_alpha = (g_red * tl.load(row_ptr + 6, mask=valid, other=0.0)[None, :]
                   + g_green * tl.load(row_ptr + 7, mask=valid, other=0.0)[None, :]
                   + g_blue * tl.load(row_ptr + 8, mask=valid, other=0.0)[None, :])
        d_v = tl.where(keep & (v <= 1.0), d_alpha, 0.0)
        d_sigma = -d_v * v
        out = grads + gid * PARAMS
        tl.atomic_add(out + 0, tl.sum(-d_sigma * (a * dx + b * dy), axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 1, tl.sum(-d_sigma * (b * dx + c * dy), axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 2, tl.sum(0.5 * d_sigma * dx * dx, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 3, tl.sum(d_sigma * dx * dy, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 4, tl.sum(0.5 * d_sigma * dy * dy, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 5, tl.sum(d_v * e, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 6, tl.sum(alpha * g_red, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 7, tl.sum(alpha * g_green, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(out + 8, tl.sum(alpha * g_blue, axis=0), mask=valid, sem="relaxed")
