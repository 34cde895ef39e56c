"""The placement explorer without a browser: a control moves, the placement (N) and the picture follow, the
target-count mode hits its count, layers redraw without placing again, and the numbers are gilab.placement's."""

import io
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import gilab
from gilab.placement import place
from gilab.training import ppm_from_image

pytest.importorskip("ipywidgets")

from gilab.widgets import PlacementExplorer

H, W = 60, 52


@pytest.fixture(scope="module")
def image():
    return F.interpolate(gilab.io.default_image()[None], size=(H, W), mode="area")[0]


@pytest.fixture(scope="module")
def ppm(image):
    return ppm_from_image(image, iters=0)  # the quad-tree's pseudo-PPM: no fit, a fraction of a second


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def explorer(image, ppm, **kwargs):
    return PlacementExplorer(image, ppm, backend="dense", **kwargs)  # dense: no numba compile in a test


def test_first_picture_is_the_placement_of_gilab_placement(image, ppm):
    pe = explorer(image, ppm, zoom=3, format="png")
    assert pe.renders == 1 and pe.placements == 1 and "update 1" in pe.status.value
    expected = place(ppm, image, kernel_size=3)
    assert len(pe.gaussians) == len(expected) and torch.equal(pe.gaussians.means, expected.means)
    assert f"N = {len(expected):,} Gaussians" in pe.status.value
    assert pe.psnr == pytest.approx(float(gilab.metrics.psnr(gilab.render(expected, backend="dense"), image)), abs=1e-4)
    assert f"{pe.psnr:.2f} dB" in pe.status.value
    assert decode(pe.image.value).shape == (3 * H, 3 * W, 3)
    assert pe.triangulation.num_input == len(pe.points)  # the boundary points come after the dithered ones


def test_changing_kernel_size_changes_n_and_the_picture(image, ppm):
    pe = explorer(image, ppm)
    before, n_before = pe.image.value, len(pe.gaussians)
    pe.kernel_size.value = 5
    assert pe.renders == 2 and pe.placements == 2 and "k = 5" in pe.status.value
    assert len(pe.gaussians) < n_before and len(pe.gaussians) == len(place(ppm, image, kernel_size=5))
    assert pe.image.value != before
    assert pe.target_count.max == 2 * H * W // 25 // 10 * 10  # the target slider follows k's reach
    smaller = len(pe.gaussians)
    pe.density.value = 0.3  # a lower gain on the pooled map: fewer points
    assert len(pe.gaussians) < smaller and pe.placements == 3
    assert len(pe.gaussians) == len(place(ppm, image, kernel_size=5, density=pe.density.value))


@pytest.mark.parametrize("target", [300, 900])
def test_target_count_mode_hits_the_count(image, ppm, target):
    pe = explorer(image, ppm, kernel_size=2)
    pe.mode.value = "target count"
    assert pe.density.disabled and not pe.target_count.disabled
    assert abs(len(pe.gaussians) - len(place(ppm, image, kernel_size=2))) <= 0.02 * len(pe.gaussians)
    pe.target_count.value = target
    assert abs(len(pe.gaussians) - target) <= 0.02 * target, (len(pe.gaussians), target)
    assert len(pe.gaussians) == len(place(ppm, image, kernel_size=2, target_count=target))
    assert f"target {target:,}" in pe.status.value and pe.error is None
    pe.mode.value = "density"  # back: the density slider takes the gain the search found
    assert pe.density.value == pytest.approx(pe.gain, rel=0.06) and not pe.density.disabled


def test_target_out_of_reach_is_reported_not_raised(image, ppm):
    half = ppm.clone()
    half[:, : W // 2] = 0  # no points on the left: at most about half of 2 H W / k^2
    pe = explorer(image, half, kernel_size=4, target_count=100)
    assert abs(len(pe.gaussians) - 100) <= 2
    kept, placements = pe.gaussians, pe.placements
    pe.target_count.value = pe.target_count.max  # 2 H W / k^2: more than this PPM gives
    assert pe.error is not None and "out of reach" in pe.status.value
    assert pe.gaussians is kept and pe.placements == placements and pe.renders == 2
    pe.target_count.value = 150
    assert pe.error is None and "out of reach" not in pe.status.value and abs(len(pe.gaussians) - 150) <= 3


def test_layers_and_background_redraw_without_placing(image, ppm):
    pe = explorer(image, ppm, layers=(), format="png", zoom=2)
    plain = decode(pe.image.value)
    assert np.array_equal(plain, np.asarray(Image.fromarray(
        (image * 255).round().byte().permute(1, 2, 0).numpy()).resize((2 * W, 2 * H), Image.BICUBIC)))
    seen = [plain]
    for name in ("points", "triangles", "ellipses"):
        pe.layers[name].value = True
        seen.append(decode(pe.image.value))
    for background in ("render", "PPM"):
        pe.background.value = background
        seen.append(decode(pe.image.value))
    assert pe.placements == 1 and pe.renders == 6
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(seen))


def test_default_ppm_css_classes_and_display(image):
    pe = PlacementExplorer(image, backend="dense")
    assert torch.equal(pe.ppm, ppm_from_image(image, iters=0))
    assert "gilab-placement-explorer" in pe.widget._dom_classes
    for control, css in ((pe.kernel_size, "kernel"), (pe.density, "density"), (pe.mode, "mode"),
                         (pe.target_count, "target"), (pe.background, "background"), (pe.image, "image"),
                         (pe.status, "status"), (pe.layers["ellipses"], "layer-ellipses")):
        assert f"gilab-pe-{css}" in control._dom_classes
    assert pe._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == pe.widget.model_id


def test_bad_inputs(image, ppm):
    with pytest.raises(ValueError, match="ppm"):
        PlacementExplorer(image, ppm[:-1])
    with pytest.raises(ValueError, match="image"):
        PlacementExplorer(image[0], ppm)
