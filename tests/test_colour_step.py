"""The generator's colour step (one ISRA rescaling after the fields) against a dense computation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_generator import TINY, smooth_image

import gilab
from gilab.generator import Generator, GeneratorConfig
from gilab.generator.colour_step import colour_step_ratio
from gilab.generator.generator import WEIGHTS
from gilab.metrics import psnr


def random_set(n=40, h=24, w=20, seed=0):
    torch.manual_seed(seed)
    means = torch.rand(n, 2) * torch.tensor([w, h])
    return gilab.Gaussians2D.from_scale_rotation(means, 1 + 2 * torch.rand(n, 2), torch.rand(n) * 3,
                                                 torch.rand(n, 3), size=(h, w))


def step(g, image, limits=(1e-3, 1e3)):
    return colour_step_ratio(g.means, g.conics(), g.colors, g.opacities, image, limits)


def test_ratio_is_the_isra_update_of_a_dense_basis():
    """ratio_i = <G_i c_i, image> / <G_i c_i, render>, with each Gaussian drawn alone as column i."""
    g, image = random_set(), smooth_image(24, 20)
    columns = torch.stack([gilab.render(g[i:i + 1]).flatten() for i in range(len(g))], 1)   # (3HW, N)
    render = columns.sum(1)
    expected = (columns.T @ image.flatten()) / (columns.T @ render)
    torch.testing.assert_close(step(g, image), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_step_never_increases_the_error(seed):
    """ISRA's guarantee for non-negative least squares (non-negative colours and image): the error cannot grow."""
    g, image = random_set(seed=seed), smooth_image(24, 20, seed)
    before = ((gilab.render(g) - image) ** 2).sum()
    after = ((gilab.render(replace(g, colors=g.colors * step(g, image)[:, None])) - image) ** 2).sum()
    assert after <= before * (1 + 1e-6)
    assert after < 0.9 * before  # and on random colours it helps a lot


def test_limits_clip_and_an_off_canvas_gaussian_keeps_its_colour():
    g, image = random_set(), smooth_image(24, 20)
    g.means[0] = torch.tensor([-500.0, -500.0])  # covers no pixel
    ratio = colour_step_ratio(g.means, g.conics(), g.colors, g.opacities, image, limits=(0.9, 1.1))
    assert ratio[0] == 1 and ratio.min() >= 0.9 and ratio.max() <= 1.1


def test_generator_applies_the_step_its_config_asks_for():
    torch.manual_seed(0)
    gen = Generator(replace(TINY, colour_step=True)).eval()
    image = smooth_image(40, 50)
    with_step, without = gen(image), gen(image, colour_step=False)
    torch.testing.assert_close(with_step.means, without.means)
    expected = without.colors * step(without, image, limits=(0.5, 2.0))[:, None]
    torch.testing.assert_close(with_step.colors, expected)
    err = [float(psnr(gilab.render(x).clamp(0, 1), image)) for x in (without, with_step)]
    assert err[1] > err[0]


def test_weights_saved_before_the_option_load_without_it():
    old = {k: v for k, v in TINY.to_dict().items() if k != "colour_step"}  # a config written before it existed
    assert GeneratorConfig.from_dict(old).colour_step is False


@pytest.mark.skipif(not WEIGHTS.exists(), reason=f"no shipped weights at {WEIGHTS}")
def test_shipped_weights_use_the_step():
    assert Generator.from_pretrained().config.colour_step is True
