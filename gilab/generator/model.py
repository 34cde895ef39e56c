"""The feature network: a ConvNeXt encoder and a UNet decoder (docs/method.md, 4.1), plus the position head (4.2).

    net = FeatureNet(GeneratorConfig())
    features, ppm_logits = net(images)    # images (B,3,H,W), H and W multiples of config.stride
    # features (B, feat_dim, H/s, W/s), ppm_logits (B, 1, H/s, W/s) with s = config.out_stride

Written here (no timm, no pretrained download). Tensors run in channels_last memory format: on a CPU
the depthwise 7x7 convolutions and the per-pixel linears are 1.1-1.5x faster that way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GeneratorConfig


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        # In channels_last memory, permuting to (B, H, W, C) is a free view.
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """x + gamma * Linear(GELU(Linear(LN(dwconv7x7(x))))), the ConvNeXt block (Liu et al. 2022)."""

    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C): the linears act on the channels
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class Encoder(nn.Module):
    """ConvNeXt: a 4x4 stride-4 stem, then stages at strides 4, 8, 16, 32 joined by 2x2 stride-2 convs.

    Returns the output of every stage: [(B, widths[i], H / (4 * 2^i), W / (4 * 2^i))].
    """

    def __init__(self, widths, depths):
        super().__init__()
        self.downs = nn.ModuleList()
        self.stages = nn.ModuleList()
        for i, (w, d) in enumerate(zip(widths, depths)):
            if i == 0:
                down = nn.Sequential(nn.Conv2d(3, w, 4, stride=4), LayerNorm2d(w))
            else:
                down = nn.Sequential(LayerNorm2d(widths[i - 1]), nn.Conv2d(widths[i - 1], w, 2, stride=2))
            self.downs.append(down)
            self.stages.append(nn.Sequential(*[ConvNeXtBlock(w) for _ in range(d)]))

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for down, stage in zip(self.downs, self.stages):
            x = stage(down(x))
            skips.append(x)
        return skips


class UpBlock(nn.Module):
    """Upsample x2, concatenate the skip connection, then conv3x3-GELU (twice at coarse levels)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, convs: int = 2):
        super().__init__()
        layers = [nn.Conv2d(in_ch + skip_ch, out_ch, 3, padding=1), nn.GELU()]
        for _ in range(convs - 1):
            layers += [nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.GELU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.body(torch.cat([x, skip], 1))


class FeatureNet(nn.Module):
    """ConvNeXt-UNet: image (B,3,H,W) in [0,1] -> features (B,F,H/s,W/s) and position logits (B,1,H/s,W/s).

    The decoder climbs from stride 32 to ``out_stride``, taking the encoder's stages as skips at strides 16,
    8 and 4; the strides 2 and 1 (built only when ``out_stride`` asks for them) take a small conv of the image,
    so that fine edges can still reach the features.
    """

    MEAN = (0.45, 0.45, 0.40)  # rough natural-image statistics: centre the input
    STD = (0.25, 0.25, 0.25)

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        if config.out_stride not in (1, 2, 4):
            raise ValueError(f"out_stride must be 1, 2 or 4, got {config.out_stride}")
        self.config = config
        widths, dec = config.widths, config.decoder_widths
        self.encoder = Encoder(widths, config.depths)
        self.ups = nn.ModuleList()
        ch = widths[-1]
        skip_chs = list(reversed(widths[:-1]))  # strides 16, 8, 4
        for i, skip in enumerate(skip_chs):
            self.ups.append(UpBlock(ch, skip, dec[i], convs=2))
            ch = dec[i]
        # Strides 2 and 1: skips computed from the image by one cheap conv each.
        self.image_skips = nn.ModuleList()
        stride = 4
        for i in range(len(skip_chs), len(skip_chs) + {4: 0, 2: 1, 1: 2}[config.out_stride]):
            stride //= 2
            skip_ch = 16
            self.image_skips.append(nn.Sequential(nn.Conv2d(3, skip_ch, 3, stride=stride, padding=1), nn.GELU()))
            self.ups.append(UpBlock(ch, skip_ch, dec[i], convs=1))
            ch = dec[i]
        self.to_features = nn.Conv2d(ch, config.feat_dim, 1)
        # Position field: the per-pixel MLP 64-64-64-1 of the paper, as 1x1 convolutions.
        f = config.feat_dim
        self.position = nn.Sequential(nn.Conv2d(f, f, 1), nn.GELU(), nn.Conv2d(f, f, 1), nn.GELU(), nn.Conv2d(f, 1, 1))
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        stride = self.config.stride
        if images.shape[-1] % stride or images.shape[-2] % stride:
            raise ValueError(f"image sides must be multiples of {stride}, got {tuple(images.shape[-2:])}")
        x = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        skips = self.encoder(x)
        y = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            y = up(y, skip)
        for up, image_skip in zip(self.ups[len(skips) - 1:], self.image_skips):
            y = up(y, image_skip(x))
        features = self.to_features(y)
        return features, self.position(features)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
