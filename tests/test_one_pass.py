"""benchmarks/one_pass.py: the one-pass render + loss + backward experiment stays exact against the fused step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_benchmark
from render_cases import random_cholesky
from test_fit import smooth_image

from gilab.fitting import GaussianImageModel
from gilab.render import cpu

pytestmark = pytest.mark.skipif(not cpu.available()[0], reason=cpu.available()[1])

H, W = 40, 56


def model_and_target(n=60, seed=4):
    """Small and large Gaussians (the large ones span several bands, some run off the image's edges)."""
    g = random_cholesky(n, H, W, seed=seed, spread=1.1, scale=(0.5, 8.0))
    return GaussianImageModel(g, H, W, "cholesky"), smooth_image(H, W)


def test_one_pass_kernel_matches_the_two_passes():
    from gilab.fused import FusedStep
    from gilab.render import _cpu_kernels as ck
    from gilab.render import _fused_kernels as k

    bench = load_benchmark("one_pass")
    model, target = model_and_target()
    step = FusedStep(model, target)
    step.step()
    p = step._params
    band_start, band_ids, order = k.bin_bands(step.rows, H)
    assert (np.diff(band_start) > 0).all() and band_ids.shape[0] > 60  # Gaussians in several bands
    args = (step.means, step.conics, p["colors"], step.opacities, step.level2, step.rows)
    k.forward_sum_loss(*args, band_start, band_ids, step.target, H, W, step._image, step._grad, step._band_loss, 2)
    two = step._image.copy(), step._grad.copy(), step._band_loss.copy(), np.zeros_like(step._sums)
    k.backward_sum(*args, order, step._grad, H, W, two[3], 8, 2)
    partial = np.empty((band_ids.shape[0], k.N_SUMS))
    bench.render_loss_backward_sum(*args, band_start, band_ids, step.target, H, W, step._image, step._grad,
                                   step._band_loss, partial, 2)
    sums = np.zeros_like(two[3])
    ck.reduce_partials(band_ids, partial, sums)
    assert np.array_equal(two[0], step._image) and np.array_equal(two[1], step._grad)
    assert np.array_equal(two[2], step._band_loss)
    scale = np.abs(two[3]).max(axis=0)
    assert (scale > 0).all()
    assert (np.abs(sums - two[3]).max(axis=0) <= 1e-5 * scale).all()  # float32 lanes regrouped by band


def test_fused_step_follows_the_same_trajectory_with_it():
    from gilab.fused import FusedStep
    from gilab.render import _fused_kernels

    bench = load_benchmark("one_pass")
    model_a, target = model_and_target(seed=5)
    model_b, _ = model_and_target(seed=5)
    plain, swapped = FusedStep(model_a, target, lr=1e-2), FusedStep(model_b, target, lr=1e-2)
    kernels = bench.OnePassKernels(_fused_kernels)
    for _ in range(10):
        loss_a = plain.step()
        with bench.one_pass(kernels):
            loss_b = swapped.step()
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
