"""Pseudo-PPM: the position probability map a fitted set of Gaussians implies (docs/method.md, section 5.3).

    ppm = pseudo_ppm(gaussians, height, width)     # (H, W) in [0, 1]

(``gilab.training.targets.ppm_from_image`` fits an image first, then calls this.)

This is the training target of the generator's position field: where a GaussianImage fit put many
Gaussians, the map is bright. Density at a pixel = 10 / sqrt(distance to its k-th nearest Gaussian mean):
the k-th neighbour (not the first) makes it a local count, smooth rather than spiky around each mean.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from ..gaussians import Gaussians2D, pixel_centres

NEIGHBOURS = 10  # the k in "distance to the k-th nearest mean" (reference)
CLIP_STDS = 3.0  # outliers beyond mean +- 3 std are clipped before normalising
MIN_DISTANCE = 1e-3  # px; a pixel centre exactly on k means would otherwise give infinite density


def kth_neighbour_distance(means: np.ndarray, height: int, width: int, k: int = NEIGHBOURS) -> np.ndarray:
    """(H, W) distance (px) from every pixel centre to its k-th nearest mean (the last one if fewer than k)."""
    k = min(k, len(means))
    centres = pixel_centres(height, width, dtype=torch.float64).numpy()
    distances, _ = cKDTree(means).query(centres, k=[k], workers=-1)
    return distances.reshape(height, width)


def normalise(values: np.ndarray, clip_stds: float = CLIP_STDS) -> np.ndarray:
    """Clip to mean +- ``clip_stds`` std, then min-max scale to [0, 1] (a constant map becomes 0.5)."""
    mean, std = values.mean(), values.std()
    clipped = np.clip(values, mean - clip_stds * std, mean + clip_stds * std)
    low, high = clipped.min(), clipped.max()
    if high - low <= 1e-12 * max(abs(high), 1.0):
        return np.full_like(values, 0.5)
    return (clipped - low) / (high - low)


def pseudo_ppm(gaussians: Gaussians2D, height: int, width: int, k: int = NEIGHBOURS) -> Tensor:
    """(H, W) float32 in [0, 1]: 10 / sqrt(distance to the k-th nearest mean), clipped and normalised.

    Args:
        gaussians: a fitted set (only the means are used), pixels.
        height, width: the image size in pixels.
        k: which neighbour's distance measures the local density (10 in the reference).
    """
    means = gaussians.means.detach().cpu().double().numpy()
    if len(means) == 0:
        return torch.full((height, width), 0.5)
    distance = np.maximum(kth_neighbour_distance(means, height, width, k), MIN_DISTANCE)
    density = 10.0 / np.sqrt(distance)
    return torch.from_numpy(normalise(density).astype(np.float32))
