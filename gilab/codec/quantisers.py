"""Scalar quantisers for positions and Cholesky factors, with a straight-through estimator for training.

A :class:`UniformQuantiser` puts ``2**bits`` levels evenly over ``[low, high]`` (one range per column):

    q = UniformQuantiser.over(cholesky, bits=6)   # the range of each column of an (N, 3) tensor
    idx = q.indices(cholesky)                      # (N, 3) int64 in [0, 63]
    values = q.values(idx)                         # (N, 3) the levels, same units as the input
    trained = q(cholesky)                          # values in the forward pass, identity gradient

Positions use a fixed grid over the canvas (:func:`position_quantiser`), so its range costs no bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: The thinnest a quantised Cholesky diagonal (l1, l3) may be, pixels: a zero would make an infinite conic.
MIN_STD = 0.05


def straight_through(x: Tensor, quantised: Tensor) -> Tensor:
    """``quantised`` in the forward pass, ``x``'s gradient in the backward pass (Bengio et al.'s estimator):
    rounding has a zero gradient almost everywhere, so training through it needs this stand-in."""
    return x + (quantised - x).detach()


@dataclass
class UniformQuantiser:
    """``2**bits`` evenly spaced levels per column: level k of column j is ``low[j] + k * step[j]``.

    ``low`` and ``high`` are (C,) float32 tensors (the first and last level); values outside are clamped.
    """

    low: Tensor
    high: Tensor
    bits: int

    @classmethod
    def over(cls, x: Tensor, bits: int, floor: Tensor | None = None) -> UniformQuantiser:
        """The quantiser spanning each column of ``x`` (N, C), its lowest level at least ``floor`` (C,)."""
        x = x.detach().float()
        low, high = x.min(0).values, x.max(0).values
        if floor is not None:
            low, high = torch.maximum(low, floor), torch.maximum(high, floor)
        return cls(low.contiguous(), high.contiguous(), bits)

    @property
    def levels(self) -> int:
        return 2 ** self.bits

    @property
    def step(self) -> Tensor:
        """(C,) the distance between neighbouring levels (0 for a column whose values were all equal)."""
        return (self.high - self.low) / (self.levels - 1)

    def indices(self, x: Tensor) -> Tensor:
        """(N, C) int64 level indices of ``x`` (N, C): the nearest level, clamped to [0, 2**bits - 1]."""
        low, step = self.low.to(x.device), self.step.to(x.device)
        step = torch.where(step > 0, step, torch.ones_like(step))
        k = torch.round((x.detach().float() - low) / step)
        return k.clamp(0, self.levels - 1).long()

    def values(self, indices: Tensor) -> Tensor:
        """(N, C) float32 levels of ``indices`` (N, C); the decoder calls exactly this, so results are bit-equal."""
        return self.low.to(indices.device) + indices.float() * self.step.to(indices.device)

    def __call__(self, x: Tensor) -> Tensor:
        """Quantise ``x`` (N, C) in the forward pass and pass gradients straight through."""
        return straight_through(x, self.values(self.indices(x)).to(x.dtype))


def position_quantiser(height: int, width: int, bits: int) -> UniformQuantiser:
    """A grid of ``2**bits`` cells per axis over the canvas, means sampled at cell centres: x in
    ((k + 1/2) W / 2**bits), y likewise with H. Every mean inside the image has a cell, and the range is
    implied by the image size, so the bitstream stores nothing for it."""
    cell = torch.tensor([width, height], dtype=torch.float32) / 2 ** bits
    return UniformQuantiser(cell / 2, torch.tensor([width, height], dtype=torch.float32) - cell / 2, bits)


def canonical_cholesky(cholesky: Tensor) -> Tensor:
    """(N, 3) Cholesky factors with l1 >= 0 and l3 >= 0, the same covariances.

    L = [[l1, 0], [l2, l3]] and L diag(+-1, +-1) give the same L L^T, so signs carry no information: flipping
    (l1, l2) together and l3 alone makes the quantiser's range (and so its step) smaller for free.
    """
    l1, l2, l3 = cholesky.unbind(-1)
    sign = torch.where(l1 < 0, -torch.ones_like(l1), torch.ones_like(l1))
    return torch.stack([l1 * sign, l2 * sign, l3.abs()], -1)


def cholesky_quantiser(cholesky: Tensor, bits: int) -> UniformQuantiser:
    """The quantiser of canonical Cholesky factors (N, 3): each column's range, the diagonal's lowest level
    at least :data:`MIN_STD` pixels so that no quantised Gaussian is degenerate."""
    floor = torch.tensor([MIN_STD, -float("inf"), MIN_STD])
    return UniformQuantiser.over(canonical_cholesky(cholesky), bits, floor=floor)
