# Run in the kernel after notebooks/00_quickstart.ipynb (fast mode): what it must have achieved.
import torch  # the notebook itself no longer needs it

assert result.iterations == 100 and len(result.gaussians) == 600
assert result.psnr > result.history.psnr[0] + 8, result.summary()
assert torch.equal(g.means, result.gaussians.means) and zoomed.shape == pixels.shape
