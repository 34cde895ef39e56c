"""gilab.metrics: PSNR, SSIM and MS-SSIM exactly as the papers compute them, plus the small-image fallbacks."""

import math

import pytest
import pytorch_msssim
import torch

from gilab import metrics
from gilab.errors import ImageError
from gilab.metrics import MS_SSIM_WEIGHTS, ms_ssim, psnr, ssim


def pair(h, w, b=None, noise=0.05, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shape = (3, h, w) if b is None else (b, 3, h, w)
    target = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    pred = target + noise * torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return pred, target


def test_psnr_formula_and_clamp():
    target = torch.full((3, 4, 4), 0.5)
    pred = target + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(pred, target).item() == pytest.approx(20.0, abs=1e-4)
    # the prediction is clamped to [0, 1] first: 1.7 scores like 1.0
    target = torch.full((3, 4, 4), 0.9)
    assert psnr(torch.full((3, 4, 4), 1.7), target).item() == pytest.approx(20.0, abs=1e-4)
    # the target is not clamped (it is the reference, taken as given)
    assert psnr(target, torch.full((3, 4, 4), 1.0)) < psnr(torch.full((3, 4, 4), 1.7), torch.full((3, 4, 4), 1.0))


def test_psnr_identical_is_inf():
    x = torch.rand(3, 5, 5)
    assert math.isinf(psnr(x, x).item()) and psnr(x, x).item() > 0


def test_psnr_batch_is_mean_of_per_image():
    pred, target = pair(8, 8, b=4)
    per_image = psnr(pred, target, reduction="none")
    assert per_image.shape == (4,)
    for i in range(4):
        assert per_image[i] == pytest.approx(psnr(pred[i], target[i]).item(), abs=1e-5)
    assert psnr(pred, target) == pytest.approx(per_image.mean().item(), abs=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        psnr(pred, target, reduction="sum")


def test_dtype_device_and_gradient():
    pred, target = pair(20, 20, dtype=torch.float64)
    pred.requires_grad_(True)
    value = psnr(pred, target)
    assert value.dtype == torch.float64 and value.ndim == 0 and value.device == pred.device
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert ssim(pred.detach().float(), target.float()).dtype == torch.float32
    assert psnr(pred.detach().float(), target).dtype == torch.float64  # promoted


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.rand(3, 4, 4), torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        psnr(torch.rand(4, 4), torch.rand(4, 4))
    with pytest.raises(ValueError, match="float"):
        psnr(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_ssim_matches_pytorch_msssim():
    pred, target = pair(32, 40, b=2)
    expected = pytorch_msssim.ssim(pred.clamp(0, 1), target, data_range=1, size_average=True)
    assert ssim(pred, target).item() == pytest.approx(expected.item(), abs=1e-6)
    assert ssim(target, target).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ImageError, match="11 px"):
        ssim(torch.rand(3, 10, 40), torch.rand(3, 10, 40))


def test_ms_ssim_is_the_papers_call():
    pred, target = pair(161, 170)
    expected = pytorch_msssim.ms_ssim(pred.clamp(0, 1)[None], target[None], data_range=1, size_average=True)
    assert ms_ssim(pred, target).item() == pytest.approx(expected.item(), abs=1e-6)
    # images this large ignore the fallback
    assert ms_ssim(pred, target, fallback="ssim").item() == pytest.approx(expected.item(), abs=1e-6)
    assert ms_ssim(target, target).item() == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_small_image_error_names_the_fallbacks():
    pred, target = pair(160, 200)
    with pytest.raises(ImageError, match=r"200x160 px.*>= 161 px") as info:
        ms_ssim(pred, target)
    assert "fallback='scales'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="fallback"):
        ms_ssim(pred, target, fallback="guess")


def test_ms_ssim_fallbacks():
    pred, target = pair(48, 64, b=2)
    assert ms_ssim(pred, target, fallback="ssim").item() == pytest.approx(ssim(pred, target).item(), abs=1e-7)
    # 48 px: 48 > 10 * 2**2 but not > 10 * 2**3, so three scales, the first three weights renormalised
    weights = torch.tensor(MS_SSIM_WEIGHTS[:3])
    value = ms_ssim(pred, target, fallback="scales")
    assert value.item() == pytest.approx(metrics._ms_ssim(pred.clamp(0, 1), target, (weights / weights.sum()).tolist()).item())
    assert 0 < value < 1
    assert ms_ssim(target, target, fallback="scales").item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ImageError, match="11 px"):
        ms_ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8), fallback="scales")


def test_own_multiscale_code_matches_pytorch_msssim():
    """The fallback's own MS-SSIM code is pytorch_msssim's computation: equal at five scales (odd sides too)."""
    pred, target = pair(167, 175, b=2, noise=0.1)
    pred = pred.clamp(0, 1)
    w = torch.tensor(MS_SSIM_WEIGHTS)
    w = (w / w.sum()).tolist()
    expected = pytorch_msssim.ms_ssim(pred, target, data_range=1, size_average=True, weights=w)
    assert metrics._ms_ssim(pred, target, w).item() == pytest.approx(expected.item(), abs=1e-6)
