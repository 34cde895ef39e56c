"""The ``cpu`` backend (numba) against the dense reference: images, gradients, gradcheck, edge cases."""

import pytest
import render_cases
import torch
from render_cases import BACKGROUND, NAMES, hard_cases, image_and_grads, random_cholesky

import gilab
from gilab import Gaussians2D
from gilab.render import cpu

pytestmark = pytest.mark.skipif(not cpu.available()[0], reason=cpu.available()[1])

CASES = hard_cases()


def assert_matches_dense(g, height, width, blend, label=""):
    render_cases.assert_matches_dense(g, height, width, blend, "cpu", label)


@pytest.mark.parametrize("blend", ["sum", "alpha"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_matches_dense(case, blend):
    g, height, width = CASES[case]
    assert_matches_dense(g, height, width, blend, label=f"{case}/")


@pytest.mark.parametrize("blend", ["sum", "alpha"])
def test_cpu_float64_matches_dense_exactly(blend):
    """In float64 the two codes differ only in summation order (and numba's exp is libm's): ~1e-15."""
    g, height, width = CASES["random"]
    truth = image_and_grads(g.to(torch.float64), height, width, blend, "dense")
    out = image_and_grads(g.to(torch.float64), height, width, blend, "cpu")
    for name, t, o in zip(NAMES, truth, out):
        assert o.dtype == torch.float64
        assert (o - t).abs().max().item() <= 1e-12 * max(1.0, t.abs().max().item()), name


@pytest.mark.parametrize("blend", ["sum", "alpha"])
def test_gradcheck(blend):
    """Exact gradients wrt means, conics, colours, opacities (and background), float64."""
    g = random_cholesky(6, 7, 8, seed=21, dtype=torch.float64, scale=(0.8, 2.0))
    conics = g.conics().detach()
    tensors = [g.means, conics, g.colors, g.opacities]
    if blend == "alpha":
        tensors.append(BACKGROUND.double())
    leaves = [t.detach().clone().requires_grad_() for t in tensors]

    def render(means, conics, colors, opacities, background=None):
        return cpu.rasterize(means, conics, colors, opacities, 7, 8, blend=blend, background=background)

    assert torch.autograd.gradcheck(render, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("param", ["cholesky", "rs"])
def test_gradcheck_through_parametrisations(param):
    """The chain rule from conics to Cholesky factors or scales and rotations stays in PyTorch."""
    g = random_cholesky(4, 6, 7, seed=22, dtype=torch.float64, scale=(0.8, 2.0))
    if param == "rs":
        g = g.to_scale_rotation()
        tensors = [g.means, g.scales, g.rotations, g.colors, g.opacities]
        make = Gaussians2D.from_scale_rotation
    else:
        tensors = [g.means, g.cholesky, g.colors, g.opacities]
        make = Gaussians2D.from_cholesky
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    fn = lambda *ts: gilab.render(make(*ts), 6, 7, backend="cpu")
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


def test_every_gaussian_over_a_pixel_counts():
    """No per-tile cap: 1,000 Gaussians centred on one pixel all count (the reference CUDA code stops at 256)."""
    n = 1000
    g = Gaussians2D.from_cholesky(torch.full((n, 2), 8.5), torch.tensor([[2.0, 0.0, 2.0]]).repeat(n, 1),
                                  torch.full((n, 3), 1e-3))
    image = gilab.render(g, 16, 16, backend="cpu")
    assert image[0, 8, 8].item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("case", ["random", "large", "near_singular", "off_image"])
def test_evaluations_count_the_pairs_the_dense_reference_keeps(case):
    """cpu.evaluations() is the number of nonzero (pixel, Gaussian) values of the dense reference: the same test."""
    from gilab.gaussians import pixel_centres
    from gilab.render.dense import gaussian_values

    g, height, width = CASES[case]
    conics = g.conics()
    expected = int((gaussian_values(g.means, conics, g.opacities, pixel_centres(height, width)) > 0).sum())
    assert expected > 0
    assert cpu.evaluations(g.means, conics, g.opacities, height, width) == expected


def test_cutoff_is_exact():
    """A contribution just under 1/255 is exactly zero, just over it is kept."""
    for o, expected_zero in [(0.99 / 255, True), (1.01 / 255, False)]:
        g = Gaussians2D.from_cholesky(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0, 1.0]]),
                                      torch.ones(1, 3), torch.tensor([o]))
        assert (gilab.render(g, 1, 1, backend="cpu")[0, 0, 0].item() == 0.0) == expected_zero, o


def test_alpha_stops_when_opaque():
    """T after the first Gaussian is 1e-3, after a second would be 1e-6 <= 1e-4: only the first is composited."""
    n = 5
    g = Gaussians2D.from_cholesky(torch.full((n, 2), 0.5), torch.tensor([[1.0, 0.0, 1.0]]).repeat(n, 1),
                                  torch.eye(3)[[0, 0, 0, 1, 2]], torch.full((n,), 0.999))
    c = gilab.render(g, 1, 1, blend="alpha", backend="cpu")[:, 0, 0]
    assert c.tolist() == pytest.approx([0.999, 0.0, 0.0], abs=1e-6)


def test_gradient_at_the_clamp():
    """A Gaussian whose mean sits on a pixel centre has v = 1 there: min(1, v) passes the gradient (as torch's
    clamp does), so cpu and dense agree on this common case (means placed on pixel centres)."""
    g = Gaussians2D.from_cholesky(torch.tensor([[2.5, 1.5]]), torch.tensor([[1.0, 0.3, 1.2]]),
                                  torch.tensor([[0.3, 0.6, 0.9]]))
    assert_matches_dense(g, 4, 5, "sum")


def test_large_and_tiny_mixed_in_bands():
    """Gaussians spanning many row bands next to sub-pixel ones, on a canvas taller than one band."""
    big = random_cholesky(5, 70, 40, seed=23, scale=(8.0, 20.0))
    small = random_cholesky(300, 70, 40, seed=24, scale=(0.1, 1.0))
    g = Gaussians2D.from_cholesky(*(torch.cat([x, y]) for x, y in zip(
        (big.means, big.cholesky, big.colors, big.opacities), (small.means, small.cholesky, small.colors,
                                                               small.opacities))))
    for blend in ["sum", "alpha"]:
        assert_matches_dense(g, 70, 40, blend)


def test_inputs_are_checked():
    g = random_cholesky(3, 4, 4)
    args = (g.means, g.conics(), g.colors, g.opacities, 4, 4)
    with pytest.raises(ValueError, match="blend"):
        cpu.rasterize(*args, blend="max")
    with pytest.raises(TypeError, match="float32 or float64"):
        cpu.rasterize(g.means.half(), *args[1:])
    meta = torch.empty(3, 2, device="meta")
    with pytest.raises(ValueError, match="CPU tensors"):
        cpu.rasterize(meta, *args[1:])


def test_constants_match_the_model():
    from gilab.gaussians import CUTOFF
    from gilab.render import _cpu_kernels, dense

    assert _cpu_kernels.CUTOFF == CUTOFF
    assert (_cpu_kernels.ALPHA_MAX, _cpu_kernels.T_MIN) == (dense.ALPHA_MAX, dense.T_MIN)


def test_auto_picks_cpu_on_cpu():
    assert gilab.render.pick_backend(torch.device("cpu"), "sum") == "cpu"
    assert gilab.render.pick_backend(torch.device("cpu"), "alpha") == "cpu"


def test_shapes_are_checked():
    """The kernels index without bounds checks, so wrong shapes must stop at the door."""
    g = random_cholesky(3, 4, 4)
    with pytest.raises(ValueError, match="conics must have shape"):
        cpu.rasterize(g.means, g.conics()[:, :2], g.colors, g.opacities, 4, 4)
    with pytest.raises(ValueError, match="opacities must have shape"):
        cpu.rasterize(g.means, g.conics(), g.colors, g.opacities[:2], 4, 4)


@pytest.mark.parametrize("blend", ["sum", "alpha"])
def test_strided_inputs_and_expanded_gradient(blend):
    """Non-contiguous inputs and the stride-0 gradient of ``.sum()`` give the same gradients as dense."""
    g = random_cholesky(40, 12, 15, seed=25)
    wide = torch.cat([g.colors, torch.zeros_like(g.colors)], 1)  # colours as a strided view
    results = []
    for backend in ["cpu", "dense"]:
        leaves = [g.means.clone().requires_grad_(), g.conics().detach().t().contiguous().t().requires_grad_(),
                  wide.clone().requires_grad_(), g.opacities.clone().requires_grad_()]
        image = gilab.render.rasterize(leaves[0], leaves[1], leaves[2][:, :3], leaves[3], 12, 15, blend=blend,
                                       backend=backend)
        image.sum().backward()
        results.append([image.detach()] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_threads_take_interleaved_bands():
    """``spread`` permutes a prange's items so that numba's static split (one contiguous run of iterations per
    thread) hands each thread every n-th band or chunk; the renders do not depend on it (the tests above)."""
    import numba
    import numpy as np

    from gilab.render._cpu_kernels import spread

    for n in range(1, 40):
        for threads in (1, 2, 3, 4, 7):
            items = [spread(k, n, threads) for k in range(n)]
            assert sorted(items) == list(range(n)), (n, threads)
            if threads <= n:  # numba's runs: q + 1 iterations for the first n % threads threads, q for the rest
                q, r = divmod(n, threads)
                starts = np.cumsum([0] + [q + (t < r) for t in range(threads)])
                for t in range(threads):
                    assert all(i % threads == t for i in items[starts[t]:starts[t + 1]]), (n, threads, t)

    @numba.njit(parallel=True)
    def owner(n):  # which thread processed each item
        out = np.full(n, -1, np.int64)
        threads = numba.get_num_threads()
        for k in numba.prange(n):
            out[spread(k, n, threads)] = numba.get_thread_id()
        return out

    if numba.get_num_threads() >= 2:
        before = numba.get_num_threads()
        numba.set_num_threads(2)
        try:
            owners = owner(33)
        finally:
            numba.set_num_threads(before)
        assert set(owners[0::2]) == {owners[0]} and set(owners[1::2]) == {owners[1]} and owners[0] != owners[1]


def test_thread_balance_benchmark_counts_each_threads_work():
    """benchmarks/thread_balance.py: Gaussians only in the top half of the picture load one thread of two with
    all the work under contiguous runs, and half of it once the bands are interleaved."""
    import numpy as np
    from conftest import load_benchmark

    bench = load_benchmark("thread_balance")
    assert bench.busiest_share(np.array([4.0, 4.0, 1.0, 1.0]), 2, interleaved=False) == pytest.approx(0.8)
    assert bench.busiest_share(np.array([4.0, 4.0, 1.0, 1.0]), 2, interleaved=True) == pytest.approx(0.5)
    top = random_cholesky(200, 64, 48, seed=5, scale=(2.0, 4.0))  # large Gaussians in the top rows,
    bottom = random_cholesky(200, 64, 48, seed=6, scale=(0.3, 0.6))  # as many small ones in the bottom rows
    means = torch.cat([top.means * torch.tensor([1.0, 0.45]), bottom.means * torch.tensor([1.0, 0.4]) +
                       torch.tensor([0.0, 36.0])])
    g = Gaussians2D.from_cholesky(means, torch.cat([top.cholesky, bottom.cholesky]),
                                  torch.cat([top.colors, bottom.colors]), torch.cat([top.opacities, bottom.opacities]))
    balance = bench.image_balance(g, 64, 48, threads=2)
    assert balance["bands"] == 4 and balance["n"] == 400
    for part in ("forward", "backward"):  # runs: the thread with the top half does most; interleaved: about half
        assert balance[part]["runs"] > 0.75 and abs(balance[part]["interleaved"] - 0.5) < 0.1, (part, balance)
