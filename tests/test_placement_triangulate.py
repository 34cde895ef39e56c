"""Triangulation: covers the image, boundary points, neighbours, degenerate inputs, no slivers, determinism."""

import numpy as np
import pytest
import torch

from gilab.placement import boundary_points, dither, mean_nn_distance, triangle_areas, triangulate


def check_valid(tri, height, width):
    """Counter-clockwise triangles with positive area that tile [0, W] x [0, H] exactly once."""
    P, T = len(tri.points), len(tri)
    assert tri.points.dtype == torch.float32 and tri.points.shape == (P, 2)
    assert tri.simplices.dtype == torch.int64 and tri.simplices.shape == (T, 3)
    assert tri.neighbors.dtype == torch.int64 and tri.neighbors.shape == (T, 3)
    assert tri.triangles.dtype == torch.float32 and tri.triangles.shape == (T, 3, 2)
    assert torch.equal(tri.triangles, tri.points[tri.simplices])
    assert tri.simplices.min() >= 0 and tri.simplices.max() < P
    assert (tri.points[:, 0] >= 0).all() and (tri.points[:, 0] <= width).all()
    assert (tri.points[:, 1] >= 0).all() and (tri.points[:, 1] <= height).all()
    areas = triangle_areas(tri.triangles.double())
    assert (areas > 0).all(), "every triangle must have a positive area in the exact coordinates"
    assert areas.sum().item() == pytest.approx(height * width, rel=1e-9)
    return areas


def test_triangulation_of_dithered_points():
    torch.manual_seed(0)
    ppm = torch.rand(60, 90)
    pts = dither(ppm, 3)
    tri = triangulate(pts, 60, 90)
    areas = check_valid(tri, 60, 90)
    assert tri.num_input == len(pts) and torch.equal(tri.points[: len(pts)], pts)
    # no slivers: the smallest triangle is a sizeable fraction of the mean (jitter is interior only)
    assert areas.min() > 0.02 * areas.mean()
    # Euler: P points of which h on the hull give 2P - h - 2 triangles
    on_hull = ((tri.points[:, 0] == 0) | (tri.points[:, 0] == 90) | (tri.points[:, 1] == 0) | (tri.points[:, 1] == 60))
    assert len(tri) == 2 * len(tri.points) - int(on_hull.sum()) - 2


def test_boundary_spacing_is_three_mean_nn_distances():
    rng = np.random.default_rng(0)
    pts = rng.uniform([5, 5], [195, 95], size=(300, 2))
    tri = triangulate(pts, 100, 200)
    added = tri.points[tri.num_input:].double().numpy()
    spacing = 3 * mean_nn_distance(pts)
    top = np.sort(added[added[:, 1] == 0][:, 0])
    assert top[0] == 0 and top[-1] == 200
    gaps = np.diff(top)
    assert gaps.max() <= spacing + 1e-9 and gaps.min() > 0.5 * spacing
    for corner in ([0, 0], [200, 0], [0, 100], [200, 100]):
        assert (np.abs(added - corner).sum(1) == 0).sum() == 1
    assert len(boundary_points(100, 200, spacing)) == len(added)


def test_neighbors_share_edges_and_border_edges_point_to_themselves():
    torch.manual_seed(2)
    tri = triangulate(torch.rand(200, 2) * torch.tensor([80.0, 50.0]), 50, 80)
    s, nb = tri.simplices.tolist(), tri.neighbors.tolist()
    for t in range(len(s)):
        for j in range(3):
            edge = set(s[t]) - {s[t][j]}
            u = nb[t][j]
            if u == t:  # a border edge: both ends on the same image side
                a, b = (tri.points[i] for i in edge)
                assert (a[0] == b[0] and a[0] in (0, 80)) or (a[1] == b[1] and a[1] in (0, 50))
            else:
                assert edge <= set(s[u]) and t in nb[u]


@pytest.mark.parametrize("points", [
    [], [[3.0, 4.0]], [[3.0, 4.0], [10.0, 12.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]],
    [[5.0, 5.0]] * 6, [[0.0, 0.0], [30.0, 20.0], [30.0, 0.0]], [[-5.0, 3.0], [40.0, 50.0], [7.0, 7.0]],
    [[float("nan"), 1.0], [2.0, 2.0]], [[0.5 + i, 10.5] for i in range(29)],
])
def test_degenerate_inputs_fall_back_and_never_raise(points):
    tri = triangulate(torch.tensor(points, dtype=torch.float32).reshape(-1, 2), 20, 30)
    check_valid(tri, 20, 30)
    assert len(tri) >= 2


@pytest.mark.parametrize("points", [[], [[7.0, 9.0]], [[7.0, 9.0], [20.0, 5.0]]])
def test_a_few_points_give_a_few_triangles(points):
    # too few to space edge points by: the corners only, so P inside points make 2 P + 2 triangles (a target
    # count of a handful of Gaussians must stay reachable, and the count must grow with P)
    tri = triangulate(torch.tensor(points, dtype=torch.float32).reshape(-1, 2), 20, 30)
    check_valid(tri, 20, 30)
    assert len(tri) == 2 * len(points) + 2 and len(tri.points) == len(points) + 4


def test_duplicates_are_dropped_keeping_input_order():
    pts = torch.tensor([[5.0, 5.0], [9.0, 3.0], [5.0, 5.0], [2.0, 8.0], [9.0, 3.0], [7.0, 7.0]])
    tri = triangulate(pts, 12, 12)
    check_valid(tri, 12, 12)
    assert tri.num_input == 4
    assert tri.points[:4].tolist() == [[5.0, 5.0], [9.0, 3.0], [2.0, 8.0], [7.0, 7.0]]


def test_corners_only_boundary_and_bad_option():
    pts = torch.tensor([[3.0, 3.0], [8.0, 4.0], [5.0, 9.0]])
    tri = triangulate(pts, 12, 12, boundary="corners")
    check_valid(tri, 12, 12)
    assert len(tri.points) == 7
    with pytest.raises(ValueError, match="boundary"):
        triangulate(pts, 12, 12, boundary="none")


def test_triangulation_is_deterministic_for_a_seed():
    torch.manual_seed(3)
    pts = dither(torch.rand(45, 60), 3)
    a, b = triangulate(pts, 45, 60, seed=5), triangulate(pts, 45, 60, seed=5)
    assert torch.equal(a.simplices, b.simplices) and torch.equal(a.neighbors, b.neighbors)
    c = triangulate(pts, 45, 60, jitter=0)  # without jitter: the same points, still a valid triangulation
    check_valid(c, 45, 60)
    assert torch.equal(c.points, a.points)


@pytest.mark.parametrize("seed", range(6))
def test_lattice_points_with_border_points_give_no_zero_area_triangles(seed):
    # the hardest input for exact coordinates: integer lattice points (many collinear and cocircular),
    # some of them on the image border
    rng = np.random.default_rng(seed)
    lattice = np.stack(np.meshgrid(np.arange(0, 41, 2), np.arange(0, 31, 2)), -1).reshape(-1, 2)
    pts = lattice[rng.random(len(lattice)) < 0.3 + 0.1 * seed]
    check_valid(triangulate(pts, 30, 40, seed=seed), 30, 40)
    check_valid(triangulate(pts, 30, 40, boundary="corners", seed=seed), 30, 40)
