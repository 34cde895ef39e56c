"""Gaussians2D: parametrisations, conversions, conics, NDC, zoom and the file format."""

import math

import pytest
import torch
from render_cases import random_cholesky

from gilab import Gaussians2D, ndc_to_pixels, pixels_to_ndc
from gilab.gaussians import FORMAT_VERSION


def test_cholesky_and_scale_rotation_give_the_same_covariance():
    g = random_cholesky(50, 30, 40, seed=1, dtype=torch.float64)
    rs = g.to_scale_rotation()
    back = rs.to_cholesky()
    assert torch.allclose(rs.covariances(), g.covariances(), atol=1e-10)
    assert torch.allclose(back.covariances(), g.covariances(), atol=1e-10)
    assert (rs.scales[:, 0] >= rs.scales[:, 1]).all()


def test_scale_rotation_by_hand():
    # a Gaussian 3 px wide along x rotated by 90 degrees is 3 px tall
    g = Gaussians2D.from_scale_rotation(torch.zeros(1, 2), torch.tensor([[3.0, 1.0]]), torch.tensor([math.pi / 2]),
                                        torch.ones(1, 3))
    assert torch.allclose(g.covariances()[0], torch.tensor([[1.0, 0.0], [0.0, 9.0]]), atol=1e-5)


def test_conics_invert_covariances():
    for g in [random_cholesky(20, 9, 9, dtype=torch.float64), random_cholesky(20, 9, 9, dtype=torch.float64)
              .to_scale_rotation()]:
        a, b, c = g.conics().unbind(-1)
        q = torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)
        eye = torch.eye(2, dtype=torch.float64).expand(len(g), 2, 2)
        assert torch.allclose(q @ g.covariances(), eye, atol=1e-9)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="colors must have shape"):
        Gaussians2D.from_cholesky(torch.zeros(3, 2), torch.zeros(3, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="exactly one covariance"):
        Gaussians2D(torch.zeros(1, 2), torch.zeros(1, 3), torch.ones(1))


def test_ndc_round_trip_and_convention():
    xy = torch.tensor([[0.0, 0.0], [768.0, 512.0], [384.0, 256.0]])
    ndc = pixels_to_ndc(xy, 512, 768)
    assert ndc.tolist() == [[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]
    assert torch.allclose(ndc_to_pixels(ndc, 512, 768), xy)


def test_scaled_multiplies_means_and_std():
    g = random_cholesky(10, 8, 8).to_scale_rotation()
    z = g.scaled(2.5)
    assert torch.allclose(z.means, g.means * 2.5) and torch.allclose(z.covariances(), g.covariances() * 6.25,
                                                                      rtol=1e-5)


@pytest.mark.parametrize("param", ["cholesky", "rs"])
def test_save_load_round_trip(tmp_path, param):
    g = random_cholesky(30, 10, 12)
    g.size = (10, 12)
    if param == "rs":
        g = g.to_scale_rotation()
    path = g.save(tmp_path / "g.safetensors")
    h = Gaussians2D.load(path)
    assert h.param == param and h.size == (10, 12) and len(h) == 30
    for name in ["means", "colors", "opacities"]:
        assert torch.equal(getattr(h, name), getattr(g, name))
    assert torch.allclose(h.covariances(), g.covariances())


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="not a gilab Gaussians file"):
        Gaussians2D.load(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a gilab Gaussians file"):
        Gaussians2D.load(junk)
    newer = tmp_path / "newer.safetensors"
    g = random_cholesky(2, 4, 4)
    save_file({"means": g.means, "colors": g.colors, "opacities": g.opacities, "cholesky": g.cholesky}, str(newer),
              metadata={"format": "gilab.gaussians", "version": str(FORMAT_VERSION + 1)})
    with pytest.raises(ValueError, match="newer"):
        Gaussians2D.load(newer)


def test_subset_and_len():
    g = random_cholesky(10, 8, 8)
    assert len(g[:4]) == 4 and len(g[g.opacities > 2]) == 0
