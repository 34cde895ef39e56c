# Run in the kernel after notebooks/01_rasterizer.ipynb (fast mode): what it must have achieved.
assert (gilab.render(chol, 64, 96) - picture).abs().max() < 1e-5
assert int((picture[0] > 0).sum()) < 64 * 96 and (picture[0] > 0).any()
assert gilab.render(fitted, scale=6).shape == (3, 288, 288)
assert playground.renders >= 1 and len(playground.image.value) > 1000
assert len(playground.gaussians()) == 3
