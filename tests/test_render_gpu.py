"""Rendering on CUDA: gsplat (alpha) and torch (sum) against the dense reference. Skipped without CUDA,
except for the checks of the gsplat wrapper that run anywhere (availability, tile radii, errors)."""

import pytest
import torch
from render_cases import NAMES, assert_matches_dense, hard_cases, image_and_grads, random_cholesky

import gilab
from gilab import Gaussians2D
from gilab.render import dense, gsplat

CUDA = torch.cuda.is_available()

# ------------------------------------------------------------------------------------ anywhere (no CUDA)
def test_gsplat_availability_says_why():
    ok, why = gsplat.available()
    if not CUDA:
        assert not ok and "CUDA" in why
    assert isinstance(why, str) and why


def test_gsplat_refuses_sum_blending_and_points_to_torch():
    g = random_cholesky(3, 4, 4)
    with pytest.raises(ValueError, match="backend 'torch'"):
        gsplat.rasterize(g.means, g.conics(), g.colors, g.opacities, 4, 4, blend="sum")


def test_gsplat_tile_radii_cover_the_cutoff():
    """Every pixel that passes the cutoff lies within the radii gsplat bins by (less its one-pixel pad)."""
    for case, (g, height, width) in hard_cases(torch.float64).items():
        if not len(g):
            continue
        radii = gsplat.footprint_radii(g.conics(), g.opacities).double()
        v = dense.gaussian_values(g.means, g.conics(), g.opacities, dense.pixel_centres(height, width, None,
                                                                                          torch.float64))
        pixels = dense.pixel_centres(height, width, None, torch.float64)
        offsets = (pixels[:, None, :] - g.means[None]).abs()                     # (P, N, 2)
        reach = torch.where((v > 0)[..., None], offsets, 0.0).amax(0)           # (N, 2) farthest contributing pixel
        skipped = (radii == 0).any(-1)  # gsplat skips these: they must contribute nowhere
        assert not (v[:, skipped] > 0).any(), case
        assert (reach[~skipped] <= radii[~skipped] - 1 + 1e-9).all(), case
    faint = gsplat.footprint_radii(torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([0.5 / 255]))
    assert faint.tolist() == [[0, 0]]


# -------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.parametrize("case", sorted(hard_cases()))
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gsplat_matches_dense_alpha(case):
    """gsplat computes in float32 with CUDA's fast __expf and a float32 T, so a pixel on the cutoff's edge can
    fall either way: compare norm-wise (a rare edge pixel moves the norm little) at float32-level tolerance."""
    g, height, width = hard_cases()[case]
    truth = image_and_grads(g.to(torch.float64), height, width, "alpha", "dense", "cuda")
    out = image_and_grads(g, height, width, "alpha", "gsplat", "cuda")
    for name, t, o in zip(NAMES, truth, out):
        assert o.dtype == torch.float32 and o.shape == t.shape, name
        if not t.numel() or not t.abs().max() > 0:
            assert (o.abs().max() if o.numel() else 0) <= 1e-6, (case, name)
            continue
        relative = ((o.double() - t).norm() / t.norm()).item()
        assert relative <= 2e-3, f"{case}: {name} off by {relative:.3g} (relative, norm-wise)"


@pytest.mark.parametrize("case", sorted(hard_cases()))
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_torch_on_cuda_matches_dense_sum(case):
    """Sum blending on CUDA goes through backend 'torch'; it matches dense (also on CUDA) to float32 rounding."""
    g, height, width = hard_cases()[case]
    assert_matches_dense(g, height, width, "sum", "torch", label=f"{case}: ", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gsplat_keeps_index_order_and_background():
    """Two opaque-ish Gaussians on the same pixel: Gaussian 0 is in front, as in every other backend."""
    g = Gaussians2D.from_cholesky(torch.tensor([[2.5, 2.5], [2.5, 2.5]]), torch.tensor([[2.0, 0.0, 2.0]] * 2),
                                  torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0.9, 0.9]))
    background = torch.tensor([0.0, 0.0, 1.0])
    ref = gilab.render(g, 5, 5, blend="alpha", backend="dense", background=background)
    out = gilab.render(g.to("cuda"), 5, 5, blend="alpha", backend="gsplat", background=background.cuda()).cpu()
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gsplat_empty_and_float64():
    empty = Gaussians2D.empty(device="cuda")
    assert gilab.render(empty, 4, 6, blend="alpha", backend="gsplat").abs().max() == 0
    g = random_cholesky(30, 20, 24, dtype=torch.float64).to("cuda")
    out = gilab.render(g, 20, 24, blend="alpha", backend="gsplat")
    assert out.dtype == torch.float64
    assert torch.allclose(out, gilab.render(g, 20, 24, blend="alpha", backend="dense"), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_auto_on_cuda_and_cpu_backend_refuses_cuda():
    from gilab.render import available_backends, cpu, pick_backend

    assert pick_backend(torch.device("cuda"), "alpha") == "gsplat"
    triton = available_backends()["triton"][0]
    assert pick_backend(torch.device("cuda"), "sum") == ("triton" if triton else "torch")
    g = random_cholesky(3, 4, 4).to("cuda")
    with pytest.raises(ValueError, match="CPU tensors"):
        cpu.rasterize(g.means, g.conics(), g.colors, g.opacities, 4, 4)


def test_gsplat_binning_inputs_with_gsplat_reference_code():
    """Our radii and depth bits through gsplat's own pure-PyTorch tile binning (``_isect_tiles``,
    ``_isect_offset_encode``), then gsplat's per-pixel compositing rule written out here: the image equals dense.
    This checks, without CUDA, that every contributing Gaussian reaches its tiles and in index order."""
    pytest.importorskip("gsplat")
    from gsplat.cuda._torch_impl import _isect_offset_encode, _isect_tiles

    g, height, width = random_cholesky(30, 22, 35, seed=31, spread=1.2, scale=(0.5, 10.0)), 22, 35
    means, conics, colors, opacities = g.means, g.conics(), g.colors, g.opacities
    tile = gsplat.TILE_SIZE
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    radii = gsplat.footprint_radii(conics, opacities)
    _, isect_ids, flatten_ids = _isect_tiles(means[None], radii[None], gsplat.depth_order(len(g))[None], tile,
                                             tiles_x, tiles_y)
    offsets = _isect_offset_encode(isect_ids, 1, tiles_x, tiles_y).flatten().tolist() + [len(flatten_ids)]
    image = torch.zeros(3, height, width)
    for i in range(height):
        for j in range(width):
            t_id = (i // tile) * tiles_x + j // tile
            ids = flatten_ids[offsets[t_id]:offsets[t_id + 1]].long()
            assert (ids[1:] > ids[:-1]).all(), "tile list not in index order"
            transmittance = 1.0
            for k in ids.tolist():
                d = torch.tensor([j + 0.5, i + 0.5]) - means[k]
                a, b, c = conics[k]
                sigma = 0.5 * (a * d[0] ** 2 + c * d[1] ** 2) + b * d[0] * d[1]
                alpha = min(0.999, (opacities[k] * torch.exp(-sigma)).item())
                if alpha < 1 / 255:
                    continue
                if transmittance * (1 - alpha) <= 1e-4:
                    break
                image[:, i, j] += colors[k] * alpha * transmittance
                transmittance *= 1 - alpha
    ref = gilab.render(g, height, width, blend="alpha", backend="dense")
    assert torch.allclose(image, ref, atol=1e-5)
