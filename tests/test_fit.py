"""The fine-tuner: GaussianImage's recipe, budgets, history, callbacks, Ctrl-C, seeds, and Adan itself."""

import math

import pytest
import torch

import gilab
from gilab.fitting import GaussianImageModel, random_gaussians


def smooth_image(height=24, width=32, seed=0):
    """A smooth colourful test image (sums of a few blobs), (3, H, W) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    image = torch.zeros(3, height, width)
    for _ in range(6):
        cx, cy, s = torch.rand(3, generator=gen)
        color = torch.rand(3, 1, 1, generator=gen)
        image += color * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (0.05 + 0.1 * s))
    return (image / image.max()).clamp(0, 1)


@pytest.mark.parametrize("param", ["cholesky", "rs"])
def test_fit_improves_and_records_history(param):
    image = smooth_image()
    result = gilab.fit(image, n=150, iters=300, param=param, backend="torch", progress=False)
    h = result.history
    assert len(h) == 301 and h.iteration[0] == 0 and h.iteration[-1] == 300
    assert result.psnr > h.psnr[0] + 6, (h.psnr[0], result.psnr)
    assert h.psnr[200] > h.psnr[100] > h.psnr[0]  # rising in trend
    assert all(b >= a for a, b in zip(h.seconds, h.seconds[1:]))
    # the final row is the final Gaussians' PSNR
    final = gilab.render(result.gaussians, 24, 32).clamp(0, 1)
    assert -10 * math.log10(torch.mean((final - image) ** 2).item()) == pytest.approx(result.psnr, abs=1e-3)
    assert result.gaussians.param == param and result.gaussians.size == (24, 32)


def test_same_seed_same_result_other_seed_differs():
    image = smooth_image()
    a = gilab.fit(image, n=60, iters=20, seed=3, backend="torch", progress=False)
    b = gilab.fit(image, n=60, iters=20, seed=3, backend="torch", progress=False)
    c = gilab.fit(image, n=60, iters=20, seed=4, backend="torch", progress=False)
    assert torch.equal(a.gaussians.means, b.gaussians.means) and a.history.loss == b.history.loss
    assert not torch.equal(a.gaussians.means, c.gaussians.means)


def test_seconds_budget_stops_and_counts_init_time():
    image = smooth_image()
    result = gilab.fit(image, n=50, seconds=0.5, init_seconds=0.2, backend="torch", progress=False)
    assert result.history.seconds[0] >= 0.2
    assert 0.5 <= result.seconds < 3.0 and result.iterations > 0


def test_callback_sees_progress_and_can_stop():
    seen = []

    def callback(state):
        seen.append((state.iteration, state.image.shape, len(state.gaussians)))
        return state.iteration >= 30

    result = gilab.fit(smooth_image(), n=40, iters=1000, callback=callback, callback_every=10, backend="torch",
                       progress=False)
    assert result.iterations == 30 and [s[0] for s in seen] == [10, 20, 30]
    assert seen[0][1] == (3, 24, 32) and seen[0][2] == 40


def test_callback_gaussians_are_a_snapshot():
    """What a callback keeps stays as it was: the optimiser updates the model's tensors in place."""
    kept = {}

    def keep(state):
        if state.iteration == 10:
            kept["g"], kept["colors"] = state.gaussians, state.gaussians.colors.clone()

    result = gilab.fit(smooth_image(), n=40, iters=30, callback=keep, callback_every=10, backend="torch",
                       progress=False)
    assert torch.equal(kept["g"].colors, kept["colors"])
    assert not torch.equal(kept["g"].colors, result.gaussians.colors)


def test_ctrl_c_returns_the_result_so_far():
    def interrupt(state):
        if state.iteration == 20:
            raise KeyboardInterrupt

    result = gilab.fit(smooth_image(), n=40, iters=1000, callback=interrupt, callback_every=10, backend="torch",
                       progress=False)
    assert result.interrupted and result.iterations == 20 and len(result.history) == 21
    assert math.isfinite(result.psnr)
    # Pipelines that save what a fit returns ask for the Ctrl-C instead: a cut run must not pass for a whole one.
    with pytest.raises(KeyboardInterrupt):
        gilab.fit(smooth_image(), n=40, iters=1000, callback=interrupt, callback_every=10, backend="torch",
                  progress=False, return_on_interrupt=False)


def test_init_from_gaussians_keeps_them():
    """Starting from given Gaussians, iteration 0 renders exactly those Gaussians."""
    image = smooth_image()
    start = random_gaussians(80, 24, 32, param="rs", seed=5)
    for param in ["cholesky", "rs"]:
        model = GaussianImageModel(start, 24, 32, param=param)
        g = model.gaussians()
        assert torch.allclose(g.means, start.means, atol=1e-3)
        assert torch.allclose(g.covariances(), start.covariances(), atol=1e-4, rtol=1e-4)
    result = gilab.fit(image, init=start, iters=0, backend="torch", progress=False)
    expected = -10 * math.log10(torch.mean((gilab.render(start, 24, 32).clamp(0, 1) - image) ** 2).item())
    assert result.history.psnr[0] == pytest.approx(expected, abs=1e-3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="param"):
        gilab.fit(smooth_image(), n=5, iters=1, param="euler", progress=False)
    with pytest.raises(ValueError, match=r"expected an image"):
        gilab.fit(torch.rand(2, 24, 32), n=5, iters=1, progress=False)


def adan_reference(params, grads_per_step, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8):
    """Adan as published (Xie et al. 2022, Algorithm 1, in the official implementation's form), weight decay 0.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2)(g - g_prev);  n = b3 n + (1 - b3)(g + b2 (g - g_prev))^2
    p -= lr (m / (1 - b1^k) + b2 v / (1 - b2^k)) / (sqrt(n / (1 - b3^k)) + eps), with g_prev = g at step 1.
    """
    b1, b2, b3 = betas
    p = params.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    n = torch.zeros_like(p)
    prev = None
    for k, g in enumerate(grads_per_step, start=1):
        diff = torch.zeros_like(g) if prev is None else g - prev
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * diff
        update = g + b2 * diff
        n = b3 * n + (1 - b3) * update * update
        denom = torch.sqrt(n) / math.sqrt(1 - b3**k) + eps
        p = p - lr * (m / (1 - b1**k) + b2 * v / (1 - b2**k)) / denom
        prev = g
    return p


def test_adan_matches_the_published_equations():
    from gilab.fitting import _adan

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(50, generator=gen, dtype=torch.float64)
    grads = [torch.randn(50, generator=gen, dtype=torch.float64) for _ in range(6)]
    param = torch.nn.Parameter(start.clone())
    opt = _adan([param], lr=1e-2)
    for g in grads:
        param.grad = g.clone()
        opt.step()
    expected = adan_reference(start, grads, lr=1e-2)
    assert torch.allclose(param.detach(), expected, rtol=1e-12, atol=1e-14)


def test_gaussians_from_fit_render_at_twice_the_size():
    result = gilab.fit(smooth_image(), n=100, iters=60, backend="torch", progress=False)
    big = gilab.render(result.gaussians, scale=2.0)
    assert big.shape == (3, 48, 64)
    down = torch.nn.functional.avg_pool2d(big[None], 2)[0].clamp(0, 1)
    assert -10 * math.log10(torch.mean((down - result.image) ** 2).item()) > 25


def test_a_saturated_start_and_a_stalled_fit_are_announced():
    image = smooth_image(12, 16) * 0.5
    with pytest.warns(UserWarning) as caught:
        result = gilab.fit(image, n=800, iters=200, backend="cpu", progress=False)
    messages = " | ".join(str(w.message) for w in caught)
    assert "outside [0, 1] at 100%" in messages and "stalled" in messages
    assert result.psnr == pytest.approx(result.history.psnr[0], abs=0.1)


def test_a_healthy_fit_warns_nothing_and_reprs_in_one_line():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = gilab.fit(smooth_image(12, 16), n=30, iters=210, backend="cpu", progress=False)
    text = repr(result)
    assert text.startswith("FitResult(n=30, iterations=210, psnr=") and "\n" not in text and len(text) < 160
    assert repr(result.history) == (f"FitHistory(211 rows, PSNR {result.history.psnr[0]:.2f} -> "
                                    f"{result.history.psnr[-1]:.2f} dB)")


def test_rotation_scale_fits_turn_an_axis_aligned_gaussian():
    """GaussianImage's 2 pi sigmoid(r) could not turn a Gaussian that starts at angle 0 (its slope vanishes);
    the angle is now trained in radians."""
    import math

    size = (32, 32)
    means = torch.tensor([[16.0, 16.0]])
    target = gilab.Gaussians2D.from_scale_rotation(means, torch.tensor([[7.0, 2.0]]), torch.tensor([math.radians(50)]),
                                                   torch.tensor([[0.9, 0.6, 0.3]]), size=size)
    image = gilab.render(target).clamp(0, 1)
    start = gilab.Gaussians2D.from_scale_rotation(means, torch.tensor([[7.0, 2.0]]), torch.tensor([0.0]),
                                                  torch.tensor([[0.9, 0.6, 0.3]]), size=size)
    result = gilab.fit(image, init=start, iters=300, param="rs", lr=1e-2, backend="torch", progress=False)
    turned = math.degrees(float(result.gaussians.rotations[0]))
    assert 40 < turned < 60, turned
    assert result.psnr > result.history.psnr[0] + 10


@pytest.mark.parametrize("param", ["cholesky", "rs"])
def test_fit_runs_the_fused_step_on_cpu_and_it_follows_autograd(param):
    image = smooth_image()
    fused = gilab.fit(image, n=60, iters=20, param=param, lr=1e-2, backend="cpu", progress=False)
    reference = gilab.fit(image, n=60, iters=20, param=param, lr=1e-2, backend="cpu", progress=False, fused=False)
    assert fused.fused and not reference.fused and "(fused step)" in fused.summary()
    assert fused.history.loss == pytest.approx(reference.history.loss, rel=1e-4)
    torch.testing.assert_close(fused.gaussians.means, reference.gaussians.means, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="needs backend 'cpu'"):
        gilab.fit(image, n=5, iters=1, backend="torch", fused=True, progress=False)
