# Run in the kernel after notebooks/03_adaptive_placement.ipynb (fast mode): what it must have achieved.
import itertools

sides = cells[:, 2:] - cells[:, :2]
assert sides.min() <= 4 < sides.max() and len(quad) > len(cells)  # small cells on detail, big ones elsewhere
assert torch.equal(points, placement.dither(edge_ppm, k)) and len(points) == int(marked.sum())
for d, ns in counts.items():  # N falls with k and stays under 2 H W / k^2 (+ the border's few)
    assert all(a > b for a, b in itertools.pairwise(ns)), (d, ns)
    assert all(n <= 1.1 * 2 * H * W / kk ** 2 + 40 for n, kk in zip(ns, kernels)), (d, ns)
assert all(counts[0.5][i] < counts[1.0][i] < counts[2.0][i] for i in range(len(kernels))), counts
assert all(abs(len(g) - t) <= 0.02 * t for t, g in by_target.items()), {t: len(g) for t, g in by_target.items()}
assert len(tri.points) > len(points) and 1.7 * len(tri.points) < len(tri) < 2 * len(tri.points)
assert 0.95 * len(tri) <= len(placed) <= len(tri) and placed.size == (H, W)
assert fits["placed (edge PPM)"].psnr > fits["random"].psnr + 3, {n: r.psnr for n, r in fits.items()}
assert pseudo.shape == (H, W) and float(pseudo.min()) == 0.0 and float(pseudo.max()) == 1.0
assert abs(len(from_pseudo) - len(placed)) <= 0.02 * len(placed)
assert explorer.renders == 2 and explorer.placements == 2 and "k = 5" in explorer.status.value
assert len(explorer.image.value) > 1000 and explorer.error is None
assert len(explorer.gaussians) == len(placement.place(edge_ppm, image, kernel_size=5))
