"""numba kernels of the fused training step (the contract and the maths are in :mod:`gilab.fused`).

One iteration, sum blending:

1. :func:`prepare` (Gaussians in parallel): trainable parameters -> pixel means and conics, the means'
   Jacobian (tanh is taken once per step), the cutoff level and the covered rows.
   :func:`bin_bands` (serial, O(N)) sorts the Gaussians into bands of BAND_ROWS rows.
2. :func:`forward_sum_loss` (bands in parallel): each band zeroes its rows, renders them as
   ``_cpu_kernels.forward_sum`` does, then turns them into the loss and dL/dC = 2 (clamp(C) - T) / (3 H W)
   (zero where C is outside [0, 1], as clamp's gradient) while they are still in cache.
3. ``_cpu_kernels.backward_sum`` (Gaussians in parallel, band order): each Gaussian's nine gradient sums
   over its footprint, the `cpu` backend's own backward, reading the dL/dC of step 2.
4. :func:`update` (index-ordered chunks in parallel): the sums -> gradients of the trainable parameters through
   the parametrisation, then pytorch-optimizer's Adan on the chunk's contiguous slice of every parameter.

Every Gaussian gets an Adan step, those that cover no pixel too (Adan moves a parameter whose gradient is zero
while its moments are not), as the autograd loop does. Alpha blending reuses ``_cpu_kernels.forward_alpha`` /
``backward_alpha`` with :func:`loss_gradient`, then steps 4.

The per-pixel tests are the
``cpu`` backend's (same operations, same order), so the renders are identical to it; the parametrisation
follows ``GaussianImageModel.gaussians`` operation by operation in the working dtype. Constants go through
``typed`` (a bare ``0.5`` is a float64 in numba and would promote float32 maths).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._cpu_kernels import (  # N_SUMS and backward_sum: re-exported, the fused step reads them from here
    _JIT,
    BAND_ROWS,
    LANES,
    N_SUMS,  # noqa: F401
    backward_sum,  # noqa: F401 (the fused step's backward is the cpu backend's: one home for it)
    cutoff_rows,
    row_spans,
    splat_group,
    spread,
    typed,
    use_wide_vectors,
)

#: Parametrisations, as the kernels' ``kind`` argument.
CHOLESKY, RS = 0, 1
#: GaussianImage's offsets (gilab.starts.CHOLESKY_BOUND = (0.5, 0, 0.5), SCALE_BOUND = 0.5; a test checks them).
BOUND = 0.5
#: Adan's coefficients, in the order of the ``coef`` array (see gilab.fused.adan_coefficients).
N_COEF = 9


# ------------------------------------------------------------------------------------ parametrisation
@njit(**_JIT)
def _covariance(kind, cov, rot, g):
    """(Sxx, Sxy, Syy, f) of Gaussian g in the working dtype, f = l1 l3 or s1 s2 (det = f^2), operation by
    operation as Gaussians2D._cov_terms and determinant_factor."""
    half = typed(cov, BOUND)
    if kind == CHOLESKY:
        l1, l2, l3 = cov[g, 0] + half, cov[g, 1] + typed(cov, 0.0), cov[g, 2] + half
        return l1 * l1, l1 * l2, l2 * l2 + l3 * l3, l1 * l3
    s1, s2 = abs(cov[g, 0] + half), abs(cov[g, 1] + half)
    c, s = math.cos(rot[g, 0]), math.sin(rot[g, 0])
    v1, v2 = s1 * s1, s2 * s2
    return v1 * c * c + v2 * s * s, (v1 - v2) * s * c, v1 * s * s + v2 * c * c, s1 * s2


@njit(**_JIT)
def _cutoff_level(a, b, c, log_opacity, eps):
    """``_cpu_kernels.cutoff_level`` with ln(255 o) given (opacities are fixed during a fit, so it is taken
    once): 2 ln(255 o) plus the slack that covers sigma's rounding; -1 where the Gaussian shows nowhere."""
    if not (math.isfinite(log_opacity) and math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return -1.0
    det = a * c - b * b
    condition = (a + c) * (a + c) / det if det > 0.0 else 1.0
    level2 = 2.0 * (log_opacity + 1e-4 + 64.0 * eps * condition * (1.0 + abs(log_opacity)))
    return level2 if level2 >= 0.0 else -1.0


@njit(parallel=True, **_JIT)
def prepare(kind, xyz, cov, rot, log_opacity, height, width, eps, means, conics, jacobian, level2, rows):
    """Parameters -> means (N, 2) px, conics (N, 3) (working dtype), jacobian (N, 2) float64 =
    d(pixel mean)/d(xyz), level2 (N,) and rows (N, 2) as ``_cpu_kernels.plan`` (``eps``: the working dtype's
    machine epsilon; ``log_opacity``: ln(255 o), see :func:`_cutoff_level`)."""
    one, two = typed(xyz, 1.0), typed(xyz, 2.0)
    for g in prange(xyz.shape[0]):
        tx, ty = math.tanh(xyz[g, 0]), math.tanh(xyz[g, 1])
        mx = (tx + one) * typed(xyz, width) / two  # as gilab.gaussians.ndc_to_pixels
        my = (ty + one) * typed(xyz, height) / two
        jacobian[g, 0] = (0.5 * width) * (1.0 - np.float64(tx) * np.float64(tx))
        jacobian[g, 1] = (0.5 * height) * (1.0 - np.float64(ty) * np.float64(ty))
        sxx, sxy, syy, f = _covariance(kind, cov, rot, g)
        det = f * f
        a, b, c = syy / det, -sxy / det, sxx / det
        means[g, 0], means[g, 1] = mx, my
        conics[g, 0], conics[g, 1], conics[g, 2] = a, b, c
        a64, b64, c64 = np.float64(a), np.float64(b), np.float64(c)
        level2[g] = _cutoff_level(a64, b64, c64, log_opacity[g], eps)
        rows[g, 0], rows[g, 1] = cutoff_rows(np.float64(mx), np.float64(my), a64, b64, c64, level2[g], height)


@njit(**_JIT)
def bin_bands(rows, height):
    """The Gaussians binned into bands of BAND_ROWS rows (counting sort, index order inside a band).

    Returns:
        band_start: (n_bands + 1,) int64; band b's Gaussians are ``band_ids[band_start[b]:band_start[b+1]]``.
        band_ids: (n_entries,) int32.
        order: (N,) int32, every Gaussian once: those that cover a row sorted by their first band (neighbours
            touch neighbouring pixels, which the per-Gaussian backward relies on), then the rest.
    """
    n = rows.shape[0]
    n_bands = (height + BAND_ROWS - 1) // BAND_ROWS
    band_start = np.zeros(n_bands + 1, np.int64)
    first_count = np.zeros(n_bands + 1, np.int64)  # Gaussians whose first band is b, at b + 1
    for g in range(n):
        if rows[g, 0] <= rows[g, 1]:
            lo, hi = rows[g, 0] // BAND_ROWS, rows[g, 1] // BAND_ROWS
            first_count[lo + 1] += 1
            for band in range(lo, hi + 1):
                band_start[band + 1] += 1
    for band in range(n_bands):
        band_start[band + 1] += band_start[band]
        first_count[band + 1] += first_count[band]
    fill = band_start[:-1].copy()
    band_ids = np.empty(band_start[-1], np.int32)
    order = np.empty(n, np.int32)
    tail = first_count[n_bands]  # the invisible Gaussians go after every visible one
    for g in range(n):
        if rows[g, 0] <= rows[g, 1]:
            lo, hi = rows[g, 0] // BAND_ROWS, rows[g, 1] // BAND_ROWS
            order[first_count[lo]] = g
            first_count[lo] += 1
            for band in range(lo, hi + 1):
                band_ids[fill[band]] = g
                fill[band] += 1
        else:
            order[tail] = g
            tail += 1
    return band_start, band_ids, order


# ---------------------------------------------------------------------------------- forward and loss
@njit(parallel=True, **_JIT)
def forward_sum_loss(means, conics, colors, opacities, level2, rows, band_start, band_ids, target, height, width,
                     image, grad, band_loss, threads):
    """Sum-blend render, loss and dL/dC, band by band.

    Args:
        target: flat (3 * H * (W + LANES),) working dtype, rows padded as ``image``.
        image: flat (3 * H * (W + LANES),) working dtype, overwritten: the unclamped render, rows padded with
            LANES columns (see ``_cpu_kernels.forward_sum``).
        grad: flat, the same layout: dL/dC on exit, zero in the padding (the backward reads it).
        band_loss: (n_bands,) float64: the sum of (clamp(C) - T)^2 over each band's pixels.
    """
    half, one, zero = typed(image, 0.5), typed(image, 1.0), typed(image, 0.0)
    padded = width + LANES
    assert image.shape[0] == 3 * height * padded and grad.shape[0] == image.shape[0]
    assert target.shape[0] == 3 * height * padded
    plane = np.uint64(height * padded)
    # torch: mean's backward divides by the count in the working dtype, pow's multiplies by 2 (x - T)
    inv_count = one / typed(image, 3 * height * width)
    n_bands = band_start.shape[0] - 1
    for k_band in prange(n_bands):
        band = spread(k_band, n_bands, threads)
        use_wide_vectors()
        band_lo = band * BAND_ROWS
        band_hi = min(band_lo + BAND_ROWS, height) - 1
        for k in range(3):  # this band's rows, padding included, zeroed by the thread that renders them
            for p in range(k * height * padded + band_lo * padded, k * height * padded + (band_hi + 1) * padded):
                image[p] = zero
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
                dy = (typed(image, i) + half) - my
                cdyy = c * dy * dy
                for start in range(j0, j1 + 1, LANES):
                    base = np.uint64(i * padded + start)  # unsigned: numba adds no negative-index wraparound
                    splat_group(image, base, plane, start, LANES, mx, a, b, o, c0, c1, c2, dy, cdyy)
        band_loss[band] = loss_rows(image, target, grad, plane, padded, band_lo, band_hi, width, inv_count)


@njit(inline="always", **_JIT)
def loss_rows(image, target, grad, plane, padded, first, last, width, inv_count):
    """The sum of (clamp(C) - T)^2 over rows first..last of the padded flat image, and dL/dC = 2 (clamp(C) - T) /
    (3 H W) there (zero where C is outside [0, 1], as clamp's gradient; zero in the padding), while the rows are in
    cache. ``inv_count``: 1 / (3 H W) in the working dtype, as torch's mean divides."""
    one, zero, two = typed(image, 1.0), typed(image, 0.0), typed(image, 2.0)
    # LANES float64 lanes: a single running sum would keep LLVM from vectorising the loop
    acc = np.zeros(LANES, np.float64)
    for k in range(3):
        for i in range(first, last + 1):
            row = np.uint64(k) * plane + np.uint64(i * padded)
            for start in range(0, width, LANES):  # whole groups: the last one runs into the padding
                for lane in range(LANES):
                    p = row + np.uint64(start + lane)
                    x = image[p]
                    # clamp(x, 0, 1) that keeps a NaN (so that a diverged fit shows in the loss)
                    clamped = one if x > one else (zero if x < zero else x)  # noqa: FURB136 (max() drops NaN)
                    diff = clamped - target[p]
                    diff = diff if start + lane < width else zero
                    acc[lane] += np.float64(diff * diff)
                    inside = (x >= zero) & (x <= one)  # clamp passes the gradient on [0, 1], ends included
                    grad[p] = (two * diff) * inv_count if inside else zero
    total = 0.0
    for lane in range(LANES):
        total += acc[lane]
    return total


@njit(parallel=True, **_JIT)
def loss_gradient(image, target, grad):
    """Loss sum and dL/dC for an unpadded flat (3 * H * W,) render and target (alpha blending); returns the
    sum of (clamp(C) - T)^2."""
    one, zero, two = typed(image, 1.0), typed(image, 0.0), typed(image, 2.0)
    inv_count = one / typed(image, image.shape[0])
    total = 0.0
    for p in prange(image.shape[0]):
        x = image[p]
        clamped = one if x > one else (zero if x < zero else x)  # noqa: FURB136 (max() drops NaN)
        diff = clamped - target[p]
        total += np.float64(diff * diff)
        grad[p] = (two * diff) * inv_count if (x >= zero) & (x <= one) else zero
    return total


@njit(parallel=True, **_JIT)
def update(kind, xyz, cov, rot, colors, state_xyz, state_cov, state_rot, state_colors, conics, jacobian, sums,
           grad_xyz, grad_cov, grad_rot, grad_colors, coef, first_step, n_chunks):
    """The chain rule and Adan for every Gaussian, in one parallel pass over index-ordered chunks (one launch
    instead of four: on a busy machine every launch waits for its slowest thread).

    Args:
        xyz, cov, rot, colors: the parameters (N, 2), (N, 3 or 2), (N, 1), (N, 3), updated in place.
        state_*: (4, N * K) Adan state of each (see :func:`adan`); grad_*: scratch shaped like the parameters.
        conics, jacobian: from :func:`prepare`; sums: (N, N_SUMS) float64 from the backward.
        coef, first_step: see :func:`adan`; ``rot`` is untouched for the Cholesky parametrisation.
    """
    n = xyz.shape[0]
    n_chunks = max(1, min(n, n_chunks))
    for chunk in prange(n_chunks):
        lo, hi = chunk * n // n_chunks, (chunk + 1) * n // n_chunks
        parameter_gradients(kind, cov, rot, conics, jacobian, sums, grad_xyz, grad_cov, grad_rot, grad_colors,
                            lo, hi)
        _adan_rows(xyz, state_xyz, grad_xyz, lo, hi, coef, first_step)
        _adan_rows(cov, state_cov, grad_cov, lo, hi, coef, first_step)
        if kind == RS:
            _adan_rows(rot, state_rot, grad_rot, lo, hi, coef, first_step)
        _adan_rows(colors, state_colors, grad_colors, lo, hi, coef, first_step)


@njit(**_JIT)
def _adan_rows(param, state, grad, lo, hi, coef, first_step):
    """:func:`adan` on rows lo..hi - 1 of an (N, K) parameter: a contiguous range of its elements."""
    k = param.shape[1]
    _adan_range(param.reshape(-1), state, grad.reshape(-1), lo * k, hi * k, coef, first_step)


@njit(**_JIT)
def parameter_gradients(kind, cov, rot, conics, jacobian, sums, grad_xyz, grad_cov, grad_rot, grad_colors, lo, hi):
    """dL/d(parameters) of Gaussians lo..hi - 1 from the sums (N, N_SUMS) of their footprints, into
    arrays shaped like the parameters (working dtype); the maths in float64.

    As ``_cpu_kernels.gradients_from_sums``, then back through the parametrisation. With conic
    (a, b, c) = (Syy, -Sxy, Sxx) / D and D = f^2: dL/dSyy = ga / D, dL/dSxy = -gb / D, dL/dSxx = gc / D,
    dL/df = -2 (ga a + gb b + gc c) / f.
    """
    half = typed(cov, BOUND)
    for g in range(lo, hi):
        sx, sy, sxx_s, sxy_s, syy_s = sums[g, 4], sums[g, 5], sums[g, 6], sums[g, 7], sums[g, 8]
        a, b, c = np.float64(conics[g, 0]), np.float64(conics[g, 1]), np.float64(conics[g, 2])
        covered = sx != 0.0 or sy != 0.0  # 0, not NaN, where nothing was covered
        grad_xyz[g, 0] = -(a * sx + b * sy) * jacobian[g, 0] if covered else 0.0
        grad_xyz[g, 1] = -(b * sx + c * sy) * jacobian[g, 1] if covered else 0.0
        for k in range(3):
            grad_colors[g, k] = sums[g, k]
        ga, gb, gc = 0.5 * sxx_s, sxy_s, 0.5 * syy_s
        if kind == CHOLESKY:
            l1, l2, l3 = (np.float64(cov[g, 0] + half), np.float64(cov[g, 1] + typed(cov, 0.0)),
                          np.float64(cov[g, 2] + half))
            f = l1 * l3
        else:
            u1, u2 = cov[g, 0] + half, cov[g, 1] + half
            l1, l2, l3 = np.float64(abs(u1)), np.float64(abs(u2)), 0.0  # s1, s2
            f = l1 * l2
        if ga == 0.0 and gb == 0.0 and gc == 0.0:  # nothing covered: exact zeros (never 0 * inf)
            for k in range(cov.shape[1]):
                grad_cov[g, k] = 0.0
            grad_rot[g, 0] = 0.0
            continue
        det = f * f
        g_syy, g_sxy, g_sxx = ga / det, -gb / det, gc / det
        g_f = -2.0 * (ga * a + gb * b + gc * c) / f
        if kind == CHOLESKY:
            grad_cov[g, 0] = 2.0 * l1 * g_sxx + l2 * g_sxy + l3 * g_f
            grad_cov[g, 1] = l1 * g_sxy + 2.0 * l2 * g_syy
            grad_cov[g, 2] = 2.0 * l3 * g_syy + l1 * g_f
            continue
        s1, s2 = l1, l2
        theta = np.float64(rot[g, 0])
        co, si = math.cos(theta), math.sin(theta)
        v1, v2 = s1 * s1, s2 * s2
        g_v1 = g_sxx * co * co + g_sxy * si * co + g_syy * si * si
        g_v2 = g_sxx * si * si - g_sxy * si * co + g_syy * co * co
        grad_cov[g, 0] = _sign(u1) * (2.0 * s1 * g_v1 + s2 * g_f)  # |u|' = sign(u), 0 at 0 (as torch)
        grad_cov[g, 1] = _sign(u2) * (2.0 * s2 * g_v2 + s1 * g_f)
        grad_rot[g, 0] = (v1 - v2) * (2.0 * si * co * (g_syy - g_sxx) + (co * co - si * si) * g_sxy)


@njit(**_JIT)
def _sign(u):
    return 1.0 if u > 0 else (-1.0 if u < 0 else 0.0)


@njit(parallel=True, **_JIT)
def adan(param, state, grad, coef, first_step):
    """One Adan step of every element of a flat ``param`` (M,) from ``grad`` (M,), in the working dtype, as
    pytorch-optimizer's Adan (weight decay 0) computes it, operation by operation.

    ``state`` (4, M): exp_avg m, exp_avg_diff v, exp_avg_sq n and -g_prev (pytorch-optimizer keeps the
    previous gradient negated). ``coef`` (N_COEF,), working dtype: 1 - b1, 1 - b2, b2, b3, 1 - b3, sqrt of the
    third bias correction, eps, -lr / bc1, -lr b2 / bc2. On the first step -g_prev = -g (the difference is 0).
    """
    n = param.shape[0]
    n_chunks = max(1, min(n // 4096, 64))
    for chunk in prange(n_chunks):
        _adan_range(param, state, grad, chunk * n // n_chunks, (chunk + 1) * n // n_chunks, coef, first_step)


@njit(**_JIT)
def _adan_range(param, state, grad, lo, hi, coef, first_step):
    """:func:`adan` on the elements lo..hi - 1."""
    use_wide_vectors()
    w1, w2, b2, b3, w3, bc3, eps, step, diff_step = (coef[0], coef[1], coef[2], coef[3], coef[4], coef[5],
                                                     coef[6], coef[7], coef[8])
    m_all, v_all, sq_all, prev_all = state[0], state[1], state[2], state[3]
    for i in range(lo, hi):
        gr = grad[i]
        diff = (-gr if first_step else prev_all[i]) + gr
        m = m_all[i]
        m = m + w1 * (gr - m)  # torch.lerp with a weight below 1/2
        v = v_all[i]
        v = v + w2 * (diff - v)
        update = diff * b2 + gr
        sq = sq_all[i] * b3 + w3 * update * update
        denominator = np.sqrt(sq) / bc3 + eps
        p = param[i]
        p = p + step * m / denominator
        p = p + diff_step * v / denominator
        param[i] = p
        m_all[i], v_all[i], sq_all[i], prev_all[i] = m, v, sq, -gr
