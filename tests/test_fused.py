"""The fused CPU training step against the autograd loop of fit(): trajectories, Adan, the contract."""

import math

import pytest
import torch
from test_fit import smooth_image

from gilab.fitting import GaussianImageModel, _adan
from gilab.render import cpu, rasterize
from gilab.starts import random_gaussians

pytestmark = pytest.mark.skipif(not cpu.available()[0], reason=cpu.available()[1])

H, W, N = 24, 32, 60


def autograd_loop(model, target, lr, lr_step, blend):
    """fit()'s loop body, as a generator of losses (the reference the fused step must follow)."""
    optimizer = _adan(model.parameters(), lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=0.5)
    while True:
        g = model.gaussians()
        render = rasterize(g.means, g.conics(), g.colors, g.opacities, H, W, blend, "cpu").clamp(0, 1)
        loss = torch.mean((render - target) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        yield loss.item(), optimizer.param_groups[0]["lr"]


def start(param, dtype=torch.float32, seed=1):
    return random_gaussians(N, H, W, param=param, seed=seed, dtype=dtype), smooth_image(H, W).to(dtype)


def run_both(param, blend, dtype, iters=20, lr=1e-2, lr_step=7):
    """Largest parameter difference and loss difference (relative) over ``iters`` steps of both paths."""
    from gilab.fused import FusedStep

    gaussians, target = start(param, dtype)
    reference, fused = GaussianImageModel(gaussians, H, W, param), GaussianImageModel(gaussians, H, W, param)
    step = FusedStep(fused, target, lr=lr, lr_step=lr_step, blend=blend)
    worst_param, worst_loss = 0.0, 0.0
    for k, (loss, next_lr) in zip(range(iters), autograd_loop(reference, target, lr, lr_step, blend)):
        value = step.step()
        worst_loss = max(worst_loss, abs(value - loss) / loss)
        assert step.lr == next_lr  # StepLR's schedule, halved at steps 7 and 14
        for a, b in zip(reference.parameters(), fused.parameters()):
            worst_param = max(worst_param, (a - b).abs().max().item())
    assert step.lr == lr / 4
    return worst_param, worst_loss


@pytest.mark.parametrize("blend", ["sum", "alpha"])
@pytest.mark.parametrize("param", ["cholesky", "rs"])
def test_same_trajectory_as_autograd_float32(param, blend):
    """20 steps at lr 1e-2 (parameters move ~0.1): the paths differ only by float32 rounding (~1e-6 seen)."""
    worst_param, worst_loss = run_both(param, blend, torch.float32)
    assert worst_param < 1e-4 and worst_loss < 1e-5, (worst_param, worst_loss)


@pytest.mark.parametrize("param", ["cholesky", "rs"])
def test_same_trajectory_as_autograd_float64(param):
    """In float64 rounding is out of the way: the two codes compute the same numbers to ~1e-14."""
    worst_param, worst_loss = run_both(param, "sum", torch.float64)
    assert worst_param < 1e-11 and worst_loss < 1e-12, (worst_param, worst_loss)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_adan_equals_pytorch_optimizer(dtype, tolerance):
    """The fused Adan kernel against pytorch-optimizer's (itself checked against the published equations in
    test_fit.py), over six steps with a learning-rate change, on a flat parameter."""
    from gilab.fused import adan_coefficients
    from gilab.render import _fused_kernels as k

    gen = torch.Generator().manual_seed(0)
    start_values = torch.randn(1000, generator=gen, dtype=dtype)
    grads = [torch.randn(1000, generator=gen, dtype=dtype) for _ in range(6)]
    param = torch.nn.Parameter(start_values.clone())
    optimizer = _adan([param], lr=1e-2)
    ours, state = start_values.clone().numpy(), torch.zeros(4, 1000, dtype=dtype).numpy()
    for step, g in enumerate(grads, start=1):
        lr = 1e-2 if step <= 3 else 5e-3
        optimizer.param_groups[0]["lr"] = lr
        param.grad = g.clone()
        optimizer.step()
        k.adan(ours, state, g.numpy(), adan_coefficients(lr, step, ours.dtype), step == 1)
        expected = param.detach()
        assert torch.allclose(torch.from_numpy(ours), expected, rtol=tolerance, atol=tolerance), step


def test_updates_the_model_in_place_and_shows_the_render():
    from gilab.fused import FusedStep

    gaussians, target = start("cholesky")
    model = GaussianImageModel(gaussians, H, W)
    pointers = [p.data_ptr() for p in model.parameters()]
    before = model.gaussians().detach().clone()
    step = FusedStep(model, target)
    assert step.image() is None
    keep = [torch.empty_like(p) for p in model.parameters()]
    loss = step.step(keep=keep)
    assert [p.data_ptr() for p in model.parameters()] == pointers  # no copies: the model's own memory moved
    assert not torch.equal(model.gaussians().means, before.means)
    assert all(torch.equal(k, p) for k, p in zip(keep, GaussianImageModel(gaussians, H, W).parameters()))
    # image(): the clamped render of the parameters before the step, whose loss step() returned
    expected = rasterize(before.means, before.conics(), before.colors, before.opacities, H, W).clamp(0, 1)
    assert torch.allclose(step.image(), expected, atol=1e-6)
    assert loss == pytest.approx(torch.mean((expected - target) ** 2).item(), rel=1e-5)


def test_replaced_parameter_memory_is_followed():
    """A parameter whose .data is replaced (not copied into) is picked up at the next step."""
    from gilab.fused import FusedStep

    gaussians, target = start("rs")
    model = GaussianImageModel(gaussians, H, W, "rs")
    step = FusedStep(model, target)
    step.step()
    with torch.no_grad():
        model.colors.data = model.colors.data.clone()
    colors = model.colors.detach().clone()
    step.step()
    assert not torch.equal(model.colors, colors)


def test_non_finite_loss_updates_nothing():
    from gilab.fused import FusedStep

    gaussians, target = start("cholesky")
    model = GaussianImageModel(gaussians, H, W)
    with torch.no_grad():
        model.colors[3, 0] = math.nan
    before = [p.detach().clone() for p in model.parameters()]
    step = FusedStep(model, target)
    assert math.isnan(step.step())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()) if not a.isnan().any())
    assert step.iteration == 0


def test_supports_refuses_what_it_cannot_run():
    from gilab.fused import FusedStep

    gaussians, target = start("cholesky")
    model = GaussianImageModel(gaussians, H, W)
    assert FusedStep.supports(model, target, "sum") == (True, "")
    assert FusedStep.supports(model, target, "alpha") == (True, "")
    assert not FusedStep.supports(model, target[:, :10], "sum")[0]
    assert not FusedStep.supports(model, target, "max")[0]
    assert not FusedStep.supports(model.to(torch.float16), target.half(), "sum")[0]
    with pytest.raises(ValueError, match="cannot run"):
        FusedStep(model, target, blend="max")


def test_constants_match_the_model():
    from gilab import starts
    from gilab.render import _fused_kernels as k

    assert starts.CHOLESKY_BOUND == (k.BOUND, 0.0, k.BOUND) and starts.SCALE_BOUND == k.BOUND
