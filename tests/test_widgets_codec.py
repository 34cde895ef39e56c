"""The codec explorer without a browser: a slider moves, the Gaussians are quantised, encoded and decoded again,
the size it reports is the file's, fewer bits cost quality, and the view alone re-encodes nothing. Also
gilab.codec.quantise, the helper it runs on every change (the quantisers alone, no fine-tuning)."""

import io
import itertools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import gilab
from gilab import codec
from gilab.codec import CodecSettings
from gilab.codec.quantisers import canonical_cholesky, cholesky_quantiser, position_quantiser
from gilab.codec.rvq import codeword_sum, nearest_codewords
from gilab.errors import ArgumentError

pytest.importorskip("ipywidgets")

from gilab.widgets import CodecExplorer

H, W = 48, 40


@pytest.fixture(scope="module")
def image():
    return F.interpolate(gilab.io.default_image()[None], size=(H, W), mode="area")[0]


@pytest.fixture(scope="module")
def fitted(image):
    """A short float fit (random start: no network), shared by the tests."""
    return gilab.fit(image, n=200, iters=150, lr=1e-2, backend="torch", progress=False)


def explorer(image, fitted, **kwargs):
    return CodecExplorer(image, fitted.gaussians, backend="dense", **kwargs)  # dense: no numba compile


def decode_picture(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def reported_bytes(status: str) -> int:
    return int(re.search(r"([\d,]+) bytes", status).group(1).replace(",", ""))


# ------------------------------------------------------------------ gilab.codec.quantise
def test_quantise_gives_a_file_that_decodes_to_its_gaussians(fitted):
    settings = CodecSettings(position_bits=10, cholesky_bits=5, stages=2, codebook_size=16)
    q = codec.quantise(fitted.gaussians, settings)
    assert len(q) == len(fitted.gaussians) and q.size == (H, W)
    assert q.positions.shape == (200, 2) and q.cholesky.shape == (200, 3) and q.colours.shape == (200, 2)
    assert q.codebooks.shape == (2, 16, 3) and q.positions.dtype == torch.int64
    assert int(q.positions.max()) < 2 ** 10 and int(q.cholesky.max()) < 2 ** 5 and int(q.colours.max()) < 16
    data, bits = codec.encode(q)
    assert codec.decode(data).equals(q)  # already canonical: the file holds exactly these indices
    assert sum(bits.values()) == 8 * len(data)


def test_quantise_is_the_codec_quantisers_in_canonical_order(fitted):
    g = fitted.gaussians.to_cholesky()
    q = codec.quantise(g, CodecSettings(position_bits=8, cholesky_bits=8, stages=3, codebook_size=256))
    grid, levels = position_quantiser(H, W, 8), cholesky_quantiser(g.cholesky, 8)
    positions, cholesky = grid.indices(g.means), levels.indices(canonical_cholesky(g.cholesky))
    colours = nearest_codewords(g.colors, q.codebooks)
    rows = lambda *parts: sorted(map(tuple, torch.cat(parts, 1).tolist()))
    assert rows(q.positions, q.cholesky, q.colours) == rows(positions, cholesky, colours)  # the same set, sorted
    assert (q.cell_index().diff() >= 0).all()
    assert torch.equal(q.cholesky_low, levels.low) and torch.equal(q.cholesky_high, levels.high)
    # each number moved by at most half a step (a diagonal under MIN_STD is first raised to it: no degenerate
    # Gaussian); 3 stages of 256 codewords leave the colours close
    assert ((grid.values(positions) - g.means).abs() <= grid.step / 2 + 1e-4).all()
    in_range = torch.maximum(torch.minimum(canonical_cholesky(g.cholesky), levels.high), levels.low)
    assert ((levels.values(cholesky) - in_range).abs() <= levels.step / 2 + 1e-4).all()
    assert (codeword_sum(colours, q.codebooks) - g.colors).abs().max() < 0.05


def test_quantise_needs_a_canvas_size(fitted):
    g = fitted.gaussians
    bare = gilab.Gaussians2D.from_cholesky(g.means, g.to_cholesky().cholesky, g.colors)
    with pytest.raises(ArgumentError, match="size"):
        codec.quantise(bare)
    assert codec.quantise(bare, size=(H, W)).size == (H, W)


# ------------------------------------------------------------------ the widget
def test_first_file_is_real_and_reported_exactly(image, fitted):
    ex = explorer(image, fitted, zoom=3, format="png")
    assert ex.encodes == 1 and ex.renders == 1 and ex.error is None
    assert ex.settings == CodecSettings()  # gilab's defaults: 12 / 6 / 2 x 64
    assert reported_bytes(ex.status.value) == len(ex.data) == ex.size_bytes
    assert f"{ex.bpp:.3f} bpp" in ex.status.value and ex.bpp == 8 * len(ex.data) / (H * W)
    assert f"{ex.psnr:.2f} dB" in ex.status.value and f"float {ex.float_psnr:.2f} dB" in ex.status.value
    assert torch.equal(codec.decompress(ex.data, backend="dense"), ex.decoded)
    assert ex.psnr == pytest.approx(float(gilab.metrics.psnr(ex.decoded, image)), abs=1e-5)
    assert ex.float_psnr == pytest.approx(float(gilab.metrics.psnr(fitted.image, image)), abs=0.02)
    assert sum(ex.bits.values()) == 8 * len(ex.data)
    assert decode_picture(ex.image.value).shape == (3 * H, 3 * W, 3)


def test_accepts_a_fit_result_and_starting_settings(image, fitted):
    ex = CodecExplorer(image, fitted, position_bits=16, cholesky_bits=6, codebook_size=8, stages=2,
                       backend="dense")  # GaussianImage's recipe
    assert ex.settings == CodecSettings(16, 6, 2, 8)
    q = codec.decode(ex.data)
    assert q.position_bits == 16 and q.cholesky_bits == 6 and q.codebook_size == 8 and q.stages == 2
    assert "16 / 6 bits, colours 2 x 8" in ex.status.value


@pytest.mark.parametrize("control, values", [("position_bits", [12, 8, 5, 3]), ("cholesky_bits", [8, 5, 3, 1]),
                                             ("codebook_size", [256, 32, 4, 1])])
def test_fewer_bits_smaller_file_lower_psnr(image, fitted, control, values):
    ex = explorer(image, fitted, stages=1 if control == "codebook_size" else 2)
    sizes, psnrs = [], []
    for value in values:
        before, changed = ex.encodes, getattr(ex.settings, control) != value
        getattr(ex, control).value = value
        assert ex.encodes == before + changed  # one new file per change, none when the value stays
        assert getattr(ex.settings, control) == value and ex.error is None
        assert reported_bytes(ex.status.value) == len(ex.data)
        assert torch.equal(codec.decompress(ex.data, backend="dense"), ex.decoded)
        sizes.append(len(ex.data))
        psnrs.append(ex.psnr)
    assert all(a > b for a, b in itertools.pairwise(sizes)), sizes
    assert all(b < a + 0.3 for a, b in itertools.pairwise(psnrs)), psnrs  # monotone, up to k-means' luck
    assert psnrs[-1] < psnrs[0] - 1.5, psnrs
    assert all(p <= ex.float_psnr + 0.3 for p in psnrs)


def test_more_colour_stages_cost_bits_and_win_quality(image, fitted):
    ex = explorer(image, fitted, codebook_size=4, stages=1)
    one = (len(ex.data), ex.psnr)
    ex.stages.value = 3
    three = (len(ex.data), ex.psnr)
    assert three[0] > one[0] and three[1] > one[1] + 1, (one, three)


def test_the_view_redraws_without_encoding_again(image, fitted):
    ex = explorer(image, fitted, format="png")
    pictures = {}
    for view in ("decoded", "float", "target", "error"):
        ex.show.value = view
        pictures[view] = decode_picture(ex.image.value)
    assert ex.encodes == 1 and ex.renders == 4
    assert len({p.tobytes() for p in pictures.values()}) == 4
    zoom = ex.zoom
    target = np.asarray(Image.fromarray(gilab.io.to_uint8(image)).resize(ex.display_size, Image.NEAREST))
    assert zoom >= 1 and np.array_equal(pictures["target"], target)


def test_an_update_is_quick(image, fitted):
    ex = explorer(image, fitted)
    ex.codebook_size.value = 16
    ex.position_bits.value = 10
    assert ex.encodes == 3 and ex.last_ms < 1000, ex.last_ms


def test_bad_inputs(image, fitted):
    with pytest.raises(ValueError, match="3, H, W"):
        CodecExplorer(image[0], fitted.gaussians)
    with pytest.raises(TypeError, match="Gaussians2D"):
        CodecExplorer(image, "not gaussians")
    with pytest.raises(ValueError, match="show"):
        CodecExplorer(image, fitted.gaussians, show="nothing")
