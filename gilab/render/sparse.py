"""The ``torch`` backend: sparse footprints in plain PyTorch, on CPU or CUDA.

Each Gaussian only touches the pixels inside its cutoff ellipse. We enumerate the pixels of each
Gaussian's bounding box (clipped to the image), evaluate the same per-pixel model as ``dense``
there, keep the contributions that pass the 1/255 cutoff, and scatter them with ``index_add_``.

Gaussians of very different sizes would waste work if they shared one box size, so they are
bucketed by box size (rounded up to powers of two) and each bucket is processed in chunks of a
bounded number of evaluations: memory stays bounded however large a Gaussian is, and no
Gaussian is ever truncated (a radius-1000 px Gaussian simply lands in a big bucket).

Alpha blending needs, per pixel, the contributions in index order: we sort the (pixel, Gaussian)
pairs and take a segmented cumulative sum of log(1 - alpha) in float64 for the transmittance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..gaussians import CUTOFF
from .dense import ALPHA_MAX, T_MIN

#: Evaluations per chunk (pixel-Gaussian pairs held at once, about 40 bytes each with autograd).
CHUNK_EVALUATIONS = 1 << 22


def available() -> tuple[bool, str]:
    return True, "always (pure PyTorch, CPU and CUDA)"


def rasterize(means: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, height: int, width: int,
              blend: str = "sum", background: Tensor | None = None) -> Tensor:
    """Render (3, H, W). means (N,2) px, conics (N,3), colors (N,3), opacities (N,); background (3,) alpha only."""
    out = means.new_zeros(height * width, 3)
    if blend == "sum":
        for pix, _, v, gid in _footprint_chunks(means, conics, opacities, height, width):
            out.index_add_(0, pix, torch.clamp(v, max=1.0)[:, None] * colors[gid])
    elif blend == "alpha":
        out = _alpha_composite(means, conics, colors, opacities, height, width, background, out)
    else:
        raise ValueError(f"blend must be 'sum' or 'alpha', got {blend!r}")
    return out.T.reshape(3, height, width)


# ------------------------------------------------------------------ footprints
def footprint_boxes(means: Tensor, conics: Tensor, opacities: Tensor, height: int, width: int) -> Tensor:
    """(N, 4) int64 pixel boxes (x0, y0, x1, y1), inclusive, clipped to the image, that contain every
    pixel centre where o exp(-sigma) >= 1/255. Empty boxes have x1 < x0 or y1 < y0.

    The ellipse d^T Q d <= 2 ln(255 o) has half-widths sqrt(2 ln(255 o) Sigma_xx) and
    sqrt(2 ln(255 o) Sigma_yy), with Sigma = Q^-1. Computed in float64 and padded by one pixel,
    so float32 rounding can never cut a contributing pixel off; the exact test happens per pixel.
    """
    q = conics.detach().double()
    a, b, c = q[:, 0], q[:, 1], q[:, 2]
    det = (a * c - b * b).clamp(min=1e-300)
    level = 2 * torch.log(opacities.detach().double() * 255.0)
    visible = level >= 0
    level = level.clamp(min=0)
    rx = torch.sqrt(level * c / det) + 1
    ry = torch.sqrt(level * a / det) + 1
    mx, my = means.detach().double().unbind(-1)
    # pixel j's centre is j + 0.5: the centres inside [m - r, m + r] are j in [ceil(m - r - .5), floor(m + r - .5)]
    x0 = torch.ceil(mx - rx - 0.5).clamp(min=0, max=width)
    x1 = torch.floor(mx + rx - 0.5).clamp(min=-1, max=width - 1)
    y0 = torch.ceil(my - ry - 0.5).clamp(min=0, max=height)
    y1 = torch.floor(my + ry - 0.5).clamp(min=-1, max=height - 1)
    boxes = torch.stack([x0, y0, x1, y1], -1)
    boxes = torch.nan_to_num(boxes, nan=-1.0)  # degenerate input: treat as empty, never crash
    boxes[~visible] = torch.tensor([0.0, 0.0, -1.0, -1.0], dtype=boxes.dtype, device=boxes.device)
    return boxes.long()


def _footprint_chunks(means, conics, opacities, height, width):
    """Yield (pixel index, Gaussian index within chunk, value v, Gaussian index) for every
    pixel-Gaussian pair that passes the cutoff, a bounded chunk at a time. v is differentiable."""
    boxes = footprint_boxes(means, conics, opacities, height, width)
    box_w = boxes[:, 2] - boxes[:, 0] + 1
    box_h = boxes[:, 3] - boxes[:, 1] + 1
    nonempty = (box_w > 0) & (box_h > 0)
    if not bool(nonempty.any()):
        return
    bucket_w = _next_pow2(box_w.clamp(min=1))
    bucket_h = _next_pow2(box_h.clamp(min=1))
    keys = torch.where(nonempty, bucket_h * (1 << 20) + bucket_w, torch.full_like(bucket_w, -1))
    for key in torch.unique(keys).tolist():
        if key < 0:
            continue
        bh, bw = key >> 20, key & ((1 << 20) - 1)
        members = torch.nonzero(keys == key).squeeze(1)
        per_chunk = max(1, CHUNK_EVALUATIONS // (bh * bw))
        for start in range(0, members.numel(), per_chunk):
            gid = members[start:start + per_chunk]
            yield _evaluate_boxes(gid, boxes[gid], bh, bw, means, conics, opacities, width)


def _evaluate_boxes(gid, boxes, bh, bw, means, conics, opacities, width):
    # Evaluate on the whole (n, bh, bw) bucket grid by broadcasting (cheap), then compact to the
    # pairs inside the box and above the cutoff (so the scatter only touches real contributions).
    device, dtype = means.device, means.dtype
    px = boxes[:, 0, None, None] + torch.arange(bw, device=device)[None, None, :]   # (n, 1, bw)
    py = boxes[:, 1, None, None] + torch.arange(bh, device=device)[None, :, None]   # (n, bh, 1)
    dx = (px.to(dtype) + 0.5) - means[gid, 0, None, None]
    dy = (py.to(dtype) + 0.5) - means[gid, 1, None, None]
    q = conics[gid][:, :, None, None]
    sigma = 0.5 * (q[:, 0] * dx * dx + q[:, 2] * dy * dy) + q[:, 1] * dx * dy
    v = opacities[gid, None, None] * torch.exp(-sigma)                                 # (n, bh, bw)
    inside = (px <= boxes[:, 2, None, None]) & (py <= boxes[:, 3, None, None])
    keep = inside & (v >= CUTOFF)
    g_local = torch.arange(len(gid), device=device)[:, None, None].expand_as(keep)[keep]
    pix = (py * width + px).expand_as(keep)[keep]
    return pix, g_local, v[keep], gid[g_local]


def _next_pow2(x: Tensor) -> Tensor:
    return torch.pow(2, torch.ceil(torch.log2(x.double()))).long()


# --------------------------------------------------------------------- alpha
def _alpha_composite(means, conics, colors, opacities, height, width, background, out):
    parts = list(_footprint_chunks(means, conics, opacities, height, width))
    t_final_log = torch.zeros(height * width, dtype=torch.float64, device=means.device)
    if parts:
        pix = torch.cat([p[0] for p in parts])
        v = torch.cat([p[2] for p in parts])
        gid = torch.cat([p[3] for p in parts])
        # Sort by pixel, then by Gaussian index (front to back).
        order = torch.argsort(pix * max(1, means.shape[0]) + gid)
        pix, v, gid = pix[order], v[order], gid[order]
        alpha = torch.clamp(v, max=ALPHA_MAX)
        log_keep = torch.log1p(-alpha.double())
        log_t_before = _segmented_exclusive_cumsum(log_keep, pix)
        log_t_after = log_t_before + log_keep
        included = log_t_after > math.log(T_MIN)
        weight = (alpha * torch.exp(log_t_before).to(alpha.dtype))[included]
        out.index_add_(0, pix[included], weight[:, None] * colors[gid[included]])
        t_final_log = t_final_log.index_add(0, pix[included], log_keep[included])
    if background is not None:
        out = out + torch.exp(t_final_log).to(out.dtype)[:, None] * background.to(out)[None, :]
    return out


def _segmented_exclusive_cumsum(values: Tensor, segment: Tensor) -> Tensor:
    """Exclusive cumulative sum of ``values`` restarting wherever the (sorted) ``segment`` id changes."""
    inclusive = torch.cumsum(values, 0)
    exclusive = inclusive - values
    starts = torch.ones_like(segment, dtype=torch.bool)
    starts[1:] = segment[1:] != segment[:-1]
    start_index = torch.cummax(torch.where(starts, torch.arange(len(segment), device=segment.device), 0), 0).values
    return exclusive - exclusive[start_index]
