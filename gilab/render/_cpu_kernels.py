"""numba kernels behind the ``cpu`` backend (see :mod:`gilab.render.cpu` for the model and the API).

Layout of the work:

- :func:`plan` (once per call): per Gaussian, the level 2 ln(255 o) of its cutoff ellipse, widened by a small
  slack (see :func:`cutoff_level`), and the rows that ellipse covers; then the Gaussians are binned into bands
  of ``BAND_ROWS`` image rows with a counting sort that keeps index order inside each band.
- Forward: bands in parallel. Each band owns its rows of the output, so no two threads ever write the same
  pixel, and inside a band the Gaussians arrive in index order (alpha blending needs that order). Threads take
  every T-th band rather than one region of the picture each (:func:`spread`), so that sky and texture are
  shared out evenly.
- Backward, sum blending: Gaussians in parallel (in band order, so neighbours read neighbouring pixels), each
  reading dL/dC over its own footprint and writing only its own sums: no atomics. The sums are kept in
  ``LANES`` independent lanes (vector registers), so LLVM vectorises the reduction without ``fastmath``.
- Backward, alpha blending: bands in parallel again, Gaussians in reverse index order, walking each pixel's
  transmittance back from its final value (as gsplat does). A Gaussian spans several bands, so each
  (band, Gaussian) entry writes its own partial sums and :func:`reduce_partials` adds them up.

Only pixels whose centre lies inside a Gaussian's (widened) cutoff ellipse are visited: each row's column span
is the exact solution of a quadratic (:func:`row_spans`). Every visited pixel takes the *same* floating-point
test as the dense reference (``o * exp(-sigma) >= 1/255`` with sigma computed by the same operations in the same
order, no ``fastmath``), so the widening only costs a few evaluations and never changes a result. The sum
kernels process spans in whole groups of LANES pixels (one 512-bit register of float32), which needs the image
rows padded by LANES columns.

Both float32 and float64 arrays are accepted; numba compiles one version of each kernel per dtype, on first use
(``cache=True`` keeps the machine code on disk). Constants go through :func:`typed` so that float32 maths stays
float32: a bare ``0.5`` in numba is a float64 and would silently promote the whole expression. Hot loops index
with unsigned integers: numba adds a negative-index wraparound select to signed ones, which stops LLVM from
using contiguous vector loads and stores.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

#: Image rows per band of the forward pass (and of the alpha backward).
BAND_ROWS = 16
#: Independent accumulators per reduction in the sum backward: one AVX-512 register of float32.
LANES = 16
#: The sum backward's last group of a row is half a register when its pixels fit. The median span of a random
#: start is 4 pixels: rounding every span up to 16 evaluates 3.5x the pixels inside the cutoff on Kodak (1.8x
#: with halves). Measured: the backward 1.1-1.16x faster; the forward 2x *slower* (LLVM does not vectorise a
#: loop of 8 iterations and unrolls it to scalar code), so the forward keeps whole registers.
HALF_LANES = LANES // 2
#: Rows of one Gaussian the sum backward accumulates in working precision before adding them up in float64.
FLUSH_ROWS = 16
#: The model's constants (equal to gilab.gaussians.CUTOFF and gilab.render.dense.ALPHA_MAX / T_MIN; a test
#: checks it). Kept here as literals because numba freezes globals into its on-disk cache.
CUTOFF = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4

_JIT = {"cache": True, "nogil": True}


def _configure_threading() -> None:
    """Use numba's OpenMP threading layer when it is built: thread-safe (unlike ``workqueue``, which aborts
    the process when two Python threads enter parallel code at once) and, with torch loaded, it runs on torch's
    own OpenMP runtime (torch exports its libgomp globally), so numba and torch share one pool of threads
    instead of oversubscribing the cores. An explicit choice (``NUMBA_THREADING_LAYER`` or an earlier
    ``numba.config.THREADING_LAYER``) wins; once numba's threads run the setting is ignored, which is harmless.

    On a machine shared with other busy processes, OpenMP's spin-waiting (libgomp's default) can make small
    renders many times slower; ``OMP_WAIT_POLICY=passive`` (or ``GOMP_SPINCOUNT=10000``), set before torch is
    imported, fixes that (measured 32 ms -> 1.4 ms for 256x256 / 2,000 Gaussians on a loaded 2-core VM).
    """
    if os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER != "default":
        return
    try:
        from numba.np.ufunc import omppool  # noqa: F401  (ImportError when numba was built without OpenMP)
    except ImportError:
        return
    numba.config.THREADING_LAYER = "omp"


_configure_threading()


# --------------------------------------------------------------------------------------- typed constants
def typed(array, value):
    """``value`` converted to ``array``'s dtype (inside jitted code: keeps float32 maths in float32)."""
    return array.dtype.type(value)


@overload(typed, jit_options=_JIT)
def _typed(array, value):
    cast = as_dtype(array.dtype).type
    return lambda array, value: cast(value)


# ------------------------------------------------------------------------------------------ wide vectors
@intrinsic
def use_wide_vectors(typingctx):
    """Ask LLVM for 512-bit vectors in the function this is called from (a no-op without AVX-512).

    LLVM tunes recent Intel CPUs for 256-bit vectors ("prefer-vector-width"=256) because 512-bit
    instructions once lowered the clock; for these kernels 512-bit vectors were ~2x faster (Sapphire Rapids).
    llvmlite only lets known attribute names through its API, hence the direct set insertion.
    """
    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        try:
            for attribute in ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"'):
                set.add(attributes, attribute)
        except TypeError:  # a future llvmlite with another attribute container: keep LLVM's default width
            pass
        return context.get_dummy_value()

    return types.none(), codegen


# ------------------------------------------------------------------------------------- a vectorisable exp
@intrinsic
def _float32_bits(typingctx, x):
    """The IEEE-754 bit pattern of a float32, as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 ``bits``."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375            # ln 2 split in two (Cody-Waite): n * _LN2_HI is exact for |n| < 2^15
_LN2_LO = -2.12194440054690583e-4
_ROUND = 12582912.0              # 1.5 * 2^23: adding it rounds a float32 to an integer, kept in the low bits


def _exp_float32(x):
    """exp(x) for float32 to about 1 ulp, built from operations LLVM can vectorise (``math.exp`` is a libm
    call that it cannot, without Intel's SVML). x = n ln 2 + r with |r| <= ln(2)/2; exp(r) by its Taylor
    series to degree 7 (truncation 5e-9, below float32 rounding); 2^n by writing n into the exponent bits."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))  # keeps 2^n a normal float32
    shifted = x * np.float32(_LOG2E) + np.float32(_ROUND)
    n = shifted - np.float32(_ROUND)
    r = (x - n * np.float32(_LN2_HI)) - n * np.float32(_LN2_LO)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    exponent = _float32_bits(shifted) - _float32_bits(np.float32(_ROUND)) + 127
    return p * _float32_from_bits(np.int32(exponent << 23))


def vexp(x):
    """exp(x): a vectorisable polynomial for float32, ``math.exp`` for float64 (where accuracy matters more)."""
    return math.exp(x)


@overload(vexp, jit_options={**_JIT, "fastmath": {"contract"}})  # FMAs in the polynomial only
def _vexp(x):
    if x == types.float32:
        return _exp_float32
    return lambda x: math.exp(x)


# --------------------------------------------------------------------------------------- thread balance
@njit(inline="always", **_JIT)
def spread(k, n, threads):
    """The item that the k-th of n ``prange`` iterations processes, so that each thread gets every
    ``threads``-th item (t, t + threads, t + 2 threads, ...) instead of one contiguous run.

    numba splits a ``prange`` statically, into one contiguous run of iterations per thread. Bands and chunks
    of Gaussians follow the image from top to bottom, so a contiguous run is a region of the picture, and a
    picture with sky in its top half handed one thread far less work than the other: measured on the
    network's starts of the 24 Kodak images, the busier of 2 threads had 52 % of the forward's and 56 % of the
    backward's work on average, up to 57 % and 69 % (``benchmarks/thread_balance.py``). Interleaved, neighbouring
    bands, which cost about the same, go to different threads: 50.1 % and 50.4 %. Which thread takes an item
    changes nothing in the result: every band and every Gaussian is computed as before. ``threads`` is
    ``numba.get_num_threads()`` of the caller, passed in as an argument: read inside a kernel it would stop
    numba from caching the kernel on disk (a ctypes pointer).
    """
    # all int64: a prange index may be unsigned, and numba types uint64 // int64 as a float
    k, n, threads = np.int64(k), np.int64(n), np.int64(threads)
    if threads <= 1 or n <= threads:
        return k
    q, r = n // threads, n % threads  # runs of q + 1 items for the first r threads, q for the others
    if k < r * (q + 1):
        t, j = k // (q + 1), k % (q + 1)
    else:
        t, j = r + (k - r * (q + 1)) // q, (k - r * (q + 1)) % q
    return t + j * threads


# ----------------------------------------------------------------------------------------- footprints
@njit(**_JIT)
def cutoff_level(a, b, c, opacity, eps):
    """2 ln(255 o) plus a slack: every pixel where the working-precision test ``o exp(-sigma) >= 1/255``
    can pass has d^T Q d below it. All float64.

    The slack covers the rounding of sigma in working precision (machine epsilon ``eps``): the terms of
    a x^2 + 2 b x y + c y^2 can exceed their sum by the conic's condition number, ~ (a + c)^2 / det.
    Returns -1 when the Gaussian contributes nowhere (o < 1/255 or non-finite parameters).
    """
    if not (opacity > 0.0 and math.isfinite(opacity) and math.isfinite(a) and math.isfinite(b)
            and math.isfinite(c)):
        return -1.0
    level = math.log(255.0 * opacity)
    det = a * c - b * b
    condition = (a + c) * (a + c) / det if det > 0.0 else 1.0
    slack = 1e-4 + 64.0 * eps * condition * (1.0 + abs(level))
    level2 = 2.0 * (level + slack)
    return level2 if level2 >= 0.0 else -1.0


@njit(**_JIT)
def is_positive_definite(a, b, c):
    return a > 0.0 and a * c - b * b > 0.0


@njit(**_JIT)
def clipped_range(lo, hi, size):
    """Integers k in [ceil(lo), floor(hi)] and [0, size - 1], as (first, last); first > last when empty."""
    if not (lo <= hi) or hi < 0.0 or lo > size - 1.0:
        return 0, -1
    return math.ceil(max(lo, 0.0)), math.floor(min(hi, size - 1.0))


@njit(**_JIT)
def cutoff_rows(mx, my, a, b, c, level2, height):
    """(first, last) image rows whose centre line crosses the ellipse d^T Q d <= level2. All float64."""
    if level2 < 0.0 or not (math.isfinite(mx) and math.isfinite(my)):
        return 0, -1
    if not is_positive_definite(a, b, c):
        return 0, height - 1  # not an ellipse: visit everything, the exact per-pixel test decides
    reach = math.sqrt(level2 * a / (a * c - b * b))  # half-height of the ellipse, sqrt(level2 Sigma_yy)
    # row i is sampled at y = i + 0.5
    return clipped_range(my - reach - 0.5, my + reach - 0.5, height)


@njit(**_JIT)
def row_spans(mx, my, a, b, c, level2, first, last, width, spans):
    """spans[r] = (first, last) columns of row ``first + r`` whose pixel centres lie inside d^T Q d <= level2,
    for the rows first..last (first > last in a pair: none). Scalars float64, ``spans`` (>= rows, 2) int32.

    With dy = i + 0.5 - my, the row cuts the ellipse where a dx^2 + 2 b dy dx + c dy^2 = level2,
    dx = -(b / a) dy +- sqrt(level2 / a - (det / a^2) dy^2). The rows are independent and the loop has no
    branch (selects instead, int32 out), which LLVM can vectorise: it runs once per Gaussian and band in the
    forward and once per Gaussian in the backward (measured on 634k rows of a net start: 3.2 ms with the
    earlier branching int64 loop, 2.1 ms). Spans are always inside [0, width - 1] (or empty), whatever the
    inputs (inf, NaN): the pixel loops index without bounds checks.
    """
    if not is_positive_definite(a, b, c):
        for r in range(last - first + 1):
            spans[r, 0], spans[r, 1] = 0, width - 1  # not an ellipse: the exact per-pixel test decides
        return
    reach2 = level2 / a
    shrink = (a * c - b * b) / (a * a)
    slope = b / a
    top = width - 1.0
    for r in range(last - first + 1):
        dy = (first + r + 0.5) - my
        disc = reach2 - shrink * dy * dy
        half = math.sqrt(max(disc, 0.0))
        centre = mx - slope * dy - 0.5  # column j's centre is j + 0.5
        lo = max(np.ceil(centre - half), 0.0)
        hi = min(np.floor(centre + half), top)
        inside = (disc >= 0.0) & (lo <= hi)  # False for NaN, and for a span wholly left or right of the image
        spans[r, 0] = np.int32(lo) if inside else np.int32(0)
        spans[r, 1] = np.int32(hi) if inside else np.int32(-1)


@njit(parallel=True, **_JIT)
def plan(means, conics, opacities, height, eps):
    """Per Gaussian: cutoff level and covered rows; the Gaussians binned into bands of ``BAND_ROWS`` rows.

    Returns:
        level2: (N,) float64, see :func:`cutoff_level` (-1: contributes nowhere).
        rows: (N, 2) int64 first and last covered row (first > last: none).
        band_start: (n_bands + 1,) int64; band b's Gaussians are ``band_ids[band_start[b]:band_start[b+1]]``,
            in increasing index order.
        band_ids: (n_entries,) int32 Gaussian indices.
        order: (n_visible,) int32 every Gaussian that covers a row, sorted by its first band (then index):
            neighbours in this order touch neighbouring pixels, which the per-Gaussian backward relies on.
    """
    n = opacities.shape[0]
    level2 = np.empty(n, np.float64)
    rows = np.empty((n, 2), np.int64)
    for g in prange(n):
        mx, my = np.float64(means[g, 0]), np.float64(means[g, 1])
        a, b, c = np.float64(conics[g, 0]), np.float64(conics[g, 1]), np.float64(conics[g, 2])
        level2[g] = cutoff_level(a, b, c, np.float64(opacities[g]), eps)
        rows[g, 0], rows[g, 1] = cutoff_rows(mx, my, a, b, c, level2[g], height)

    n_bands = (height + BAND_ROWS - 1) // BAND_ROWS
    band_start = np.zeros(n_bands + 1, np.int64)
    for g in range(n):
        if rows[g, 0] <= rows[g, 1]:
            for band in range(rows[g, 0] // BAND_ROWS, rows[g, 1] // BAND_ROWS + 1):
                band_start[band + 1] += 1
    for band in range(n_bands):
        band_start[band + 1] += band_start[band]
    fill = band_start[:-1].copy()
    band_ids = np.empty(band_start[-1], np.int32)
    for g in range(n):  # in index order, so each band's list is sorted
        if rows[g, 0] <= rows[g, 1]:
            for band in range(rows[g, 0] // BAND_ROWS, rows[g, 1] // BAND_ROWS + 1):
                band_ids[fill[band]] = g
                fill[band] += 1

    n_visible = 0
    for g in range(n):
        n_visible += rows[g, 0] <= rows[g, 1]
    order = np.empty(n_visible, np.int32)
    k = 0
    for band in range(n_bands):
        for e in range(band_start[band], band_start[band + 1]):
            g = band_ids[e]
            if rows[g, 0] // BAND_ROWS == band:
                order[k] = g
                k += 1
    return level2, rows, band_start, band_ids, order


# ------------------------------------------------------------------------------- one group of pixels
# The per-pixel maths of the sum-blend forward and backward, for ``count`` pixels of one row from column
# ``start`` (LANES, one AVX-512 register of float32, or HALF_LANES in the backward), inlined so that ``count``
# is a constant in each copy. Pixels past the span (outside the cutoff, or in the row's padding, where the
# gradient is zero) add exactly zero, so the width changes the work, not the result. One home for this maths:
# the `cpu` backend's kernels and the fused step (``_fused_kernels``) both call these two functions.
@njit(inline="always", **_JIT)
def splat_group(out, base, plane, start, count, mx, a, b, o, c0, c1, c2, dy, cdyy):
    """out[p] += c_k min(1, v) at the ``count`` pixels from flat index ``base`` (column ``start``)."""
    half, one, zero, cut = typed(out, 0.5), typed(out, 1.0), typed(out, 0.0), typed(out, CUTOFF)
    for lane in range(count):
        # the same operations, in the same order, as the dense reference (so the cutoff test agrees)
        dx = (typed(out, start + lane) + half) - mx
        sigma = half * (a * dx * dx + cdyy) + b * dx * dy
        v = o * vexp(-sigma)
        w = min(v, one) if v >= cut else zero
        p = base + np.uint64(lane)
        out[p] += c0 * w
        out[p + plane] += c1 * w
        out[p + plane + plane] += c2 * w


@njit(inline="always", **_JIT)
def gradient_group(lanes, grad, base, plane, start, count, mx, a, b, o, c0, c1, c2, dy, cdyy, dy2):
    """lanes[q, lane] += the N_SUMS backward terms (see below) at the ``count`` pixels from ``base``."""
    half, one, zero, cut = typed(grad, 0.5), typed(grad, 1.0), typed(grad, 0.0), typed(grad, CUTOFF)
    for lane in range(count):
        dx = (typed(grad, start + lane) + half) - mx
        sigma = half * (a * dx * dx + cdyy) + b * dx * dy
        v = o * vexp(-sigma)
        inside = v >= cut
        p = base + np.uint64(lane)
        g0, g1, g2 = grad[p], grad[p + plane], grad[p + plane + plane]
        w = min(v, one) if inside else zero
        dl_dv = (c0 * g0 + c1 * g1 + c2 * g2) if (inside & (v <= one)) else zero
        add_gradient_terms(lanes, lane, w, -(v * dl_dv), g0, g1, g2, dx, dy, dy2)


@njit(inline="always", **_JIT)
def add_gradient_terms(lanes, lane, w, s, g0, g1, g2, dx, dy, dy2):
    """lanes[q, lane] += the N_SUMS backward terms of one pixel: w = min(1, v) and s = dL/dsigma = -v dL/dv there."""
    sdx = s * dx
    lanes[0, lane] += w * g0
    lanes[1, lane] += w * g1
    lanes[2, lane] += w * g2
    lanes[3, lane] += s
    lanes[4, lane] += sdx
    lanes[5, lane] += s * dy
    lanes[6, lane] += sdx * dx
    lanes[7, lane] += sdx * dy
    lanes[8, lane] += s * dy2


# --------------------------------------------------------------------------------------------- forward
@njit(parallel=True, **_JIT)
def forward_sum(means, conics, colors, opacities, level2, rows, band_start, band_ids, height, width, out, threads):
    """Sum blending: out[k, i, j] += c_k min(1, v) over every Gaussian with v = o exp(-sigma) >= 1/255.

    ``out`` is the flat (3 * H * (W + LANES),) image in the working dtype, zero on entry: each row is padded
    with LANES columns so that a span is processed in whole groups of LANES pixels (one AVX-512 register of
    float32) with no scalar tail loop. The pixels of the last group beyond the span take the same exact test
    (they are outside the cutoff, so add zero) or fall in the padding, which the caller crops.
    """
    half = typed(out, 0.5)
    padded = width + LANES
    assert out.shape[0] == 3 * height * padded  # the hot loop writes without bounds checks
    plane = np.uint64(height * padded)
    n_bands = band_start.shape[0] - 1
    for k_band in prange(n_bands):
        band = spread(k_band, n_bands, threads)
        use_wide_vectors()
        band_lo = band * BAND_ROWS
        band_hi = min(band_lo + BAND_ROWS, height) - 1
        spans = np.empty((BAND_ROWS, 2), np.int32)  # scratch, once per band
        for e in range(band_start[band], band_start[band + 1]):
            g = band_ids[e]
            mx, my, a, b, c, o = means[g, 0], means[g, 1], conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            c0, c1, c2 = colors[g, 0], colors[g, 1], colors[g, 2]
            first, last = max(rows[g, 0], band_lo), min(rows[g, 1], band_hi)
            row_spans(np.float64(mx), np.float64(my), np.float64(a), np.float64(b), np.float64(c), level2[g],
                      first, last, width, spans)
            for i in range(first, last + 1):
                j0, j1 = spans[i - first, 0], spans[i - first, 1]
                # the same operations, in the same order, as the dense reference (so the cutoff test agrees)
                dy = (typed(out, i) + half) - my
                cdyy = c * dy * dy
                for start in range(j0, j1 + 1, LANES):
                    base = np.uint64(i * padded + start)  # unsigned: numba adds no negative-index wraparound
                    splat_group(out, base, plane, start, LANES, mx, a, b, o, c0, c1, c2, dy, cdyy)


@njit(parallel=True, **_JIT)
def forward_alpha(means, conics, colors, opacities, level2, rows, band_start, band_ids, height, width,
                  out, transmittance, stop, threads):
    """Alpha blending, front to back in index order.

    Args (all flat, row-major):
        out: (3 * H * W,) working dtype, zero on entry; the image without background on exit.
        transmittance: (H * W,) float64, one on entry; T after the last composited Gaussian on exit.
            Kept in float64 as torch's cumprod accumulates (the dense reference's T).
        stop: (H * W,) int32, N on entry; on exit the index of the Gaussian that ended the pixel
            (its T_{i+1} would have been <= 1e-4), N where none did.
    """
    half, one, cut = typed(out, 0.5), typed(out, 1.0), typed(out, CUTOFF)
    alpha_max, t_min = typed(out, ALPHA_MAX), typed(out, T_MIN)
    n = opacities.shape[0]
    plane = height * width
    assert out.shape[0] == 3 * plane and transmittance.shape[0] == plane and stop.shape[0] == plane
    n_bands = band_start.shape[0] - 1
    for k_band in prange(n_bands):
        band = spread(k_band, n_bands, threads)
        use_wide_vectors()
        band_lo = band * BAND_ROWS
        band_hi = min(band_lo + BAND_ROWS, height) - 1
        spans = np.empty((BAND_ROWS, 2), np.int32)  # scratch, once per band
        for e in range(band_start[band], band_start[band + 1]):
            g = band_ids[e]
            mx, my, a, b, c, o = means[g, 0], means[g, 1], conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            c0, c1, c2 = colors[g, 0], colors[g, 1], colors[g, 2]
            first, last = max(rows[g, 0], band_lo), min(rows[g, 1], band_hi)
            row_spans(np.float64(mx), np.float64(my), np.float64(a), np.float64(b), np.float64(c), level2[g],
                      first, last, width, spans)
            for i in range(first, last + 1):
                j0, j1 = spans[i - first, 0], spans[i - first, 1]
                dy = (typed(out, i) + half) - my
                cdyy = c * dy * dy
                for j in range(j0, j1 + 1):
                    p = i * width + j
                    if stop[p] != n:
                        continue  # an earlier Gaussian made this pixel opaque
                    dx = (typed(out, j) + half) - mx
                    sigma = half * (a * dx * dx + cdyy) + b * dx * dy
                    v = o * vexp(-sigma)
                    if not v >= cut:
                        continue
                    alpha = min(v, alpha_max)
                    t_before = transmittance[p]
                    t_after = t_before * np.float64(one - alpha)
                    if typed(out, t_after) <= t_min:
                        stop[p] = g
                        continue
                    w = alpha * typed(out, t_before)
                    out[p] += c0 * w
                    out[p + plane] += c1 * w
                    out[p + 2 * plane] += c2 * w
                    transmittance[p] = t_after


# -------------------------------------------------------------------------------------------- backward
# Per Gaussian the backward pass accumulates nine sums, in float64; the gradients follow from them in
# gradients_from_sums (below). With s = dL/dsigma at a pixel and (dx, dy) = pixel - mean:
#   0-2: sum w dL/dC_k (colour gradients)    3: S = sum s    4: sum s dx    5: sum s dy
#   6: sum s dx^2    7: sum s dx dy    8: sum s dy^2
N_SUMS = 9


@njit(parallel=True, **_JIT)
def backward_sum(means, conics, colors, opacities, level2, rows, order, grad, height, width, sums, n_chunks,
                 threads):
    """Sum blending backward, one Gaussian at a time (Gaussians in parallel, no shared writes).

    Args:
        grad: flat (3 * H * (W + LANES),) dL/dC in the working dtype, each row padded with LANES zeros so
            that a row's last group of LANES pixels can be read whole.
        sums: (N, N_SUMS) float64; filled for the Gaussians in ``order`` (the others are left as they are).
        n_chunks: pieces ``order`` is cut into for the threads (a few per thread: balance vs. overhead).
    """
    half = typed(grad, 0.5)
    padded = width + LANES
    assert grad.shape[0] == 3 * height * padded  # the hot loop reads without bounds checks
    plane = np.uint64(height * padded)
    n = order.shape[0]
    n_chunks = max(1, min(n, n_chunks))
    for k_chunk in prange(n_chunks):
        chunk = spread(k_chunk, n_chunks, threads)
        use_wide_vectors()
        # Scratch, allocated once per chunk (an allocation per Gaussian would cost more than the maths):
        # the N_SUMS sums in LANES independent lanes each (LLVM keeps them in vector registers), flushed into
        # float64 every FLUSH_ROWS rows so that float32 rounding cannot build up over a large Gaussian; and
        # the Gaussian's totals in a local buffer (a view of ``sums`` per flush would add reference counting).
        lanes = np.empty((N_SUMS, LANES), grad.dtype)
        spans = np.empty((height, 2), np.int32)
        total = np.empty(N_SUMS, np.float64)
        for k in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            g = order[k]
            mx, my, a, b, c, o = means[g, 0], means[g, 1], conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            c0, c1, c2 = colors[g, 0], colors[g, 1], colors[g, 2]
            for q in range(N_SUMS):
                total[q] = 0.0
            first, last = rows[g, 0], rows[g, 1]
            row_spans(np.float64(mx), np.float64(my), np.float64(a), np.float64(b), np.float64(c), level2[g],
                      first, last, width, spans)
            for i in range(first, last + 1):
                if (i - first) % FLUSH_ROWS == 0:
                    _zero(lanes)
                j0, j1 = spans[i - first, 0], spans[i - first, 1]
                dy = (typed(grad, i) + half) - my
                cdyy = c * dy * dy
                dy2 = dy * dy
                # Whole groups of LANES pixels from j0: the last group may run past j1 (into the zero padding
                # of ``grad`` at the image edge); those pixels take the same exact test as the forward's.
                for start in range(j0, j1 + 1, LANES):
                    base = np.uint64(i * padded + start)
                    if j1 - start < HALF_LANES:
                        gradient_group(lanes, grad, base, plane, start, HALF_LANES, mx, a, b, o, c0, c1, c2, dy,
                                       cdyy, dy2)
                    else:
                        gradient_group(lanes, grad, base, plane, start, LANES, mx, a, b, o, c0, c1, c2, dy, cdyy,
                                       dy2)
                if (i - first) % FLUSH_ROWS == FLUSH_ROWS - 1 or i == last:
                    _flush(lanes, total)
            for q in range(N_SUMS):
                sums[g, q] = total[q]


@njit(**_JIT)
def _zero(lanes):
    for q in range(lanes.shape[0]):
        for lane in range(LANES):
            lanes[q, lane] = 0.0


@njit(**_JIT)
def _flush(lanes, total):
    """total[q] += the LANES (= 16) lanes of sum q, added in float64 as a tree of depth 4 rather than a chain of
    16 dependent additions: it runs once per Gaussian (per FLUSH_ROWS rows), a fixed cost that small Gaussians
    feel. Written out for 16 lanes; the assert below the function guards that."""
    for q in range(N_SUMS):
        x = lanes[q]
        s0 = (np.float64(x[0]) + np.float64(x[8])) + (np.float64(x[4]) + np.float64(x[12]))
        s1 = (np.float64(x[1]) + np.float64(x[9])) + (np.float64(x[5]) + np.float64(x[13]))
        s2 = (np.float64(x[2]) + np.float64(x[10])) + (np.float64(x[6]) + np.float64(x[14]))
        s3 = (np.float64(x[3]) + np.float64(x[11])) + (np.float64(x[7]) + np.float64(x[15]))
        total[q] += (s0 + s2) + (s1 + s3)


assert LANES == 16, "_flush adds exactly 16 lanes"


@njit(**_JIT)
def _add_row(total, row, dy):
    """Fold one row's (w G0, w G1, w G2, s, s dx, s dx^2) sums into a Gaussian's N_SUMS sums (dy is constant)."""
    total[0] += row[0]
    total[1] += row[1]
    total[2] += row[2]
    total[3] += row[3]
    total[4] += row[4]
    total[5] += dy * row[3]
    total[6] += row[5]
    total[7] += dy * row[4]
    total[8] += dy * dy * row[3]


@njit(parallel=True, **_JIT)
def backward_alpha(means, conics, colors, opacities, level2, rows, band_start, band_ids, height, width,
                   grad, transmittance, behind, stop, partial, threads):
    """Alpha blending backward: per band, Gaussians back to front, undoing the forward's compositing.

    Args (flat, row-major; ``transmittance`` and ``behind`` are overwritten):
        grad: (3 * H * W,) dL/dC, working dtype.
        transmittance: (H * W,) float64 T after the last composited Gaussian (the forward's output).
        behind: (3 * H * W,) float64 colour composited behind the current Gaussian, T_final * background
            on entry: B_i = sum_{j > i} c_j alpha_j T_j + T_final bg, so that dC/dalpha_i = c_i T_i - B_i / (1 - alpha_i).
        stop: (H * W,) int32 from the forward.
        partial: (n_entries, N_SUMS) float64, filled: the sums of each (band, Gaussian) entry.
    """
    half, one, cut = typed(grad, 0.5), typed(grad, 1.0), typed(grad, CUTOFF)
    alpha_max = typed(grad, ALPHA_MAX)
    plane = height * width
    assert grad.shape[0] == 3 * plane and behind.shape[0] == 3 * plane
    assert transmittance.shape[0] == plane and stop.shape[0] == plane and partial.shape[0] == band_ids.shape[0]
    n_bands = band_start.shape[0] - 1
    for k_band in prange(n_bands):
        band = spread(k_band, n_bands, threads)
        use_wide_vectors()
        band_lo = band * BAND_ROWS
        band_hi = min(band_lo + BAND_ROWS, height) - 1
        spans = np.empty((BAND_ROWS, 2), np.int32)  # scratch, once per band
        row_sums = np.empty(6, np.float64)  # scratch, once per band
        total = np.empty(N_SUMS, np.float64)
        for e in range(band_start[band + 1] - 1, band_start[band] - 1, -1):
            g = band_ids[e]
            mx, my, a, b, c, o = means[g, 0], means[g, 1], conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            c0, c1, c2 = colors[g, 0], colors[g, 1], colors[g, 2]
            c0d, c1d, c2d = np.float64(c0), np.float64(c1), np.float64(c2)
            for q in range(N_SUMS):
                total[q] = 0.0
            first, last = max(rows[g, 0], band_lo), min(rows[g, 1], band_hi)
            row_spans(np.float64(mx), np.float64(my), np.float64(a), np.float64(b), np.float64(c), level2[g],
                      first, last, width, spans)
            for i in range(first, last + 1):
                j0, j1 = spans[i - first, 0], spans[i - first, 1]
                dy = (typed(grad, i) + half) - my
                cdyy = c * dy * dy
                for q in range(6):
                    row_sums[q] = 0.0
                for j in range(j0, j1 + 1):
                    p = i * width + j
                    if g >= stop[p]:
                        continue  # at or behind the Gaussian that ended this pixel: not composited
                    dx = (typed(grad, j) + half) - mx
                    sigma = half * (a * dx * dx + cdyy) + b * dx * dy
                    v = o * vexp(-sigma)
                    if not v >= cut:
                        continue
                    alpha = min(v, alpha_max)
                    inv_keep = 1.0 / np.float64(one - alpha)  # one division instead of four
                    t_before = transmittance[p] * inv_keep
                    w = alpha * typed(grad, t_before)
                    g0, g1, g2 = grad[p], grad[p + plane], grad[p + 2 * plane]
                    row_sums[0] += w * g0
                    row_sums[1] += w * g1
                    row_sums[2] += w * g2
                    dl_dalpha = (g0 * (c0d * t_before - behind[p] * inv_keep)
                                 + g1 * (c1d * t_before - behind[p + plane] * inv_keep)
                                 + g2 * (c2d * t_before - behind[p + 2 * plane] * inv_keep))
                    if v <= alpha_max:  # min(v, 0.999) passes the gradient below the clamp
                        s = -np.float64(v) * dl_dalpha
                        row_sums[3] += s
                        row_sums[4] += s * dx
                        row_sums[5] += s * dx * dx
                    wd = np.float64(w)
                    behind[p] += c0d * wd
                    behind[p + plane] += c1d * wd
                    behind[p + 2 * plane] += c2d * wd
                    transmittance[p] = t_before
                _add_row(total, row_sums, np.float64(dy))
            for q in range(N_SUMS):
                partial[e, q] = total[q]


@njit(**_JIT)
def reduce_partials(band_ids, partial, sums):
    """sums[g] += partial[e] for every entry e of Gaussian g (serial: a few additions per entry)."""
    for e in range(band_ids.shape[0]):
        g = band_ids[e]
        for q in range(N_SUMS):
            sums[g, q] += partial[e, q]


# ------------------------------------------------------------------------------------------- statistics
@njit(parallel=True, **_JIT)
def count_evaluations(means, conics, opacities, level2, rows, band_start, band_ids, height, width, threads):
    """(inside, visited): pixel-Gaussian pairs that pass the cutoff, and pairs the kernels evaluate.

    ``inside`` is a property of the model (the work any exact renderer must do); ``visited`` also counts
    the pixels of the widened spans that the cutoff test then rejects. For benchmarks.
    """
    half, cut = typed(means, 0.5), typed(means, CUTOFF)
    inside = 0
    visited = 0
    n_bands = band_start.shape[0] - 1
    for k_band in prange(n_bands):
        band = spread(k_band, n_bands, threads)
        use_wide_vectors()
        band_lo = band * BAND_ROWS
        band_hi = min(band_lo + BAND_ROWS, height) - 1
        spans = np.empty((BAND_ROWS, 2), np.int32)  # scratch, once per band
        band_inside = 0
        band_visited = 0
        for e in range(band_start[band], band_start[band + 1]):
            g = band_ids[e]
            mx, my, a, b, c, o = means[g, 0], means[g, 1], conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            first, last = max(rows[g, 0], band_lo), min(rows[g, 1], band_hi)
            row_spans(np.float64(mx), np.float64(my), np.float64(a), np.float64(b), np.float64(c), level2[g],
                      first, last, width, spans)
            for i in range(first, last + 1):
                j0, j1 = spans[i - first, 0], spans[i - first, 1]
                dy = (typed(means, i) + half) - my
                cdyy = c * dy * dy
                for j in range(j0, j1 + 1):
                    dx = (typed(means, j) + half) - mx
                    sigma = half * (a * dx * dx + cdyy) + b * dx * dy
                    band_inside += o * vexp(-sigma) >= cut
                band_visited += max(j1 - j0 + 1, 0)
        inside += band_inside
        visited += band_visited
    return inside, visited


@njit(**_JIT)
def gradients_from_sums(sums, conics, opacities, grad_means, grad_conics, grad_colors, grad_opacities):
    """dL/d(means, conics, colors, opacities) from the per-Gaussian sums (N, N_SUMS), into the given arrays.

    With s = dL/dsigma at each pixel and d = (dx, dy) = pixel - mean, sigma = 1/2 (a dx^2 + c dy^2) + b dx dy:
    dsigma/da = dx^2 / 2, dsigma/db = dx dy, dsigma/dc = dy^2 / 2, dsigma/dmean = -Q d; and v = o exp(-sigma)
    gives dL/do = sum dL/dv exp(-sigma) = -S / o with S = sum s = -sum v dL/dv (S = 0 where o <= 0: such a
    Gaussian contributes nowhere).
    """
    for g in range(sums.shape[0]):
        s, sx, sy, sxx, sxy, syy = sums[g, 3], sums[g, 4], sums[g, 5], sums[g, 6], sums[g, 7], sums[g, 8]
        a, b, c = np.float64(conics[g, 0]), np.float64(conics[g, 1]), np.float64(conics[g, 2])
        for k in range(3):
            grad_colors[g, k] = sums[g, k]
        grad_means[g, 0] = -(a * sx + b * sy) if sx != 0.0 or sy != 0.0 else 0.0
        grad_means[g, 1] = -(b * sx + c * sy) if sx != 0.0 or sy != 0.0 else 0.0
        grad_conics[g, 0] = 0.5 * sxx
        grad_conics[g, 1] = sxy
        grad_conics[g, 2] = 0.5 * syy
        grad_opacities[g] = -s / np.float64(opacities[g]) if s != 0.0 else 0.0
