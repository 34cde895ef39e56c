"""Training data for the generator: images paired with their cached pseudo-PPMs, and random crops.

    pairs = load_pairs(images_dir, ppm_dir)       # [(image (3,H,W) uint8, ppm (H,W) float16)]
    ds = CropDataset(pairs, crop=192)             # (image (3,c,c), ppm (c,c)) with random crops and flips
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..errors import DataError, FileFormatError
from ..files import list_images
from .targets import load_ppm, ppm_path


def bsds_root() -> Path:
    """$GILAB_DATA/train/bsds500 (the folder with train/ and val/)."""
    root = os.environ.get("GILAB_DATA")
    if not root:
        raise DataError("set GILAB_DATA to the data folder (it holds train/bsds500/{train,val}), "
                        "or `gilab download bsds500`")
    return Path(root) / "train" / "bsds500"


def load_pairs(images_dir: str | Path, ppm_dir: str | Path, limit: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """[(image (3,H,W) uint8, ppm (H,W) float16)] for every image that has a cached PPM (kept compact in memory)."""
    from ..io import load_image

    paths = [p for p in list_images(images_dir) if ppm_path(ppm_dir, p).exists()]
    if limit:
        paths = paths[:limit]
    pairs = []
    for p in paths:
        image = (load_image(p) * 255).round().to(torch.uint8)
        ppm = load_ppm(ppm_dir, p).half()
        if ppm.shape != image.shape[-2:]:
            raise FileFormatError(f"{ppm_path(ppm_dir, p)}: PPM {tuple(ppm.shape)} does not match image "
                             f"{tuple(image.shape[-2:])}; delete it and run prepare-ppm again")
        pairs.append((image, ppm))
    return pairs


class CropDataset(torch.utils.data.Dataset):
    """Random square crops (with flips and, for square crops, transposes) of images and their pseudo-PPMs.

    Item i is a fresh random crop of image i: (image (3, c, c) float32 in [0, 1], ppm (c, c) float32).
    Images smaller than the crop are padded by reflection. Randomness comes from torch's global RNG,
    so a checkpoint that saves it resumes the same stream (with ``workers=0``).
    """

    def __init__(self, pairs: list[tuple[Tensor, Tensor]], crop: int = 192):
        if not pairs:
            raise DataError("no training images with a pseudo-PPM: run `gilab prepare-ppm` first")
        self.pairs, self.crop = pairs, crop

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, ppm = self.pairs[i]
        x = torch.cat([image.float() / 255, ppm.float()[None]])  # (4, H, W): crop both at once
        c = self.crop
        ph, pw = max(0, c - x.shape[1]), max(0, c - x.shape[2])
        if ph or pw:
            x = torch.nn.functional.pad(x[None], (0, pw, 0, ph), mode="reflect")[0]
        top = int(torch.randint(0, x.shape[1] - c + 1, ()))
        left = int(torch.randint(0, x.shape[2] - c + 1, ()))
        x = x[:, top:top + c, left:left + c]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        if torch.rand(()) < 0.5:
            x = x.flip(1)
        if torch.rand(()) < 0.5:
            x = x.transpose(1, 2)
        x = x.contiguous()
        return x[:3], x[3]
