"""The dense reference, the torch sparse backend, and the render() API."""

import math

import pytest
import torch
from render_cases import BACKGROUND, assert_matches_dense, hard_cases, random_cholesky

import gilab
from gilab import Gaussians2D
from gilab.render import dense

CASES = hard_cases()


@pytest.mark.parametrize("blend", ["sum", "alpha"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_matches_dense(case, blend):
    g, height, width = CASES[case]
    assert_matches_dense(g, height, width, blend, "torch", label=f"{case}/")


def test_every_gaussian_over_a_pixel_counts():
    """The reference CUDA code sums only the first 256 Gaussians of a 16x16 tile; gilab sums them all."""
    n = 1000
    means = torch.full((n, 2), 8.5)
    g = Gaussians2D.from_cholesky(means, torch.tensor([[2.0, 0.0, 2.0]]).repeat(n, 1), torch.full((n, 3), 1e-3))
    for backend in ["dense", "torch"]:
        image = gilab.render(g, 16, 16, backend=backend)
        # at the mean every Gaussian has weight 1: the centre pixel is exactly n * 1e-3 = 1.0
        assert image[0, 8, 8].item() == pytest.approx(n * 1e-3, rel=1e-5), backend


@pytest.mark.parametrize("backend", ["dense", "torch"])
@pytest.mark.parametrize("blend", ["sum", "alpha"])
@pytest.mark.parametrize("param", ["cholesky", "rs"])
def test_gradcheck(backend, blend, param):
    g = random_cholesky(5, 6, 7, seed=11, dtype=torch.float64, scale=(0.8, 2.0))
    if param == "rs":
        g = g.to_scale_rotation()
        tensors = [g.means, g.scales, g.rotations, g.colors, g.opacities]
        make = lambda m, s, r, c, o: Gaussians2D.from_scale_rotation(m, s, r, c, o)
    else:
        tensors = [g.means, g.cholesky, g.colors, g.opacities]
        make = Gaussians2D.from_cholesky
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    background = BACKGROUND.double() if blend == "alpha" else None
    fn = lambda *ts: gilab.render(make(*ts), 6, 7, blend=blend, backend=backend, background=background)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


def test_dense_model_by_hand():
    """One Gaussian, one pixel: the numbers of docs/method.md, section 2, computed by hand."""
    g = Gaussians2D.from_cholesky(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]]),
                                  torch.tensor([[1.0, 0.5, 0.25]]), torch.tensor([0.8]))
    # pixel (0, 0) has centre (0.5, 0.5): d = (-0.5, 0.5), sigma = 0.25, v = 0.8 e^-0.25
    v = 0.8 * math.exp(-0.25)
    image = gilab.render(g, 1, 1, backend="dense")
    assert image[:, 0, 0].tolist() == pytest.approx([v, v / 2, v / 4], rel=1e-6)
    alpha = gilab.render(g, 1, 1, blend="alpha", backend="dense", background=torch.ones(3))
    assert alpha[:, 0, 0].tolist() == pytest.approx([v + (1 - v), v / 2 + (1 - v), v / 4 + (1 - v)], rel=1e-6)


def test_cutoff_is_exact():
    """A contribution just under 1/255 is exactly zero, just over it is kept."""
    for o, expected_zero in [(0.99 / 255, True), (1.01 / 255, False)]:
        g = Gaussians2D.from_cholesky(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0, 1.0]]),
                                      torch.ones(1, 3), torch.tensor([o]))
        for backend in ["dense", "torch"]:
            value = gilab.render(g, 1, 1, backend=backend)[0, 0, 0].item()
            assert (value == 0.0) == expected_zero, (backend, o)


def test_alpha_stops_when_opaque():
    """Front-to-back: once T would drop to 1e-4 the pixel is done and later Gaussians are invisible."""
    n = 5
    g = Gaussians2D.from_cholesky(torch.full((n, 2), 0.5), torch.tensor([[1.0, 0.0, 1.0]]).repeat(n, 1),
                                  torch.eye(3)[[0, 0, 0, 1, 2]], torch.full((n,), 0.999))
    for backend in ["dense", "torch"]:
        c = gilab.render(g, 1, 1, blend="alpha", backend=backend)[:, 0, 0]
        # T after one: 1e-3, after two: 1e-6 <= 1e-4, so only the first Gaussian is composited.
        assert c.tolist() == pytest.approx([0.999, 0.0, 0.0], abs=1e-6), backend


def test_dense_refuses_big_problems():
    g = random_cholesky(100, 10, 10)
    with pytest.raises(MemoryError, match="backend='cpu' or 'torch'"):
        dense.rasterize(g.means, g.conics(), g.colors, g.opacities, 512, 768, max_evaluations=10**6)


def test_unknown_and_unavailable_backends():
    g = random_cholesky(3, 4, 4)
    with pytest.raises(ValueError, match="unknown backend"):
        gilab.render(g, 4, 4, backend="vulkan")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            gilab.render(g, 4, 4, blend="alpha", backend="gsplat")
    table = gilab.render.available_backends()
    assert table["dense"][0] and table["torch"][0]
    assert set(table) == {"dense", "torch", "cpu", "gsplat", "triton"}


def test_auto_backend_on_cpu():
    from gilab.render import pick_backend

    expected = "cpu" if gilab.render.available_backends()["cpu"][0] else "torch"
    assert pick_backend(torch.device("cpu"), "sum") == expected


def test_render_scale_doubles_resolution():
    """Rendering at scale 2 equals rendering the zoomed set on a canvas twice as large."""
    g = random_cholesky(40, 12, 10, seed=12)
    big = gilab.render(g, 12, 10, scale=2.0, backend="dense")
    assert big.shape == (3, 24, 20)
    zoomed = Gaussians2D.from_cholesky(g.means * 2, g.cholesky * 2, g.colors, g.opacities)
    assert torch.allclose(big, gilab.render(zoomed, 24, 20, backend="dense"))
    # a 2x2 box-downsample of the 2x render approaches the 1x render
    down = torch.nn.functional.avg_pool2d(big[None], 2)[0]
    assert (down - gilab.render(g, 12, 10, backend="dense")).abs().mean() < 0.05


def test_render_follows_dtype():
    g = random_cholesky(10, 5, 5, dtype=torch.float64)
    assert gilab.render(g, 5, 5, backend="torch").dtype == torch.float64
    assert gilab.render(g, 5, 5, backend="dense").dtype == torch.float64
