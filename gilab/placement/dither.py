"""Dithering: a position probability map (PPM) -> points, one per marked k x k cell (docs/method.md, section 4.3).

    points = dither(ppm, kernel_size=3, density=1.0)     # (M, 2) pixels (x, y)

Three small steps, each its own function so that a notebook can show them one by one:

1. :func:`pool_cells` pads the PPM to a multiple of k and max-pools it over k x k cells, so that a single
   bright pixel is enough to ask for a point in its cell (a mean would dilute thin edges);
2. :func:`floyd_steinberg` turns the pooled values into on/off cells whose count follows their sum
   (error diffusion keeps the local mass, so bright regions get dense points and dark ones sparse);
3. :func:`cell_centres` puts one point at the centre of every marked cell.

So N is at most about H W / k^2 and ``density`` (a gain on the pooled map) moves it in between.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Floyd-Steinberg's error weights: right, below-left, below, below-right (they sum to 1).
FS_RIGHT, FS_BELOW_LEFT, FS_BELOW, FS_BELOW_RIGHT = 7 / 16, 3 / 16, 5 / 16, 1 / 16
THRESHOLD = 0.5


def pool_cells(ppm: Tensor, kernel_size: int = 3) -> Tensor:
    """(H, W) PPM in [0, 1] -> (ceil(H/k), ceil(W/k)) cell maxima.

    The PPM is padded with zeros at the bottom and right up to a multiple of k, so a partial cell at the
    edge is pooled over its pixels inside the image only.
    """
    if ppm.ndim != 2:
        raise ValueError(f"ppm must be (H, W), got shape {tuple(ppm.shape)}")
    k = int(kernel_size)
    if k < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    height, width = ppm.shape
    padded = F.pad(ppm.detach().float()[None, None], (0, (-width) % k, 0, (-height) % k))
    return F.max_pool2d(padded, k)[0, 0]


@numba.njit(cache=True)
def _floyd_steinberg(values):
    # values: (h, w) float64, modified in place (it carries the diffused error). Error that would leave
    # the map (right of the last column, below the last row) is dropped, as in the textbook algorithm.
    h, w = values.shape
    marked = np.zeros((h, w), dtype=np.bool_)
    for r in range(h):
        for c in range(w):
            old = values[r, c]
            new = 1.0 if old >= THRESHOLD else 0.0
            marked[r, c] = new > 0.0
            error = old - new
            if c + 1 < w:
                values[r, c + 1] += error * FS_RIGHT
            if r + 1 < h:
                if c > 0:
                    values[r + 1, c - 1] += error * FS_BELOW_LEFT
                values[r + 1, c] += error * FS_BELOW
                if c + 1 < w:
                    values[r + 1, c + 1] += error * FS_BELOW_RIGHT
    return marked


def floyd_steinberg(values: np.ndarray) -> np.ndarray:
    """Textbook Floyd-Steinberg error diffusion: (h, w) float values -> (h, w) bool, True = marked.

    Float error, threshold 0.5 (a corrected value >= 0.5 is marked), weights 7/16 right, 3/16 below-left,
    5/16 below, 1/16 below-right, left to right on every row. Over a region the number of marked cells
    follows the sum of the values. (Pillow's ``convert("1")`` is an integer variant that differs on
    12-26 % of cells; see docs/method.md, section 4.3.)
    """
    values = np.array(values, dtype=np.float64, order="C", copy=True)  # the loop writes the error into it
    if values.ndim != 2:
        raise ValueError(f"values must be (h, w), got shape {values.shape}")
    return _floyd_steinberg(values)


def cell_centres(marked: np.ndarray, kernel_size: int, height: int, width: int) -> Tensor:
    """(h, w) bool marked cells -> (M, 2) float32 pixel (x, y) of their centres, in row-major order.

    Cell (r, c) covers columns [c k, c k + k) and rows [r k, r k + k), so its centre is (c k + k/2, r k + k/2).
    A partial cell at the right or bottom edge (when H or W is not a multiple of k) gets the centre of its
    part inside the image instead, so that no point lies outside the image.
    """
    k = kernel_size
    rows, cols = np.nonzero(marked)
    x0, y0 = cols * k, rows * k
    x = (x0 + np.minimum(x0 + k, width)) / 2
    y = (y0 + np.minimum(y0 + k, height)) / 2
    return torch.from_numpy(np.stack([x, y], axis=1).astype(np.float32)).reshape(-1, 2)


def dither(ppm: Tensor, kernel_size: int = 3, density: float = 1.0) -> Tensor:
    """Points from a position probability map: pool, scale by ``density``, dither, take cell centres.

    Args:
        ppm: (H, W) tensor in [0, 1], the position probability map.
        kernel_size: k, the cell side in pixels; at most one point per k x k cell.
        density: gain on the pooled map (clipped to [0, 1] after it): above 1 asks for more points, below 1 fewer.

    Returns:
        (M, 2) float32 tensor of pixel coordinates (x, y); M is about sum(clip(density * pooled)).
    """
    height, width = ppm.shape[-2:]
    cells = (pool_cells(ppm, kernel_size) * float(density)).clamp(0, 1)
    marked = floyd_steinberg(cells.cpu().numpy())
    return cell_centres(marked, int(kernel_size), height, width)
