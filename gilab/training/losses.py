"""The generator's training loss: L = L_ppm + L_rec + L_scale (docs/method.md, section 5.1).

  L_ppm   focal MSE (1 - e^-|e|)^2 e^2 between the predicted PPM and the pseudo-PPM,
  L_rec   0.7 weighted MSE + 0.3 weighted (1 - SSIM) of the clamped sum-blend render, weight =
          clamp(1 / (pseudo-PPM + 0.01), 1, 10): flat regions get few Gaussians, so their errors count more,
  L_scale 10 mean(relu(0.5 - scale)): no Gaussian thinner than half a pixel.

The SSIM here is a per-pixel map (it is weighted pixel by pixel); ``gilab.metrics`` (pytorch-msssim) gives
only whole-image means, which is why this module computes its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generator import Generator
from ..metrics import psnr
from ..render import rasterize
from .config import TrainConfig


def focal_mse(pred: Tensor, target: Tensor) -> Tensor:
    """mean((1 - exp(-|e|))^2 e^2), e = pred - target: small errors are damped (they are mostly the
    pseudo-PPM's own noise), large ones count."""
    e = pred - target
    return ((1 - torch.exp(-e.abs())) ** 2 * e * e).mean()


def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> Tensor:
    """Per-pixel SSIM (Wang et al. 2004; 11-tap Gaussian, sigma 1.5, data range 1) of (3, H, W) images,
    averaged over channels: (H - 10, W - 10) ("valid" windows, as pytorch_msssim)."""
    g = _gauss_window(device=a.device)
    x = torch.stack([a, b, a * a, b * b, a * b]).flatten(0, 1)[:, None]       # (15, 1, H, W)
    x = F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    x = x.view(5, 3, *x.shape[-2:])
    mu_a, mu_b, aa, bb, ab = x
    va, vb, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return s.mean(0)


def reconstruction_loss(render: Tensor, target: Tensor, ppm: Tensor, mse_weight: float = 0.7,
                        ssim_weight: float = 0.3) -> Tensor:
    """mse_weight x weighted MSE + ssim_weight x weighted (1 - SSIM) (the paper: 0.7 and 0.3); render, target
    (3, H, W), ppm (H, W) the pseudo-PPM.

    With the paper's weights the SSIM term is 96-99 % of the loss on natural crops (the MSE of a fair start is
    ~0.002), so the gradient barely sees brightness; a larger ``mse_weight`` (e.g. 50) balances the two."""
    w = torch.clamp(1 / (ppm + 0.01), 1, 10)
    mse = (w * ((render - target) ** 2).mean(0)).mean()
    s = ssim_map(render, target)
    pad = (w.shape[0] - s.shape[0]) // 2
    wssim = (w[pad:pad + s.shape[0], pad:pad + s.shape[1]] * (1 - s)).mean()
    return mse_weight * mse + ssim_weight * wssim


def density_gain(spread: float) -> float:
    """A gain drawn log-uniformly in [1 / spread, spread] (1 when spread is 1), from torch's global RNG: the
    network then learns at every density it will be asked for (a target count lowers or raises the gain)."""
    if spread <= 1:
        return 1.0
    return float(torch.exp((2 * torch.rand(()) - 1) * math.log(spread)))


class GeneratorLoss(nn.Module):
    """The training forward pass as one module, so that DistributedDataParallel can wrap it."""

    def __init__(self, generator: Generator, cfg: TrainConfig):
        super().__init__()
        self.generator, self.cfg = generator, cfg

    def forward(self, images: Tensor, ppm_targets: Tensor) -> dict[str, Tensor]:
        """images (B, 3, c, c) in [0, 1], ppm_targets (B, c, c) -> {"loss", "ppm", "rec", "scale", "psnr", "n"}
        (the three terms keep their graphs, so that each can be studied alone)."""
        gen, cfg = self.generator, self.cfg
        features, padded, ppm = gen.predict(images)
        l_ppm = focal_mse(ppm, ppm_targets)
        rec, scales, psnrs, counts = [], [], [], []
        h, w = images.shape[-2:]
        for b in range(images.shape[0]):
            source = ppm[b] if cfg.place_from == "pred" else ppm_targets[b]
            mesh = gen.mesh(source, cfg.kernel_size, cfg.density * density_gain(cfg.density_range))
            out = gen.build(features[b], padded[b], mesh, (h, w))
            g = out.gaussians
            render = rasterize(g.means, g.conics(), g.colors, g.opacities, h, w, "sum", cfg.backend).clamp(0, 1)
            rec.append(reconstruction_loss(render, images[b], ppm_targets[b], cfg.mse_weight, cfg.ssim_weight))
            scales.append(out.scales.flatten())
            psnrs.append(psnr(render.detach(), images[b]))
            counts.append(len(g))
        l_rec = torch.stack(rec).mean()
        l_scale = 10 * F.relu(0.5 - torch.cat(scales)).mean()
        return {"loss": l_ppm + l_rec + l_scale, "ppm": l_ppm, "rec": l_rec, "scale": l_scale,
                "psnr": torch.stack(psnrs).mean(),
                "n": torch.tensor(float(sum(counts)) / len(counts))}
