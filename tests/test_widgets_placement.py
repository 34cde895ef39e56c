"""The placement explorer without a browser: a control moves, the placement (N) and the picture follow, the
target-count mode hits its count, layers redraw without placing again, and the numbers are gilab.placement's."""

import io
import itertools
import re

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
    pe.target_count.value = pe.target_count.max  # 2 H W / k^2: more than this PPM gives
    # the most this map gives is shown, and the line says that it is the most, with the number
    most = len(place(half, image, kernel_size=4, density=gilab.placement.saturating_density(half, 4)))
    assert pe.error is not None and f"gives at most {most:,} Gaussians" in pe.status.value
    assert len(pe.gaussians) == most and pe.renders == 2
    pe.target_count.value = 150
    assert pe.error is None and "out of reach" not in pe.status.value and abs(len(pe.gaussians) - 150) <= 3


def test_every_target_count_lands_or_says_exactly_why(image, ppm):
    """Targets 10, 30, ..., 250 (where place()'s own search missed most): within 2 %, or the nearest count
    there is, with the counts around the target named (place() said "at least about 36" for 10 and "at most
    about 17" for 20 on notebook 03's picture)."""
    pe = explorer(image, ppm, kernel_size=3)
    pe.mode.value = "target count"
    missed = []
    for target in range(10, 260, 20):
        pe.target_count.value = target
        n = len(pe.gaussians)
        if abs(n - target) <= 0.02 * target:
            assert pe.error is None, (target, pe.error)
            continue
        missed.append(target)
        assert pe.error is not None and f"{n:,}" in pe.error, (target, n, pe.error)
        if "jumps from" in pe.error:  # the counts on either side were placed, and the nearer one is shown
            below, above = (int(v.replace(",", "")) for v in re.findall(r"jumps from ([\d,]+) to ([\d,]+)",
                                                                         pe.error)[0])
            assert below < target < above and n == (below if target - below <= above - target else above)
        else:
            assert "fewest" in pe.error or "out of reach" in pe.error, pe.error
        assert "⚠" in pe.status.value and f"N = {n:,} Gaussians" in pe.status.value
    assert len(missed) <= 3, missed
    print(f"targets off by more than 2 % (explained): {missed}")


def test_layout_fits_a_laptop_screen(image, ppm):
    pe = explorer(image, ppm)  # default size: the longer side 460 px, beside the controls
    width, height = pe.display_size
    assert max(width, height) == 460 and decode(pe.image.value).shape == (height, width, 3)
    # the picture's size is fixed in pixels (a flex box stretched a 512x600 picture to 1064x1247 before)
    assert pe.image.layout.width == f"{width}px" and pe.image.layout.height == f"{height}px"
    picture_column, controls = pe.widget.children
    assert pe.image in picture_column.children and pe.status in picture_column.children
    assert pe.kernel_size in controls.children  # beside the picture, not above it
    # every control reserves the same room for its label, enough for "kernel k (px)" (it was cut)
    assert {c.style.description_width for c in (pe.kernel_size, pe.density, pe.target_count)} == {"90px"}
    rows = [row for row in controls.children if pe.mode in getattr(row, "children", ())]
    assert rows and rows[0].children[0].layout.width == "90px"  # the toggles' label, in the same column


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
