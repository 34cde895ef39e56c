"""Training the generator: targets, data, loss, loop, checkpoints, export (docs/method.md, section 5).

    gilab prepare-ppm $GILAB_DATA/train/bsds500/train $GILAB_DATA/train/bsds500/val --out cache/ppm
    gilab train-generator --ppm-dir cache/ppm --out cache/run1 --epochs 30
    torchrun --nproc_per_node 4 -m gilab.training --ppm-dir cache/ppm --out cache/run1   # the same, in parallel

One idea per module: ``targets`` (pseudo-PPMs, cached), ``data`` (image/PPM pairs, random crops), ``losses``
(L_ppm + L_rec + L_scale), ``checkpoints`` (save, load without pickle, export as shippable weights),
``loop`` (the schedule, DDP, resuming), ``config`` (one run as a dataclass). The generator package keeps
inference and weights only.
"""

from .checkpoints import export, load_checkpoint
from .config import TrainConfig
from .data import CropDataset, load_pairs
from .loop import deterministic, train, validate
from .losses import GeneratorLoss, focal_mse, reconstruction_loss, ssim_map
from .targets import load_ppm, ppm_from_image, prepare_ppm

__all__ = ["CropDataset", "GeneratorLoss", "TrainConfig", "deterministic", "export", "focal_mse", "load_checkpoint",
           "load_pairs", "load_ppm", "ppm_from_image", "prepare_ppm", "reconstruction_loss", "ssim_map", "train",
           "validate"]
