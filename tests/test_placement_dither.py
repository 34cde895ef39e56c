"""Dithering: the numba Floyd-Steinberg against a plain-Python one, pooling, cell centres, counts."""

import numpy as np
import pytest
import torch

from gilab.placement import cell_centres, dither, floyd_steinberg, pool_cells


def floyd_steinberg_python(values):
    """The textbook algorithm, written out plainly (the reference the numba kernel must match exactly)."""
    v = [list(map(float, row)) for row in values]
    h, w = len(v), len(v[0]) if len(v) else 0
    out = [[False] * w for _ in range(h)]
    for r in range(h):
        for c in range(w):
            old = v[r][c]
            new = 1.0 if old >= 0.5 else 0.0
            out[r][c] = new > 0
            err = old - new
            if c + 1 < w:
                v[r][c + 1] += err * (7 / 16)
            if r + 1 < h:
                if c > 0:
                    v[r + 1][c - 1] += err * (3 / 16)
                v[r + 1][c] += err * (5 / 16)
                if c + 1 < w:
                    v[r + 1][c + 1] += err * (1 / 16)
    return np.array(out, dtype=bool).reshape(h, w)


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1), (40, 60), (33, 47)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_floyd_steinberg_matches_python_exactly(shape, seed):
    rng = np.random.default_rng(seed)
    values = rng.random(shape) ** (1 + seed)  # from uniform to mostly dark maps
    assert np.array_equal(floyd_steinberg(values), floyd_steinberg_python(values))


def test_floyd_steinberg_keeps_the_mass_and_leaves_input_alone():
    rng = np.random.default_rng(3)
    values = rng.random((60, 80)) * 0.3
    before = values.copy()
    marked = floyd_steinberg(values)
    assert np.array_equal(values, before)
    assert abs(marked.sum() - values.sum()) <= 0.02 * values.sum() + 2
    assert not floyd_steinberg(np.zeros((5, 5))).any() and floyd_steinberg(np.ones((5, 5))).all()


def test_pool_cells_pads_with_zeros_and_takes_the_maximum():
    ppm = torch.zeros(7, 8)
    ppm[0, 0], ppm[6, 7], ppm[4, 4] = 0.3, 0.9, 0.6
    pooled = pool_cells(ppm, 3)
    assert pooled.shape == (3, 3)
    assert pooled[0, 0] == pytest.approx(0.3) and pooled[2, 2] == pytest.approx(0.9)
    assert pooled[1, 1] == pytest.approx(0.6) and pooled.sum() == pytest.approx(1.8)


def test_cell_centres_formula_and_partial_edge_cells():
    marked = np.array([[True, False, True], [False, True, False]])
    pts = cell_centres(marked, 3, height=6, width=9)
    assert pts.dtype == torch.float32
    assert pts.tolist() == [[1.5, 1.5], [7.5, 1.5], [4.5, 4.5]]
    # a width of 7 leaves a 1-px-wide last column of cells: its point is the centre of that pixel column
    edge = cell_centres(np.array([[False, False, True]]), 3, height=3, width=7)
    assert edge.tolist() == [[6.5, 1.5]]


def test_dither_points_are_cell_centres_and_follow_density():
    torch.manual_seed(0)
    ppm = torch.rand(60, 90) * 0.5
    pts = dither(ppm, kernel_size=3)
    assert pts.ndim == 2 and pts.shape[1] == 2 and pts.dtype == torch.float32
    assert torch.all((pts - 1.5) % 3 == 0)  # every point is the centre of a 3x3 cell
    assert len(torch.unique(pts, dim=0)) == len(pts)
    counts = [len(dither(ppm, 3, d)) for d in (0.25, 0.5, 1.0, 2.0, 100.0)]
    assert counts == sorted(counts) and counts[-1] == 20 * 30  # a large gain marks every cell
    assert len(dither(torch.zeros(30, 30), 3)) == 0
    assert len(dither(torch.ones(30, 30), 5)) == 36


def test_dither_count_tracks_pooled_mass():
    torch.manual_seed(1)
    ppm = torch.rand(90, 120) ** 3
    pooled = pool_cells(ppm, 3)
    n = len(dither(ppm, 3))
    assert abs(n - pooled.sum().item()) <= 0.02 * pooled.sum().item() + 2
