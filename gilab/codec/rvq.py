"""Residual vector quantisation (RVQ) of the colours, as GaussianImage does (it uses 2 stages of 8 codewords).

Stage 1 picks the nearest of K codewords to each colour; stage 2 the nearest of another K to what is left, and so
on: S stages of K codewords describe K**S colours with S log2(K) bits per Gaussian.

    codebooks = fit_codebooks(colors, stages=2, size=8)   # (S, K, 3) float32, float16-representable
    idx = nearest_codewords(colors, codebooks)             # (N, S) int64
    decoded = codeword_sum(idx, codebooks)                 # (N, 3)

The codebooks come from k-means, stage by stage, with scipy.cluster.vq.kmeans2 (k-means++ seeding): scipy is
already a gilab dependency, its k-means is deterministic for a given seed, and an offline per-image clustering of a
few thousand 3-vectors needs nothing more. vector-quantize-pytorch would add a package (and einops) for codebooks
trained by EMA inside a network, which a codec for one image at a time does not need: here the codebooks are
refined by the render loss itself during quantisation-aware fine-tuning (gilab.codec.finetune).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor


def fit_codebooks(colors: Tensor, stages: int, size: int, seed: int = 0) -> Tensor:
    """(S, K, 3) float32 codebooks for ``colors`` (N, 3): k-means on the colours, then on the residuals.

    Values are rounded to float16, the precision the bitstream stores them in. With fewer distinct colours
    than ``size``, the spare codewords repeat existing ones (a stage never has empty slots).
    """
    from scipy.cluster.vq import kmeans2

    residual = colors.detach().double().cpu().numpy()
    books = []
    for stage in range(stages):
        k = min(size, len(np.unique(residual, axis=0)))
        with warnings.catch_warnings():  # "one of the clusters is empty": harmless, the codeword is kept
            warnings.simplefilter("ignore")
            centroids, _ = kmeans2(residual, k, minit="++", seed=seed + stage)
        centroids = np.concatenate([centroids, np.repeat(centroids[:1], size - k, axis=0)])
        book = torch.from_numpy(centroids).half().float()
        books.append(book)
        residual = residual - book.double().numpy()[_nearest(torch.from_numpy(residual).float(), book).numpy()]
    return torch.stack(books)


def _nearest(x: Tensor, book: Tensor) -> Tensor:
    """(N,) int64 index of the codeword in ``book`` (K, 3) nearest to each row of ``x`` (N, 3)."""
    return torch.cdist(x, book).argmin(-1)


def nearest_codewords(colors: Tensor, codebooks: Tensor) -> Tensor:
    """(N, S) int64: greedy RVQ indices of ``colors`` (N, 3) in ``codebooks`` (S, K, 3), stage by stage."""
    residual = colors.detach().float()
    picks = []
    for book in codebooks.detach().float():
        idx = _nearest(residual, book)
        picks.append(idx)
        residual = residual - book[idx]
    return torch.stack(picks, -1) if picks else colors.new_zeros(len(colors), 0, dtype=torch.long)


def codeword_sum(indices: Tensor, codebooks: Tensor) -> Tensor:
    """(N, 3) decoded colours: the sum over stages of the chosen codewords; differentiable in ``codebooks``."""
    stages = torch.arange(codebooks.shape[0], device=indices.device)
    return codebooks[stages, indices].sum(1)
