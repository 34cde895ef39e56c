"""Ellipses: the closed form against an independent NumPy least-squares fit, Steiner bounds, gradients."""

import math

import numpy as np
import pytest
import torch

from gilab.placement import fit_ellipses, triangle_areas


def lstsq_ellipse(triangle):
    """The least-squares conic through 3 vertices and 3 edge midpoints, as OpenCV's fitEllipse computes it:
    centre the 6 points, fit a x^2 + b xy + c y^2 + d x + e y = 1, take the conic's centre, refit the
    quadratic part about that centre. Returns centre (2,), semi-axes (major, minor), angle of the major axis."""
    v = np.asarray(triangle, dtype=np.float64)
    pts = np.vstack([v, (v + np.roll(v, -1, axis=0)) / 2])
    mean = pts.mean(0)
    x, y = (pts - mean).T
    a, b, c, d, e = np.linalg.lstsq(np.stack([x * x, x * y, y * y, x, y], 1), np.ones(6), rcond=None)[0]
    centre = np.linalg.solve([[2 * a, b], [b, 2 * c]], [-d, -e])
    qx, qy = x - centre[0], y - centre[1]
    A, B, C = np.linalg.lstsq(np.stack([qx * qx, qx * qy, qy * qy], 1), np.ones(6), rcond=None)[0]
    shape = np.linalg.inv([[A, B / 2], [B / 2, C]])  # the ellipse is q^T shape^-1 q = 1
    values, vectors = np.linalg.eigh(shape)
    major = vectors[:, 1]
    return centre + mean, np.sqrt(values[::-1]), math.atan2(major[1], major[0])


def smallest_angles(tris):
    """(T, 3, 2) -> (T,) the smallest interior angle of each triangle, radians."""
    u, v = tris.roll(-1, dims=1) - tris, tris.roll(1, dims=1) - tris
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.acos(cos.clamp(-1, 1)).min(-1).values


def random_triangles(n, seed, dtype=torch.float64, min_angle_deg=2.0):
    """Random triangles in a 300 x 200 image, without the almost flat ones (ill-conditioned for any fit)."""
    gen = torch.Generator().manual_seed(seed)
    tris = torch.rand(n, 3, 2, generator=gen, dtype=dtype) * torch.tensor([300.0, 200.0], dtype=dtype)
    return tris[smallest_angles(tris) > math.radians(min_angle_deg)]


def angle_difference(a, b):
    """Distance between two axis directions (modulo pi), radians."""
    d = (a - b) % math.pi
    return min(d, math.pi - d)


def test_matches_independent_least_squares_fit():
    tris = random_triangles(300, seed=0)
    centres, axes, angles = fit_ellipses(tris)
    assert len(tris) > 200
    for t in range(len(tris)):
        centre, ax, angle = lstsq_ellipse(tris[t].numpy())
        np.testing.assert_allclose(centres[t].numpy(), centre, rtol=0, atol=1e-7 * 300)
        np.testing.assert_allclose(axes[t].numpy(), ax, rtol=1e-7)
        if ax[0] > 1.001 * ax[1]:  # the direction of a near-circle is meaningless
            assert angle_difference(angles[t].item(), angle) < 1e-6


def test_centre_inside_and_area_between_steiner_ellipses():
    tris = random_triangles(500, seed=1, dtype=torch.float32)
    assert len(tris) > 400
    centres, axes, angles = fit_ellipses(tris)
    area = triangle_areas(tris).abs()
    inellipse = math.pi / (3 * math.sqrt(3)) * area  # Steiner inellipse: through the edge midpoints
    circumellipse = 4 * math.pi / (3 * math.sqrt(3)) * area  # Steiner circumellipse: through the vertices
    ellipse = math.pi * axes[:, 0] * axes[:, 1]
    assert (ellipse > inellipse).all() and (ellipse < circumellipse).all()
    torch.testing.assert_close(ellipse / circumellipse, torch.full_like(ellipse, 0.85), rtol=1e-4, atol=0)
    # inside: all three barycentric coordinates positive
    a, b, c = tris.unbind(1)
    total = triangle_areas(tris)
    for w in (triangle_areas(torch.stack([centres, b, c], 1)), triangle_areas(torch.stack([a, centres, c], 1)),
              triangle_areas(torch.stack([a, b, centres], 1))):
        assert ((w / total) > 0.3).all()  # the centroid: each barycentric coordinate is 1/3
    assert (axes[:, 0] >= axes[:, 1]).all() and (angles > -math.pi / 2).all() and (angles <= math.pi / 2).all()


def test_known_shapes():
    side = 6.0
    equilateral = torch.tensor([[[0, 0], [side, 0], [side / 2, side * math.sqrt(3) / 2]]], dtype=torch.float64)
    centre, axes, angle = fit_ellipses(equilateral)
    circumradius = side / math.sqrt(3)
    torch.testing.assert_close(axes[0], torch.full((2,), math.sqrt(0.85) * circumradius, dtype=torch.float64))
    assert angle.item() == 0.0
    torch.testing.assert_close(centre[0], torch.tensor([3.0, math.sqrt(3)], dtype=torch.float64))
    # a right isosceles triangle: the major axis lies along the hypotenuse, from (4, 0) towards (0, 4)
    _, axes, angle = fit_ellipses(torch.tensor([[[0.0, 0], [4, 0], [0, 4]]]))
    assert angle.item() == pytest.approx(-math.pi / 4)
    # translation and vertex order do not matter
    tri = random_triangles(5, seed=2)
    moved = fit_ellipses(tri[:, [2, 0, 1]] + torch.tensor([10.0, -7.0], dtype=torch.float64))
    base = fit_ellipses(tri)
    torch.testing.assert_close(moved[0], base[0] + torch.tensor([10.0, -7.0], dtype=torch.float64))
    torch.testing.assert_close(moved[1], base[1])


def test_affine_covariance():
    # the fit of an affine image of a triangle is the affine image of its fit (compare shape matrices)
    tris = random_triangles(50, seed=3)
    A = torch.tensor([[1.7, 0.4], [-0.3, 0.8]], dtype=torch.float64)
    shift = torch.tensor([5.0, 2.0], dtype=torch.float64)

    def shape(axes, angles):
        c, s = torch.cos(angles), torch.sin(angles)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        return R @ torch.diag_embed(axes ** 2) @ R.transpose(-1, -2)

    c0, a0, t0 = fit_ellipses(tris)
    c1, a1, t1 = fit_ellipses(tris @ A.T + shift)
    torch.testing.assert_close(c1, c0 @ A.T + shift)
    torch.testing.assert_close(shape(a1, t1), A @ shape(a0, t0) @ A.T)


def test_differentiable_gradcheck():
    tris = random_triangles(8, seed=4, min_angle_deg=10).requires_grad_()
    assert len(tris) >= 4
    assert torch.autograd.gradcheck(fit_ellipses, (tris,))


def test_degenerate_triangles_give_finite_values_and_gradients():
    tris = torch.tensor([[[0.0, 0], [1, 1], [2, 2]], [[3.0, 3], [3, 3], [3, 3]],
                         [[0.0, 0], [6, 0], [3, 3 * math.sqrt(3)]]], dtype=torch.float64, requires_grad=True)
    centres, axes, angles = fit_ellipses(tris)
    assert axes[0, 1] < 1e-5 and axes[1].max() < 1e-5
    (centres.sum() + axes.sum() + angles.sum()).backward()
    assert torch.isfinite(tris.grad).all()
