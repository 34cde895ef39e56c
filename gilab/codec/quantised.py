"""The quantised Gaussians: the integers and tables a bitstream stores, and the Gaussians they decode to.

Every field is exact (integers, and float32 tables whose values the file stores bit for bit), so
``decode(encode(q)) == q`` is an equality, not an approximation (tests/test_codec.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from ..gaussians import Gaussians2D
from .quantisers import UniformQuantiser, position_quantiser
from .rvq import codeword_sum


@dataclass(eq=False)
class QuantisedGaussians:
    """N Gaussians as level indices, in a canonical order (raster order of their position cells).

    Attributes:
        size: (height, width) of the canvas, pixels.
        position_bits: cells per axis are 2**position_bits (x over the width, y over the height).
        positions: (N, 2) int64 cell indices (x, y).
        cholesky_bits: levels per Cholesky factor are 2**cholesky_bits.
        cholesky_low, cholesky_high: (3,) float32 first and last level of (l1, l2, l3), pixels.
        cholesky: (N, 3) int64 level indices.
        codebooks: (S, K, 3) float32 colour codebooks (float16-representable), S stages of K codewords.
        colours: (N, S) int64 codeword indices, one per stage.
    """

    size: tuple[int, int]
    position_bits: int
    positions: Tensor
    cholesky_bits: int
    cholesky_low: Tensor
    cholesky_high: Tensor
    cholesky: Tensor
    codebooks: Tensor
    colours: Tensor

    def __len__(self) -> int:
        return self.positions.shape[0]

    @property
    def stages(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    def cholesky_quantiser(self) -> UniformQuantiser:
        return UniformQuantiser(self.cholesky_low, self.cholesky_high, self.cholesky_bits)

    def to_gaussians(self) -> Gaussians2D:
        """The Gaussians these indices stand for: float32, Cholesky parametrisation, opacity 1, ``size`` set."""
        height, width = self.size
        means = position_quantiser(height, width, self.position_bits).values(self.positions)
        cholesky = self.cholesky_quantiser().values(self.cholesky)
        colors = codeword_sum(self.colours, self.codebooks)
        return Gaussians2D.from_cholesky(means, cholesky, colors, size=(height, width))

    def cell_index(self) -> Tensor:
        """(N,) int64 raster index of each position cell: y * 2**position_bits + x."""
        return self.positions[:, 1] * 2 ** self.position_bits + self.positions[:, 0]

    def canonical(self) -> QuantisedGaussians:
        """The same set sorted by cell index (ties by the other indices). Sum blending does not depend on the
        order of the Gaussians, so the bitstream may choose it: sorted positions cost far fewer bits (their gaps)."""
        keys = [c.numpy() for c in torch.cat([self.colours, self.cholesky], 1).flip(1).unbind(1)]
        order = torch.from_numpy(np.lexsort([*keys, self.cell_index().numpy()]))
        return QuantisedGaussians(self.size, self.position_bits, self.positions[order], self.cholesky_bits,
                                  self.cholesky_low, self.cholesky_high, self.cholesky[order], self.codebooks,
                                  self.colours[order])

    def equals(self, other: QuantisedGaussians) -> bool:
        """Every field identical (tensors element for element)."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            same = (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)) if isinstance(a, Tensor) \
                else a == b
            if not same:
                return False
        return True
