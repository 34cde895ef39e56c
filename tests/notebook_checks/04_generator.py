# Run in the kernel after notebooks/04_generator.ipynb (fast mode): what it must have achieved.
import itertools

# The shipped model and the paper-size one, part by part.
assert count_parameters(gen) == 2_969_368 and count_parameters(gen.net.encoder) == 1_899_872
assert 95e6 < count_parameters(paper) < 105e6
# Shapes through the feature net for a 192x192 input: strides 4..32 down, back up to out_stride 2.
assert [stages[f"encoder stage {i}"] for i in (1, 2, 3, 4)] == [(1, 32, 48, 48), (1, 64, 24, 24), (1, 128, 12, 12),
                                                                (1, 256, 6, 6)], stages
assert stages["features"] == (1, 64, 96, 96) and stages["position logits"] == (1, 1, 96, 96), stages
assert features.shape == (64, padded.shape[1] // 2, padded.shape[2] // 2) and padded.shape[1] % 32 == 0
assert ppm.shape == (H, W) and 0 <= float(ppm.min()) and float(ppm.max()) <= 1
# Placement and fields: one Gaussian per triangle, N under the 2 H W / k^2 bound but not far from it.
assert len(out.gaussians) == len(mesh) == len(net_g), (len(out.gaussians), len(mesh), len(net_g))
assert 0.3 * 2 * H * W / 9 < len(net_g) < 1.05 * 2 * H * W / 9, len(net_g)
assert ((scale_factors > 0) & (scale_factors < 2)).all() and ((opacity > 0) & (opacity < 1)).all()
assert float((out.weights.max(1).values - 1 / 3).abs().max()) > 0.05  # the trained BC field moves the means
# The fields improve on placement alone, and the generator's start beats the quad-tree's at the same N.
assert psnr(fields_g) > psnr(placed) + 1, (psnr(fields_g), psnr(placed))
# The colour step: the generator's own output is the fields' colours times the ISRA ratio, and it renders better.
torch.testing.assert_close(stepped.colors, fields_g.colors * ratio[:, None])
assert psnr(stepped) > psnr(fields_g) + 0.3, (psnr(stepped), psnr(fields_g))
assert gen.config.colour_step and abs(len(stepped) - len(fields_g)) == 0
assert abs(len(quad_g) / len(net_g) - 1) < 0.03, (len(quad_g), len(net_g))
assert psnr(net_g) > psnr(quad_g) + 1.5, (psnr(net_g), psnr(quad_g))
assert set(timings) == {"network", "placement", "fields"} and all(t > 0 for t in timings.values())
assert all(r.psnr > r.history.psnr[0] for r in tuned.values())
# N grows with density and shrinks with the kernel size; target_count lands within 2 %.
assert all(a < b for ns in counts.values() for a, b in itertools.pairwise(ns)), counts
assert all(a > b for a, b in zip(counts[2], counts[3])) and all(a > b for a, b in zip(counts[3], counts[4]))
assert all(abs(len(g) / n - 1) <= 0.02 for n, g in budgets.items()), {n: len(g) for n, g in budgets.items()}
# The live training steps: every term logged each step, the loss and the PPM term fall.
assert all(len(v) == STEPS for v in history.values())
first, last = sum(history["loss"][:3]) / 3, sum(history["loss"][-3:]) / 3
assert last < 0.95 * first, history["loss"]
assert history["ppm"][-1] < history["ppm"][0], history["ppm"]
assert ((ppm_after - crop_ppms[0]) ** 2).mean() < ((ppm_before - crop_ppms[0]) ** 2).mean()  # closer to its target
# The first fine-tuning step is Adan's sign step: taking it by hand on all groups reproduces the fit's step 1.
assert abs(first_step["all"] - tuned["generator"].history.psnr[1]) < 0.1, (first_step, tuned["generator"].history.psnr[:3])
# Exercises: the shapes of exercise 1, the lone-Gaussian colour step of exercise 2, the focal loss of exercise 3.
assert tuple(small_padded.shape) == (1, 3, 256, 320) and tuple(small_features.shape) == (1, 64, 128, 160)
assert tuple(small_ppm.shape) == (1, 250, 300)
torch.testing.assert_close(ratio_lone, torch.tensor(least_squares).clamp(*LIMITS), rtol=1e-4, atol=1e-5)
assert torch.allclose(my_focal_mse(pred, target), focal_mse(pred, target))
