"""Hard cases for rasterizers: every fast backend must match the dense reference on these."""

from __future__ import annotations

import torch

from gilab import Gaussians2D


def random_cholesky(n, height, width, seed=0, dtype=torch.float32, spread=1.0, scale=(0.5, 4.0)):
    """n Gaussians with means over (and a little outside) the image, std devs mostly in ``scale`` px."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=gen, dtype=dtype)
    size = torch.tensor([width, height], dtype=dtype)
    means = (rand(n, 2) * (1 + 2 * (spread - 1)) - (spread - 1)) * size
    l1 = scale[0] + rand(n) * (scale[1] - scale[0])
    l3 = scale[0] + rand(n) * (scale[1] - scale[0])
    l2 = (rand(n) - 0.5) * l1
    return Gaussians2D.from_cholesky(means, torch.stack([l1, l2, l3], -1), rand(n, 3), 0.2 + 0.8 * rand(n))


def hard_cases(dtype=torch.float32):
    """{name: (gaussians, height, width)}: the cases the foundation and CPU-rasterizer issues name."""
    cases = {"random": (random_cholesky(200, 24, 31, seed=1, dtype=dtype, spread=1.1), 24, 31)}

    big = random_cholesky(6, 40, 50, seed=2, dtype=dtype, scale=(25.0, 60.0))  # radius > 64 px (3.33 sigma)
    cases["large"] = (big, 40, 50)

    tiny = random_cholesky(300, 20, 20, seed=3, dtype=dtype, scale=(0.05, 0.4))  # sub-pixel
    cases["subpixel"] = (tiny, 20, 20)

    g = random_cholesky(50, 20, 24, seed=4, dtype=dtype, scale=(0.5, 3.0))
    chol = g.cholesky.clone()
    # near-singular: the minor axis is ~1/100 of the major one (condition number ~1e4). Thinner ones make the
    # float32 conic itself noise (Syy = l2^2 + l3^2 loses l3), so no two float32 codes could agree on them.
    chol[:, 2] = 0.02 * chol[:, 0]
    chol[:, 1] = 1.5 * chol[:, 0]
    cases["near_singular"] = (Gaussians2D.from_cholesky(g.means, chol, g.colors, g.opacities), 20, 24)

    off = random_cholesky(100, 16, 16, seed=5, dtype=dtype, spread=2.0, scale=(1.0, 6.0))  # many means off-image
    cases["off_image"] = (off, 16, 16)

    crowd = random_cholesky(1500, 16, 16, seed=6, dtype=dtype, scale=(2.0, 3.0))
    crowd.means[:] = torch.tensor([8.0, 8.0], dtype=dtype) + 0.3 * torch.randn(1500, 2, dtype=dtype,
                                                                              generator=torch.Generator().manual_seed(6))
    crowd.colors[:] = crowd.colors * 1e-3  # keep the sum finite-looking; every one of 1500 must count
    cases["crowd_1500_over_one_pixel"] = (crowd, 16, 16)

    cases["n0"] = (Gaussians2D.from_cholesky(torch.zeros(0, 2, dtype=dtype), torch.zeros(0, 3, dtype=dtype),
                                             torch.zeros(0, 3, dtype=dtype)), 5, 7)
    cases["n1"] = (random_cholesky(1, 9, 11, seed=7, dtype=dtype, scale=(2.0, 3.0)), 9, 11)
    cases["h1"] = (random_cholesky(30, 1, 40, seed=8, dtype=dtype), 1, 40)
    cases["w1"] = (random_cholesky(30, 40, 1, seed=9, dtype=dtype), 40, 1)

    faint = random_cholesky(40, 12, 12, seed=10, dtype=dtype)
    faint.opacities[:20] = 0.5 / 255  # below the cutoff everywhere: contributes nothing
    faint.opacities[20:] = 3.0        # sum mode clamps o w at 1
    cases["opacity_extremes"] = (faint, 12, 12)
    return cases


# ------------------------------------------------------------------- comparing a backend with the reference
BACKGROUND = torch.tensor([0.2, 0.5, 0.9])
NAMES = ["image", "means", "cholesky", "colors", "opacities"]


def image_and_grads(g, height, width, blend, backend, device="cpu"):
    """The image and the gradients of a fixed random linear loss wrt every Gaussian tensor (on the CPU)."""
    import gilab

    leaves = [t.detach().to(device).clone().requires_grad_() for t in (g.means, g.cholesky, g.colors, g.opacities)]
    image = gilab.render(Gaussians2D.from_cholesky(*leaves), height, width, blend=blend, backend=backend,
                         background=BACKGROUND.to(device, g.dtype))
    # Drawn in float64 whatever the image's dtype, then rounded: torch.rand gives different numbers for the same
    # seed in float32 and float64, which made the float64 truth's loss another loss than the float32 backends'.
    weights = torch.rand(image.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = weights.to(device, image.dtype)
    if len(g):
        (image * weights).sum().backward()
    return [image.detach().cpu()] + [(t.grad if t.grad is not None else torch.zeros_like(t)).cpu() for t in leaves]


def assert_matches_dense(g, height, width, blend, backend, label="", device="cpu"):
    """``backend`` in float32 is as close to the float64 truth as the float32 dense reference is.

    Comparing two float32 codes directly is not enough: on ill-conditioned cases (near-singular
    covariances) both are off the exact answer by more than rtol 1e-4, in different directions.
    So we measure each against the dense reference in float64 and allow the backend 4x the
    reference's own float32 error, plus 1e-5 of the tensor's scale (they sum in different orders).
    """
    truth = image_and_grads(g.to(torch.float64), height, width, blend, "dense", device)
    ref = image_and_grads(g, height, width, blend, "dense", device)
    out = image_and_grads(g, height, width, blend, backend, device)
    for name, t, r, o in zip(NAMES, truth, ref, out):
        assert o.dtype == r.dtype and o.shape == r.shape, name
        if not t.numel():
            continue
        ref_error = (r.double() - t).abs().max().item()
        error = (o.double() - t).abs().max().item()
        bound = 4 * ref_error + 1e-5 * max(1.0, t.abs().max().item())
        assert error <= bound, f"{label}{blend}: {name} off by {error:.3g} (dense float32: {ref_error:.3g})"
