"""An experiment kept runnable: the fused step's render, loss and backward in one pass over the bands.

    GILAB_DATA=/work/shared/data python benchmarks/one_pass.py [--out figures/one_pass.json] [--rounds 8]

The fused step (gilab.fused) renders band by band (``forward_sum_loss``), then runs the `cpu` backend's backward
Gaussian by Gaussian (``backward_sum``), which evaluates every pixel's v = o exp(-sigma) and every row's span a
second time. A band's pixels are final once its Gaussians are splatted, so its dL/dC is known at once, and the
backward of each (band, Gaussian) entry can run while the band is in cache, reading the v and the spans the
forward kept. :func:`render_loss_backward_sum` below does that; the entries' sums are added per Gaussian by
``reduce_partials``. It is not in the package: on the AVX2 machine it measured 0.88x (random start) and 1.06x
(network's start) the two-pass step (figures/README.md, "Fitting speed"). It lives here so that the other
machine kinds (AVX-512, with twice the vector registers) can measure it with one command.

Measured on kodim23 with 40,000 Gaussians from the random and the network's start (``benchmarks/fitting.py``'s
cases): agreement (image and dL/dC bit-identical, gradient sums' largest relative difference), the kernels alone
(CPU time, one thread, minimum over alternating calls), and the whole fused step both ways (2 threads, the
machine's, in interleaved rounds, median it/s and per-round ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gilab.render._cpu_kernels import (
    _JIT,
    BAND_ROWS,
    CUTOFF,
    FLUSH_ROWS,
    HALF_LANES,
    LANES,
    N_SUMS,
    _flush,
    _zero,
    add_gradient_terms,
    reduce_partials,
    row_spans,
    spread,
    typed,
    use_wide_vectors,
    vexp,
)
from gilab.render._fused_kernels import loss_rows

assert BAND_ROWS <= FLUSH_ROWS  # an entry spans at most one flush's rows: one float64 flush per entry
#: Compiled afresh in each process (a few seconds): numba's on-disk cache ties a kernel to its module's name, and
#: this script runs both as __main__ and as a module loaded by the tests.
_JIT = {**_JIT, "cache": False}


# ------------------------------------------------------------------------------------------- the kernel
@njit(inline="always", **_JIT)
def splat_keep_group(out, kept, at, base, plane, start, mx, a, b, o, c0, c1, c2, dy, cdyy):
    """``_cpu_kernels.splat_group`` for LANES pixels that also keeps each pixel's v (0 outside the cutoff) in
    kept[at:at + LANES]: the same operations in the same order, so the image is the same."""
    half, one, zero, cut = typed(out, 0.5), typed(out, 1.0), typed(out, 0.0), typed(out, CUTOFF)
    for lane in range(LANES):
        dx = (typed(out, start + lane) + half) - mx
        sigma = half * (a * dx * dx + cdyy) + b * dx * dy
        v = o * vexp(-sigma)
        v = v if v >= cut else zero  # NaN -> 0 too: such a pixel adds nothing, as in splat_group
        kept[at + np.uint64(lane)] = v
        w = min(v, one)
        p = base + np.uint64(lane)
        out[p] += c0 * w
        out[p + plane] += c1 * w
        out[p + plane + plane] += c2 * w


@njit(inline="always", **_JIT)
def kept_gradient_group(lanes, grad, kept, at, base, plane, start, count, mx, c0, c1, c2, dy, dy2):
    """``_cpu_kernels.gradient_group`` from the kept v (no exp); ``count`` pixels from column ``start``."""
    half, one, zero = typed(grad, 0.5), typed(grad, 1.0), typed(grad, 0.0)
    for lane in range(count):
        dx = (typed(grad, start + lane) + half) - mx
        v = kept[at + np.uint64(lane)]
        p = base + np.uint64(lane)
        g0, g1, g2 = grad[p], grad[p + plane], grad[p + plane + plane]
        dl_dv = (c0 * g0 + c1 * g1 + c2 * g2) if v <= one else zero  # min(v, 1) stops the gradient above 1
        add_gradient_terms(lanes, lane, min(v, one), -(v * dl_dv), g0, g1, g2, dx, dy, dy2)


@njit(parallel=True, **_JIT)
def render_loss_backward_sum(means, conics, colors, opacities, level2, rows, band_start, band_ids, target, height,
                             width, image, grad, band_loss, partial, threads):
    """``_fused_kernels.forward_sum_loss`` and the render's backward in one pass: as forward_sum_loss (same
    arguments, same outputs), plus partial: (>= n_entries, N_SUMS) float64, each (band, Gaussian) entry's
    backward sums over the band's rows."""
    half, one, zero = typed(image, 0.5), typed(image, 1.0), typed(image, 0.0)
    padded = width + LANES
    assert image.shape[0] == 3 * height * padded and grad.shape[0] == image.shape[0]
    assert target.shape[0] == 3 * height * padded and partial.shape[0] >= band_ids.shape[0]
    plane = np.uint64(height * padded)
    inv_count = one / typed(image, 3 * height * width)
    n_bands = band_start.shape[0] - 1
    for k_band in prange(n_bands):
        band = spread(k_band, n_bands, threads)
        use_wide_vectors()
        band_lo = band * BAND_ROWS
        band_hi = min(band_lo + BAND_ROWS, height) - 1
        e0, e1 = band_start[band], band_start[band + 1]
        # 1. every entry's row spans, and the size of the scratch for the kept v (whole groups of LANES per row)
        row_at = np.empty(e1 - e0 + 1, np.int64)
        row_at[0] = 0
        for e in range(e0, e1):
            g = band_ids[e]
            row_at[e - e0 + 1] = row_at[e - e0] + max(min(rows[g, 1], band_hi) - max(rows[g, 0], band_lo) + 1, 0)
        spans = np.empty((row_at[e1 - e0] + 1, 2), np.int32)
        n_kept = 0
        for e in range(e0, e1):
            g = band_ids[e]
            first, last = max(rows[g, 0], band_lo), min(rows[g, 1], band_hi)
            at = row_at[e - e0]
            row_spans(np.float64(means[g, 0]), np.float64(means[g, 1]), np.float64(conics[g, 0]),
                      np.float64(conics[g, 1]), np.float64(conics[g, 2]), level2[g], first, last, width,
                      spans[at:])
            for r in range(last - first + 1):
                n_kept += max(spans[at + r, 1] - spans[at + r, 0] + LANES, 0) // LANES * LANES
        kept = np.empty(n_kept + 1, image.dtype)
        # 2. the forward
        for k in range(3):
            for p in range(k * height * padded + band_lo * padded, k * height * padded + (band_hi + 1) * padded):
                image[p] = zero
        at_kept = np.uint64(0)
        for e in range(e0, e1):
            g = band_ids[e]
            mx, my, a, b, c, o = means[g, 0], means[g, 1], conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            c0, c1, c2 = colors[g, 0], colors[g, 1], colors[g, 2]
            first, last = max(rows[g, 0], band_lo), min(rows[g, 1], band_hi)
            at = row_at[e - e0]
            for i in range(first, last + 1):
                j0, j1 = spans[at + i - first, 0], spans[at + i - first, 1]
                dy = (typed(image, i) + half) - my
                cdyy = c * dy * dy
                for start in range(j0, j1 + 1, LANES):
                    base = np.uint64(i * padded + start)
                    splat_keep_group(image, kept, at_kept, base, plane, start, mx, a, b, o, c0, c1, c2, dy, cdyy)
                    at_kept += np.uint64(LANES)
        # 3. the band's loss and dL/dC, as forward_sum_loss
        band_loss[band] = loss_rows(image, target, grad, plane, padded, band_lo, band_hi, width, inv_count)
        # 4. each entry's backward over the band's rows, from the kept v and spans
        lanes = np.empty((N_SUMS, LANES), grad.dtype)
        sums = np.empty(N_SUMS, np.float64)
        at_kept = np.uint64(0)
        for e in range(e0, e1):
            g = band_ids[e]
            mx, my = means[g, 0], means[g, 1]
            c0, c1, c2 = colors[g, 0], colors[g, 1], colors[g, 2]
            first, last = max(rows[g, 0], band_lo), min(rows[g, 1], band_hi)
            at = row_at[e - e0]
            _zero(lanes)
            for q in range(N_SUMS):
                sums[q] = 0.0
            for i in range(first, last + 1):
                j0, j1 = spans[at + i - first, 0], spans[at + i - first, 1]
                dy = (typed(grad, i) + half) - my
                dy2 = dy * dy
                for start in range(j0, j1 + 1, LANES):
                    base = np.uint64(i * padded + start)
                    if j1 - start < HALF_LANES:
                        kept_gradient_group(lanes, grad, kept, at_kept, base, plane, start, HALF_LANES, mx, c0, c1,
                                            c2, dy, dy2)
                    else:
                        kept_gradient_group(lanes, grad, kept, at_kept, base, plane, start, LANES, mx, c0, c1, c2,
                                            dy, dy2)
                    at_kept += np.uint64(LANES)
            _flush(lanes, sums)
            for q in range(N_SUMS):
                partial[e, q] = sums[q]


# ------------------------------------------------------------------------------ the fused step, both ways
class OnePassKernels:
    """``gilab.render._fused_kernels`` with forward_sum_loss doing the whole pass and backward_sum only adding
    the entries' sums up: swapped in for one FusedStep's steps (:func:`one_pass`)."""

    def __init__(self, kernels):
        self._k, self._partial, self._band_ids = kernels, np.empty((0, N_SUMS)), None

    def __getattr__(self, name):
        return getattr(self._k, name)

    def forward_sum_loss(self, means, conics, colors, opacities, level2, rows, band_start, band_ids, target, height,
                         width, image, grad, band_loss, threads):
        if self._partial.shape[0] < band_ids.shape[0]:
            self._partial = np.empty((band_ids.shape[0] * 5 // 4, N_SUMS))
        self._band_ids = band_ids
        render_loss_backward_sum(means, conics, colors, opacities, level2, rows, band_start, band_ids, target,
                                 height, width, image, grad, band_loss, self._partial, threads)

    def backward_sum(self, means, conics, colors, opacities, level2, rows, order, grad, height, width, sums,
                     n_chunks, threads):
        sums[:] = 0.0
        reduce_partials(self._band_ids, self._partial, sums)


@contextlib.contextmanager
def one_pass(kernels):
    """FusedStep.step() inside this block runs the one-pass kernel."""
    import gilab.fused

    saved = gilab.fused._kernels
    gilab.fused._kernels = lambda: kernels
    try:
        yield
    finally:
        gilab.fused._kernels = saved


# ------------------------------------------------------------------------------------------ measurement
def kernel_times(step, repeats: int) -> dict:
    """Both ways' kernels on the step's current Gaussians: agreement and one-thread CPU times (ms)."""
    import numba

    from gilab.render import _cpu_kernels as ck
    from gilab.render import _fused_kernels as k

    numba.set_num_threads(1)
    p = step._params
    band_start, band_ids, order = k.bin_bands(step.rows, step.height)
    args = (step.means, step.conics, p["colors"], step.opacities, step.level2, step.rows)
    partial, sums = np.empty((band_ids.shape[0], N_SUMS)), np.zeros_like(step._sums)
    image, grad, loss = step._image, step._grad, step._band_loss
    calls = {
        "forward_loss": lambda: k.forward_sum_loss(*args, band_start, band_ids, step.target, step.height,
                                                   step.width, image, grad, loss, 1),
        "backward": lambda: k.backward_sum(*args, order, grad, step.height, step.width, sums, 32, 1),
        "one_pass": lambda: render_loss_backward_sum(*args, band_start, band_ids, step.target, step.height,
                                                     step.width, image, grad, loss, partial, 1),
        "reduce": lambda: ck.reduce_partials(band_ids, partial, np.zeros_like(sums)),
    }
    calls["forward_loss"](), calls["backward"]()
    two_pass = image.copy(), grad.copy(), sums.copy()
    calls["one_pass"]()
    one = np.zeros_like(sums)
    ck.reduce_partials(band_ids, partial, one)
    scale = np.maximum(np.abs(two_pass[2]).max(axis=0), 1e-300)
    agreement = {"image_identical": bool(np.array_equal(two_pass[0], image)),
                 "grad_identical": bool(np.array_equal(two_pass[1], grad)),
                 "sums_max_relative_difference": float((np.abs(two_pass[2] - one).max(axis=0) / scale).max())}
    seconds = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            c0 = time.process_time()
            call()
            seconds[name].append(time.process_time() - c0)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    ms = {name: round(min(s) * 1e3, 2) for name, s in seconds.items()}
    ms["two_pass_total"] = round(ms["forward_loss"] + ms["backward"], 2)
    ms["one_pass_total"] = round(ms["one_pass"] + ms["reduce"], 2)
    return {"agreement": agreement, "kernels_ms_one_thread": ms,
            "kernel_speedup": round(ms["two_pass_total"] / ms["one_pass_total"], 3)}


def step_rates(target, start, rounds: int, per_round: int = 10) -> dict:
    """The whole fused step, two-pass and one-pass, in interleaved rounds (all the machine's threads)."""
    from gilab.fitting import GaussianImageModel
    from gilab.fused import FusedStep
    from gilab.render import _fused_kernels

    _, height, width = target.shape
    steps = {way: FusedStep(GaussianImageModel(start, height, width), target) for way in ("two_pass", "one_pass")}
    kernels = OnePassKernels(_fused_kernels)

    def run(way, count):
        if way == "one_pass":
            with one_pass(kernels):
                return [steps[way].step() for _ in range(count)]
        return [steps[way].step() for _ in range(count)]

    losses = {way: run(way, 3) for way in steps}  # warm-up, and the trajectories side by side
    rates = {way: [] for way in steps}
    for _ in range(rounds):
        for way in steps:
            t0 = time.perf_counter()
            run(way, per_round)
            rates[way].append(per_round / (time.perf_counter() - t0))
    ratios = [o / t for o, t in zip(rates["one_pass"], rates["two_pass"])]
    return {"loss_after_3_steps": {way: v[-1] for way, v in losses.items()},
            "it_s": {way: round(statistics.median(v), 2) for way, v in rates.items()},
            "speedup": round(statistics.median(ratios), 3), "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "figures" / "one_pass.json")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=21, help="alternating calls of each kernel")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gilab_fitting_benchmark",
                        help="the cases' starts (shared with benchmarks/fitting.py)")
    args = parser.parse_args(argv)
    import fitting

    from gilab.errors import GilabError

    try:
        cases = {name: fitting.make_case(name, args.cache) for name in fitting.QUICK}
    except GilabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import numba

    from gilab.fitting import GaussianImageModel
    from gilab.fused import FusedStep
    from gilab.machine import cpu_name

    rows = []
    for name, (target, start) in cases.items():
        _, height, width = target.shape
        step = FusedStep(GaussianImageModel(start, height, width), target)
        step.step()  # prepares the Gaussians the kernels are timed on
        row = {"case": name, **kernel_times(step, args.repeats), **step_rates(target, start, args.rounds)}
        rows.append(row)
        print(f"{name}: kernels {row['kernel_speedup']:.2f}x (one thread), step {row['speedup']:.2f}x "
              f"({row['it_s']['two_pass']:.1f} -> {row['it_s']['one_pass']:.1f} it/s), agreement {row['agreement']}",
              flush=True)
    out = {"benchmark": __doc__.split("\n")[0], "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": {"cpu": cpu_name(), "threads": numba.config.NUMBA_NUM_THREADS,
                       "load_average": list(os.getloadavg())}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
